"""``simulate``: the synthetic bank run forward in a closed loop (``usecases/simulation.py``)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import click

#: Settings a simulation takes from the environment; everything else is the embedded default
#: in its own folder, so a simulated bank never mixes with a real one's stores.
PASSED_ON = (
    "NEXTBEST_POLICY_FILE",
    "NEXTBEST_MODEL_MIN_ROC_AUC",
    "NEXTBEST_MODEL_MIN_TOP_DECILE_LIFT",
)
TARGETING = ("random", "propensity", "oracle")


@click.command()
@click.option("--days", type=click.IntRange(1, 365), default=10, show_default=True)
@click.option(
    "--policy",
    type=click.Choice(TARGETING),
    default="propensity",
    show_default=True,
    help="Whom to contact: at random within the gate, by propensity (today's arbitration), or "
    "by true uplift (the ceiling). Not the compliance policy: that is NEXTBEST_POLICY_FILE.",
)
@click.option("--customers", type=click.IntRange(100, 1_000_000), default=2_000, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--history-days", type=click.IntRange(120, 730), default=120, show_default=True)
@click.option(
    "--contacts-per-day",
    type=click.IntRange(1, None),
    default=None,
    help="Sales contacts a day, the same for every policy; default 1% of the customers.",
)
@click.option(
    "--retrain-every-days",
    type=click.IntRange(0, None),
    default=30,
    show_default=True,
    help="Retrain on what the loop logged every N days (0: never).",
)
@click.option(
    "--history",
    type=click.Choice(("seed", "stream")),
    default="seed",
    show_default=True,
    help="Load the history as an archive (backfill and a seeded stream) or publish it through "
    "the stream worker (slower; the same states).",
)
@click.option(
    "--redis-url",
    default=None,
    help="Keep the online features and the stream's state in this Redis (under a Feast project "
    "of the simulation's own, dropped at the end) instead of SQLite files: much faster at "
    "tens of thousands of customers.",
)
@click.option(
    "--stream-workers",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="Stream worker processes, one per partition of the simulation's event log, as a "
    "bank scales its stream out: one per core. The results are the same whatever the number.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The simulation's own folder (stores, models, report.json); default "
    ".nextbest-simulations/<seed>-<customers>-<policy>.",
)
def simulate(
    days: int,
    policy: str,
    customers: int,
    seed: int,
    history_days: int,
    contacts_per_day: int | None,
    retrain_every_days: int,
    history: str,
    redis_url: str | None,
    stream_workers: int,
    out: Path | None,
) -> None:
    """Run a synthetic bank forward day by day through the stream worker, the models, the
    gate and the decision service, its customers answering what they are sent. Prints each
    day's contacts, conversions, conversions the contacts caused (known only to the
    simulation), opt-outs and complaints; writes them to report.json in --out, with the lift
    report measured from the control groups beside the true lift (lift.json, lift.html)."""
    from service.adapters.lift_page import page
    from service.adapters.stream_stores import drop_redis_project
    from service.bootstrap import Container
    from service.settings import load_settings
    from service.usecases.simulation import Plan, Simulation
    from service.usecases.simulation_truth import coverage

    folder = out or Path(".nextbest-simulations") / f"{seed}-{customers}-{policy}"
    if folder.exists() and any(folder.iterdir()):
        raise click.UsageError(f"{folder} is not empty: a simulation starts from nothing")
    environ = {k: v for k, v in os.environ.items() if k in PASSED_ON}
    environ["NEXTBEST_HOME"] = str(folder / "home")
    environ["NEXTBEST_LOCAL_PARTITIONS"] = str(stream_workers)
    if redis_url:
        project = f"simulation_{seed}_{customers}_{policy}_{secrets.token_hex(4)}"
        environ |= {
            "NEXTBEST_ONLINE_STORE": "redis",
            "NEXTBEST_REDIS_URL": redis_url,
            "NEXTBEST_FEAST_PROJECT": project,
        }
    settings = load_settings(environ)
    plan = Plan(
        customers,
        days,
        history_days,
        seed,
        policy,
        contacts_per_day,
        history="seed" if history == "seed" else "stream",
        retrain_every_days=retrain_every_days or None,
    )
    container = Container(settings)
    try:
        simulation = Simulation(container, plan, folder / "bank")
        click.echo(f"setting up {customers} customers, {history_days} days of history ...")
        simulation.set_up()
        simulation.run(on_day=lambda day: click.echo(json.dumps(day.as_dict())))
        summary = simulation.summary()
        held_to_truth = coverage(simulation)
    finally:
        container.close()
        if redis_url:
            drop_redis_project(redis_url, settings.feast_project)
    (folder / "report.json").write_text(json.dumps(summary, indent=2))
    (folder / "lift.json").write_text(json.dumps(held_to_truth.as_dict(), indent=2))
    (folder / "lift.html").write_text(page(held_to_truth.report), encoding="utf-8")
    click.echo(json.dumps(summary["totals"], indent=2))
