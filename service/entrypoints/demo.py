"""``nextbest demo``: a whole bank on the embedded defaults, from nothing to decisions.

Generates a synthetic bank ending now, records its consents, streams its events through the
local event log into the Feast online store, trains and registers the mortgage model, serves
the API, and prints a few example decisions made over HTTP. A second run in the same folder
reuses the bank and the model and goes straight to serving.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
import uvicorn

from feature_repo.definitions import VIEW_OF
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.entrypoints.auth import DEV_KEYS_FILE, plain_key
from service.usecases import pipeline
from training.bank.in_memory import Bank, generate
from training.bank.scenario import mortgage_suitable
from training.bank.spec import BankSpec, busy_housing_market

READY_TIMEOUT_S = 30.0
#: A few broken events, to show the dead-letter path.
MALFORMED_FRACTION = 0.0002
#: Snapshots every three days: a small bank needs the rows (its test window has no oracle).
DEMO_STEP_DAYS = 3
#: The demo's 120 days cannot warm the 90-day windows before the snapshots a time split with a
#: 30-day label horizon needs; it trains on what it has (``nextbest train`` waits 90 days).
DEMO_WARM_UP_DAYS = 14


def _say(started: float, message: str) -> None:
    click.echo(f"[{time.monotonic() - started:6.1f}s] {message}")


def _wipe(home: Path) -> None:
    """Remove what an interrupted demo set-up left in ``home`` (only ever the demo's own home)."""
    for entry in home.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _set_up(container: Container, spec: BankSpec, started: float) -> None:
    bank_dir = container.settings.home / "bank"
    bank = generate(spec)
    summary = bank.write(bank_dir)
    _say(
        started,
        f"generated {summary['customers']} customers and {summary['events']} events over "
        f"{spec.days} days ({summary['applications_by_need']['mortgage']} mortgage applications)",
    )
    consents, events = pipeline.load_bank(container, bank)
    _say(started, f"recorded {consents} consent entries; wrote {events} events to the local log")
    stats = pipeline.stream_until_idle(container, idle_s=1.0)
    _say(
        started,
        f"stream worker: {stats.events} events -> {stats.feature_rows} feature rows "
        f"({stats.as_dict()['events_per_second']:.0f} events/s), "
        f"{stats.dead_letters} malformed events to the dead-letter topic",
    )
    report = pipeline.train_from_bank(
        container, bank_dir, step_days=DEMO_STEP_DAYS, warm_up_days=DEMO_WARM_UP_DAYS
    )
    trained = ", ".join(
        f"{m.need} {report.evaluations[m.need]['roc_auc']:.3f}" for m in report.models
    )
    _say(
        started,
        f"trained {len(report.models)} need models on {report.rows} point-in-time rows "
        f"(test ROC AUC: {trained})",
    )
    for need, why in sorted(report.below_floor.items()):
        _say(started, f"not serving the {need} model, {why}: its actions are withheld")


def _examples(container: Container) -> list[tuple[str, str]]:
    """A consenting customer browsing property this week, one who never answered about consent,
    and one who withdrew marketing consent on the app."""
    bank = Bank.read(container.settings.home / "bank")
    consents = bank.consents
    consenting = bank.granted("marketing", "mobile_app") & bank.granted("profiling", "any")
    # The strongest mortgage prospect among customers who agreed to be profiled and contacted
    # and whom the gate's mortgage rules allow (the others show suppressions of their own).
    people = bank.customers
    suitable = people[mortgage_suitable(people)]
    ranked = sorted(consenting & set(suitable["customer_id"])) or sorted(consenting)
    model = container.models.get("mortgage")
    if model is not None:
        rows = container.feature_store.get_online_features(
            features=[f"{VIEW_OF[name]}:{name}" for name in model.features],
            entity_rows=[{"customer_id": c} for c in ranked],
        ).to_df()
        scores = np.asarray(model.booster.predict(rows[list(model.features)].astype(float)))
        ranked = [ranked[i] for i in np.argsort(-scores, kind="stable")]
    examples = [(ranked[0], "the strongest mortgage prospect among consenting, suitable customers")]
    never = sorted(set(bank.customers["customer_id"]) - set(consents["customer_id"]))
    examples.append((never[0], "never answered the consent request"))
    withdrawals = consents[
        ~consents["granted"]
        & (consents["purpose"] == "marketing")
        & (consents["channel"] == "mobile_app")
    ]
    withdrew = sorted(set(withdrawals["customer_id"]) - bank.granted("marketing", "mobile_app"))
    if withdrew:
        examples.append((withdrew[0], "withdrew marketing consent on the app"))
    return examples


def _described(action: dict[str, Any]) -> str:
    """One delivered action in words: a scored one with its reasons, a service one by kind."""
    if action["score"] is None:
        return f"{action['action_id']} ({action['kind']} action)"
    reasons = ", ".join(f"{r['feature']}={r['value']:g}" for r in action["reasons"])
    return f"{action['action_id']} (score {action['score']:.2f}; because {reasons})"


def run_demo(
    container: Container,
    customers: int,
    days: int,
    seed: int,
    port: int | None,
    duration: float | None,
    started: float,
) -> None:
    settings = container.settings
    _say(started, f"state folder {settings.home}")
    if not _bank_ready(container, _BankSize(seed=seed, customers=customers, days=days), started):
        return
    # The worker runs while the demo serves: events sent to the API are folded in, and the
    # timers keep every row exact as the days pass (a stopped stream makes features stale).
    worker = container.worker()
    streaming = threading.Thread(target=worker.run, name="stream-worker", daemon=True)
    streaming.start()
    server, thread, base = _serve(container, port or settings.api_port)
    _say(started, f"API ready at {base}  (OpenAPI: {base}/docs); the stream worker is running")
    assert container.keyring  # generates the development keys on first use
    keys = settings.api_keys_file or settings.home / DEV_KEYS_FILE
    _say(started, f"API keys per role in {keys}; decisions below are the compliance view")
    try:
        compliance = {"X-API-Key": plain_key(keys, "compliance")}
        with httpx.Client(base_url=base, timeout=10.0, headers=compliance) as client:
            _show_examples(container, client)
            # The writers publish on their own every few seconds; the demo does not wait.
            checkpointer = container.audit.checkpointer
            if checkpointer is not None:
                checkpointer.publish()
            verified = client.get("/v1/audit/verify").json()
        _say(
            started,
            f"audit log: {verified['records']} records, valid={verified['ok']}, "
            f"{verified['covered']} covered by signed checkpoints in {settings.checkpoint_dir}",
        )
        click.echo(
            f"try: curl -s -X POST {base}/v1/decisions -H 'content-type: application/json' "
            f"-H 'X-API-Key: {plain_key(keys, 'channel')}' "
            '-d \'{"customer_id": "C0000001", "channel": "mobile_app"}\''
        )
        if duration is None:
            click.echo("serving; press Ctrl-C to stop")
        stop_at = None if duration is None else time.monotonic() + duration
        while thread.is_alive() and (stop_at is None or time.monotonic() < stop_at):
            time.sleep(0.2)
    except KeyboardInterrupt:
        click.echo("")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        worker.stopping.set()
        streaming.join(timeout=30)
        worker.close()
        _say(started, "stopped")


@dataclass(frozen=True)
class _BankSize:
    """The demo bank's parameters, as demo.json records them."""

    seed: int
    customers: int
    days: int


def _bank_ready(container: Container, size: _BankSize, started: float) -> bool:
    """Reuse the bank an earlier demo set up in the state folder, or set one up; False when
    the set-up was interrupted (the next run starts over)."""
    home = container.settings.home
    marker = home / "demo.json"
    partial = home / "demo.partial"
    if marker.exists():
        _say(started, "reusing the bank and model set up by an earlier demo in this folder")
        return True
    if partial.exists():
        _say(started, "an earlier demo set-up was interrupted; starting over")
        _wipe(home)
    elif any(p.name != DEV_KEYS_FILE for p in home.iterdir()):
        raise click.ClickException(
            f"{home} holds state that the demo did not create; "
            "run the demo in another folder or set NEXTBEST_HOME"
        )
    partial.touch()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        spec = BankSpec(
            seed=size.seed,
            customers=size.customers,
            days=size.days,
            end=end,
            situations=busy_housing_market(),
            malformed_fraction=MALFORMED_FRACTION,
        )
        _set_up(container, spec, started)
    except KeyboardInterrupt:
        _say(started, "interrupted during set-up; the next demo run starts over")
        return False
    marker.write_text(json.dumps({**asdict(size), "end": end.isoformat()}))
    partial.unlink()
    return True


def _serve(container: Container, port: int) -> tuple[uvicorn.Server, threading.Thread, str]:
    """The API in a daemon thread, once it accepts connections."""
    settings = container.settings
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container), host=settings.api_host, port=port, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    base = f"http://{settings.api_host}:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise click.ClickException(f"the API did not start on {base} (is the port in use?)")
        time.sleep(0.05)
    return server, thread, base


def _show_examples(container: Container, client: httpx.Client) -> None:
    """Each example customer's decision as the compliance role sees it."""
    for customer_id, why in _examples(container):
        response = client.post(
            "/v1/decisions", json={"customer_id": customer_id, "channel": "mobile_app"}
        ).json()
        delivered = ", ".join(_described(a) for a in response["actions"]) or "nothing"
        why_not = "; ".join(
            f"{s['action_id']}: {', '.join(s['reason_codes'])}"
            for s in response["suppressed"] or ()
        )
        click.echo(
            f"  {customer_id} ({why}): delivered {delivered}"
            + (f" | suppressed {why_not}" if why_not else "")
        )
        click.echo(f"      decision {response['decision_id']} audit #{response['audit_seq']}")
