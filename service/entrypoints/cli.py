"""The ``nextbest`` command line. Every subcommand reads settings once and wires a Container."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from service.settings import Settings, SettingsError, load_settings


def _quiet_libraries() -> None:
    """Keep third-party chatter out of the output. Feast resets the DeprecationWarning filter
    when it is imported, so this runs again once the container (and with it Feast) is loaded."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("feast", "mlflow", "alembic", "urllib3", "kafka", "dask", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow announces every registration and warns that a pyfunc is pickled (ours is our own
    # class, loaded by our own code); neither helps someone reading the command's output.
    for name in ("mlflow.tracking._model_registry", "mlflow.pyfunc", "mlflow.models.model"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\.")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as error:
        click.echo(f"nextbest: {error}", err=True)
        sys.exit(2)


def _container():  # type: ignore[no-untyped-def]
    from service.bootstrap import Container

    _quiet_libraries()
    container = Container(_settings())
    # Its database connections are given back when the command ends, not left to the collector.
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(container.close)
    return container


class _Validated(click.ParamType):
    """A value from outside checked by the same pydantic type as the API checks it with."""

    def __init__(self, name: str, annotation: Any) -> None:
        from pydantic import TypeAdapter

        self.name = name
        self._adapter = TypeAdapter(annotation)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from pydantic import ValidationError

        try:
            return self._adapter.validate_python(value)
        except ValidationError as error:
            self.fail(f"not a valid {self.name}: {_problems(error)}", param, ctx)


def _problems(error: Any) -> str:
    """A pydantic ValidationError in one line, as the API's 422 details name them."""
    return "; ".join(
        ": ".join(filter(None, (".".join(str(p) for p in e["loc"]), e["msg"])))
        for e in error.errors(include_url=False)
    )


def _customer_id() -> _Validated:
    from feature_repo.events import CustomerId

    return _Validated("customer id", CustomerId)


def _need() -> click.Choice[str]:
    from feature_repo.events import NEEDS

    return click.Choice(NEEDS)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nextbest")
def main() -> None:
    """NextBest: proactive next-best-action service for banks.

    Configuration comes from NEXTBEST_* environment variables; with none set, everything runs on
    the embedded defaults in ./.nextbest.
    """
    settings = _settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _quiet_libraries()


@main.command()
@click.option("--seed", default=7, show_default=True, help="Random seed; same seed, same bank.")
@click.option("--customers", default=1_000, show_default=True, type=click.IntRange(1, 100_000_000))
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Last moment of the history (UTC); default: today at 00:00 UTC, so the history lies "
    "within the time bounds the stream takes (NEXTBEST_MAX_EVENT_AGE_DAYS).",
)
@click.option(
    "--malformed-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0.0, 0.5, max_open=True),
    help="Share of extra, deliberately broken events (for the dead-letter path).",
)
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes building customer chunks in parallel (the output does not depend on it).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def generate(
    seed: int,
    customers: int,
    days: int,
    end: datetime | None,
    malformed_fraction: float,
    workers: int,
    out: Path,
) -> None:
    """Write a synthetic bank as Parquet in OUT: profiles, consents, events, outcomes and the
    ground truth, with a summary (base rates, oracle AUC per need) in OUT/bank.json."""
    from training.bank import BankSpec, write_bank

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    spec = BankSpec(
        seed=seed,
        customers=customers,
        days=days,
        end=end.replace(tzinfo=UTC) if end else today,
        malformed_fraction=malformed_fraction,
    )
    began = time.monotonic()
    summary = write_bank(spec, out, workers=workers)
    summary["seconds"] = round(time.monotonic() - began, 2)
    click.echo(json.dumps(summary, indent=2))


@main.command()
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="A folder written by `nextbest generate`.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Events per second (default: as fast as possible).",
)
@click.option(
    "--speedup",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Replay at this multiple of event time (60: an hour of events per minute).",
)
@click.option(
    "--skip-events",
    is_flag=True,
    help="Consents and customer extract only (for a bank whose history is backfilled).",
)
def load(bank_dir: Path, rate: float | None, speedup: float | None, skip_events: bool) -> None:
    """Record a bank's consents in the registry, write its customer extract to the profile
    features, and publish its events in event-time order to the event transport (malformed
    ones included)."""
    import pandas as pd

    from service.usecases import pipeline
    from training.bank import BankSpec
    from training.bank.replay import paced
    from training.bank.store import stream_folder

    if rate is not None and speedup is not None:
        raise click.UsageError("choose --rate or --speedup, not both")
    container = _container()
    consents = pipeline.record_consents(container, pd.read_parquet(bank_dir / "consents.parquet"))
    spec = BankSpec.from_dict(json.loads((bank_dir / "bank.json").read_text())["spec"])
    profiles = pipeline.write_profiles(
        container, pd.read_parquet(bank_dir / "customers.parquet"), spec.start
    )
    events = 0
    if not skip_events:
        timed = pipeline.without_erased_records(container, stream_folder(bank_dir))
        events = pipeline.publish(container, paced(timed, rate, speedup))
    click.echo(
        f"recorded {consents} consent entries and {profiles} customer profiles; "
        f"published {events} events"
    )


@main.command()
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Stop after this many seconds without new events (default: run until stopped).",
)
@click.option(
    "--from-offset",
    type=click.IntRange(min=0),
    default=None,
    help="Replay: start every partition at this offset (0: the beginning).",
)
@click.option(
    "--from-time",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Replay: start at the first record at or after this time (UTC).",
)
@click.option(
    "--reset-state",
    is_flag=True,
    help="Forget the windows' state first (rebuild after a change of definitions).",
)
@click.option(
    "--alerts/--no-alerts",
    default=True,
    show_default=True,
    help="Rescore changed customers and raise RM alerts (turn off to replay history).",
)
def stream(
    until_idle: float | None,
    from_offset: int | None,
    from_time: datetime | None,
    reset_state: bool,
    alerts: bool,
) -> None:
    """Run the stream worker: events in, online and offline features out.

    SIGTERM or Ctrl-C finishes the batch, commits and leaves the consumer group. With
    NEXTBEST_WORKER_METRICS_PORT set, Prometheus metrics are served on that port.
    """
    if from_offset is not None and from_time is not None:
        raise click.UsageError("choose --from-offset or --from-time, not both")
    # Handlers first: a SIGTERM while the consumer is still connecting (a broker restarting,
    # a slow start) must stop the worker cleanly, not kill it mid-way.
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    container = _container()
    # The alerter loads the models on first use, in its own thread: the worker starts at once.
    alerter = container.alerter if alerts else None
    worker = container.worker(alerter)
    worker.stopping = stopping
    if reset_state:
        worker.states.clear()
    if from_offset is not None or from_time is not None:
        stamp = None if from_time is None else int(from_time.replace(tzinfo=UTC).timestamp() * 1000)
        worker.consumer.replay_from(from_offset, stamp)
    port = container.settings.worker_metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=container.settings.api_host)
    if alerter is not None:
        alerter.start()
    try:
        stats = worker.run(idle_exit_s=until_idle)
    finally:
        if alerter is not None:
            alerter.stop()  # what the last batches touched is still rescored
        worker.close()
    report: dict[str, Any] = stats.as_dict()
    if alerter is not None:
        report["alerts"] = alerter.stats.as_dict()
    click.echo(json.dumps(report))


_bank_option = click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Bank folder with the outcomes (default: $NEXTBEST_HOME/bank).",
)


def _needs(values: tuple[str, ...]) -> tuple[str, ...]:
    from feature_repo.events import NEEDS

    return tuple(values) or NEEDS


@main.command()
@click.option(
    "--need",
    "needs",
    type=_need(),
    multiple=True,
    help="A need to train (repeatable; default: all seven). With --table: exactly one.",
)
@_bank_option
@click.option("--horizon-days", default=30, show_default=True, type=click.IntRange(1, 365))
@click.option("--step-days", default=7, show_default=True, type=click.IntRange(1, 90))
@click.option("--alias", default=None, help="Alias to set (default: NEXTBEST_MODEL_ALIAS).")
@click.option(
    "--table",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Train from your own customer table (CSV or Parquet) instead of the feature store.",
)
@click.option("--label", default=None, help="With --table: the label column (yes/no, 1/0, ...).")
@click.option("--drop", default="", help="With --table: comma-separated columns to leave out.")
@click.option(
    "--dask-scheduler",
    default=None,
    help="Train on this Dask cluster (tcp://host:8786); 'local' starts one on this machine.",
)
def train(
    needs: tuple[str, ...],
    bank_dir: Path | None,
    horizon_days: int,
    step_days: int,
    alias: str | None,
    table: Path | None,
    label: str | None,
    drop: str,
    dask_scheduler: str | None,
) -> None:
    """Train need models and register them in MLflow.

    From the feature store: a Feast point-in-time training set of the bank's customers (those
    with profiling consent), one calibrated LightGBM model per need, evaluated on the latest
    window. With --table: one need from a customer table, with stratified 5-fold cross
    validation.
    """
    if table is not None:
        if len(needs) != 1 or not label:
            raise click.UsageError("--table needs exactly one --need and a --label")
        from training.table import train_table

        settings = _settings()
        _quiet_libraries()
        result = train_table(
            table,
            label,
            needs[0],
            [c.strip() for c in drop.split(",") if c.strip()],
            settings.tracking_uri,
            settings.artifact_root,
            alias=alias or settings.model_alias,
        )
        click.echo(json.dumps(dataclasses.asdict(result), indent=2))
        return
    from service.usecases import pipeline

    container = _container()
    client = None
    if dask_scheduler:
        from training.distributed import connect

        client = connect(None if dask_scheduler == "local" else dask_scheduler)
    try:
        report = pipeline.train_from_bank(
            container,
            bank_dir or container.settings.home / "bank",
            _needs(needs),
            horizon_days,
            step_days,
            alias,
            dask_client=client,
        )
    finally:
        if client is not None:
            client.close()
    click.echo(json.dumps(pipeline.report_dict(report), indent=2))


@main.command()
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Bank folder (default: $NEXTBEST_HOME/bank).",
)
@click.option("--step-days", default=1, show_default=True, type=click.IntRange(1, 90))
def backfill(bank_dir: Path | None, step_days: int) -> None:
    """Compute the offline feature history of a bank's event archive without the stream, so
    models can train on history that never went through it (run `load --skip-events` too)."""
    from service.usecases import pipeline

    container = _container()
    started = time.perf_counter()
    rows = pipeline.backfill(container, bank_dir or container.settings.home / "bank", step_days)
    click.echo(json.dumps({"rows": rows, "seconds": round(time.perf_counter() - started, 1)}))


@main.command()
@click.option(
    "--need", "needs", type=_need(), multiple=True, help="A need (repeatable; default: all seven)."
)
@_bank_option
@click.option(
    "--min-gain",
    default=0.002,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="ROC AUC a challenger must gain over the champion on the same holdout.",
)
@click.option(
    "--fairness-tolerance",
    default=0.05,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="How far a selection-rate ratio may fall below the champion's.",
)
def retrain(
    needs: tuple[str, ...], bank_dir: Path | None, min_gain: float, fairness_tolerance: float
) -> None:
    """Train challengers, compare them with the champions on the same recent holdout, promote
    the ones that are better by the margin and pass the fairness check; says why for each.
    Safe while the API serves: it follows the alias without a restart."""
    from service.usecases.retrain import retrain as run

    container = _container()
    verdicts = run(
        container,
        bank_dir or container.settings.home / "bank",
        _needs(needs),
        min_gain=min_gain,
        fairness_tolerance=fairness_tolerance,
    )
    click.echo(json.dumps([v.as_dict() for v in verdicts], indent=2))


@main.command()
@click.option("--need", type=_need(), required=True, help="The need whose champion moves back.")
@click.option("--to-version", default=None, help="Default: the previous champion.")
def rollback(need: str, to_version: str | None) -> None:
    """Point a need's champion alias back at the previous champion (or a given version)."""
    from service.usecases.retrain import rollback as run

    try:
        event = run(_container(), need, to_version)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(event))


@main.command()
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file: .parquet (default) or .csv.",
)
@click.option(
    "--as-of",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Score with the features as of this time (UTC); default now.",
)
def score(out: Path, as_of: datetime | None) -> None:
    """Score every customer with profiling consent (as of --as-of and now) whom the gate's
    customer rules allow, for every served need (outbound campaigns); says how many were left
    out and why, and logs the run in the audit log. Writes nothing if it cannot check them."""
    from consent.stores.audit import AuditWriteFailed
    from service.usecases.scoring import batch_score

    container = _container()
    at = as_of.replace(tzinfo=UTC) if as_of else datetime.now(UTC)
    started = time.perf_counter()
    try:
        summary = batch_score(container, out, at)
    except (ValueError, AuditWriteFailed) as error:
        raise click.ClickException(str(error)) from None
    finally:
        container.close()
    summary["seconds"] = round(time.perf_counter() - started, 2)
    click.echo(json.dumps(summary))


@main.command()
@click.option("--host", default=None, help="Default: NEXTBEST_API_HOST.")
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
@click.option(
    "--workers", default=None, type=click.IntRange(1, 64), help="Default: NEXTBEST_API_WORKERS."
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the HTTP API (one process, or a worker per core behind one port)."""
    settings = _settings()
    host = host or settings.api_host
    port = port or settings.api_port
    workers = workers or settings.api_workers
    if workers > 1:
        from service.entrypoints.serving import serve_workers

        _quiet_libraries()
        serve_workers(host, port, workers, settings.log_level)
        return

    import uvicorn

    from service.entrypoints.api import create_app

    container = _container()
    app = create_app(container)
    uvicorn.run(app, host=host, port=port, log_level=container.settings.log_level.lower())


@main.command()
@click.argument("customer_id")
@click.option(
    "--channel",
    default="mobile_app",
    show_default=True,
    help="mobile_app, web, email, sms, phone, rm or branch.",
)
def decide(customer_id: str, channel: str) -> None:
    """Decide for one customer and print the audit record."""
    from pydantic import ValidationError

    from service.entrypoints.api.schemas import DecisionRequest
    from service.errors import NextBestError
    from service.usecases.decisions import DecideForCustomer

    # The API's own request model: what it answers 422 to is refused here before anything runs.
    try:
        request = DecisionRequest.model_validate({"customer_id": customer_id, "channel": channel})
    except ValidationError as error:
        raise click.UsageError(f"invalid decision request: {_problems(error)}") from None
    container = _container()
    try:
        made = container.decisions.decide(
            DecideForCustomer(request.customer_id, request.channel, request.limit)
        )
    except NextBestError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from None
    click.echo(made.record.model_dump_json(indent=2))


@main.group()
def audit() -> None:
    """Check and export the hash-chained audit log."""


@audit.command("verify")
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A checkpoint kept outside (from `audit checkpoint`): also prove nothing up to it "
    "changed or was cut off.",
)
def audit_verify(checkpoint_file: Path | None) -> None:
    """Verify the whole chain; exit 1 and name the first bad record if it does not hold."""
    from consent.stores.audit import Checkpoint

    checkpoint = Checkpoint.from_json(checkpoint_file.read_text()) if checkpoint_file else None
    result = _container().audit.verify(checkpoint)
    click.echo(json.dumps(result.__dict__, default=str))
    sys.exit(0 if result.ok else 1)


_WHEN = click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"])


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit.command("export")
@click.option("--customer", type=_customer_id(), default=None, help="Only this customer's records.")
@click.option("--since", type=_WHEN, default=None, help="Recorded at or after (UTC if no zone).")
@click.option("--until", type=_WHEN, default=None, help="Recorded before (UTC if no zone).")
def audit_export(customer: str | None, since: datetime | None, until: datetime | None) -> None:
    """Write audit records as JSON lines to standard output: all, one customer's (found through
    their pseudonym key; none once erased), and/or a time range."""
    for entry in _container().audit.export(customer, _utc(since), _utc(until)):
        click.echo(json.dumps(entry, sort_keys=True, default=str))


@audit.command("checkpoint")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the checkpoint to this file (give it to an outside party to keep).",
)
def audit_checkpoint(out: Path | None) -> None:
    """Record the head of the chain now (sequence number and hash) and print it as JSON."""
    checkpoint = _container().audit.checkpoint()
    document = checkpoint.to_json()
    if out is not None:
        out.write_text(document + "\n")
    click.echo(document)


@main.group()
def alerts() -> None:
    """RM alerts: training labels from dispositions."""


@alerts.command("labels")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Parquet file: customer_id, need, event_timestamp, label, outcome, decision_id.",
)
def alerts_labels(out: Path) -> None:
    """Write the labels RMs' dispositions give (converted: 1, not interested: 0), with the
    alert's time as event timestamp for a point-in-time join."""
    import pandas as pd

    labels = _container().alert_store.labels()
    columns = ["customer_id", "need", "event_timestamp", "label", "outcome", "decision_id"]
    pd.DataFrame(labels, columns=columns).to_parquet(out, index=False)
    click.echo(json.dumps({"labels": len(labels), "out": str(out)}))


@main.group()
def policy() -> None:
    """Work with the compliance policy."""


@policy.command("simulate")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="The changed policy (YAML) to replay recorded decisions under.",
)
@click.option("--since", type=_WHEN, default=None, help="Decisions recorded at or after.")
@click.option("--until", type=_WHEN, default=None, help="Decisions recorded before.")
def policy_simulate(policy_file: Path, since: datetime | None, until: datetime | None) -> None:
    """Replay recorded decisions under a changed policy and report, by rule and by action, how
    many actions would be added or removed. Nothing is written."""
    from consent.rules.policy import Policy, PolicyError
    from consent.rules.simulate import replay

    try:
        candidate = Policy.load(policy_file)
    except PolicyError as error:
        raise click.ClickException(str(error)) from None
    container = _container()
    records = (entry["record"] for entry in container.audit.export(None, _utc(since), _utc(until)))
    report = replay(records, candidate, container.catalog)
    click.echo(
        json.dumps(
            {"current_policy_version": container.policy.version, **report.as_dict()}, indent=2
        )
    )


@main.command()
@click.argument("customer_id", type=_customer_id())
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase(customer_id: str, yes: bool) -> None:
    """Right to erasure: delete the customer's audit pseudonym key, consent and contact history,
    directory entry, alerts, online and offline features and dead letters, and enter them in
    the erasure register (no replay, load or backfill brings them back). The audit chain still
    verifies afterwards, holds the erasure (without the identity), and its records can no
    longer be tied to the customer."""
    import getpass
    from dataclasses import asdict

    from service.usecases.erasure import erase_customer

    if not yes:
        click.confirm(f"Erase customer {customer_id} everywhere? This cannot be undone", abort=True)
    erased = erase_customer(_container(), customer_id, f"cli:{getpass.getuser()}")
    click.echo(json.dumps({"erased": True, **asdict(erased)}))


@main.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds of serving (default: until Ctrl-C).",
)
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(1_000, 100_000))
@click.option("--days", default=120, show_default=True, type=click.IntRange(120, 365))
@click.option("--seed", default=7, show_default=True)
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
def demo(duration: float | None, customers: int, days: int, seed: int, port: int | None) -> None:
    """Set up a synthetic bank on the embedded defaults, train, serve and show decisions."""
    from service.entrypoints.demo import run_demo

    started = time.monotonic()
    run_demo(
        _container(),
        customers=customers,
        days=days,
        seed=seed,
        port=port,
        duration=duration,
        started=started,
    )
