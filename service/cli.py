"""The ``nextbest`` command line. Every subcommand reads settings once and wires a Container."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import click

from service.settings import Settings, SettingsError, load_settings


def _quiet_libraries() -> None:
    """Keep third-party chatter out of the output. Feast resets the DeprecationWarning filter
    when it is imported, so this runs again once the container (and with it Feast) is loaded."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("feast", "mlflow", "alembic", "urllib3", "kafka", "dask", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
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
    return Container(_settings())


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
    help="Last moment of the history (UTC); default 2026-11-01.",
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
    from training.bank.spec import DEFAULT_END

    spec = BankSpec(
        seed=seed,
        customers=customers,
        days=days,
        end=end.replace(tzinfo=UTC) if end else DEFAULT_END,
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
def load(bank_dir: Path, rate: float | None, speedup: float | None) -> None:
    """Record a bank's consents in the registry and publish its events, in event-time order,
    to the event transport (malformed ones included)."""
    import pandas as pd

    from service import pipeline
    from training.bank.replay import paced
    from training.bank.store import stream_folder

    if rate is not None and speedup is not None:
        raise click.UsageError("choose --rate or --speedup, not both")
    container = _container()
    consents = pipeline.record_consents(container, pd.read_parquet(bank_dir / "consents.parquet"))
    events = pipeline.publish(container, paced(stream_folder(bank_dir), rate, speedup))
    click.echo(f"recorded {consents} consent entries; published {events} events")


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
def stream(
    until_idle: float | None,
    from_offset: int | None,
    from_time: datetime | None,
    reset_state: bool,
) -> None:
    """Run the stream worker: events in, online and offline features out.

    SIGTERM or Ctrl-C finishes the batch, commits and leaves the consumer group. With
    NEXTBEST_WORKER_METRICS_PORT set, Prometheus metrics are served on that port.
    """
    if from_offset is not None and from_time is not None:
        raise click.UsageError("choose --from-offset or --from-time, not both")
    container = _container()
    worker = container.worker()
    if reset_state:
        worker.states.clear()
    if from_offset is not None or from_time is not None:
        stamp = None if from_time is None else int(from_time.replace(tzinfo=UTC).timestamp() * 1000)
        worker.consumer.replay_from(from_offset, stamp)
    port = container.settings.worker_metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=container.settings.api_host)
    worker.stop_on_signals()
    try:
        stats = worker.run(idle_exit_s=until_idle)
    finally:
        worker.close()
    click.echo(json.dumps(stats.as_dict()))


@main.command()
@click.option("--need", default="mortgage", show_default=True, type=click.Choice(["mortgage"]))
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Bank folder with the outcomes (default: $NEXTBEST_HOME/bank).",
)
@click.option("--horizon-days", default=21, show_default=True, type=click.IntRange(1, 365))
@click.option("--step-days", default=3, show_default=True, type=click.IntRange(1, 90))
def train(need: str, bank_dir: Path | None, horizon_days: int, step_days: int) -> None:
    """Train a need model from a Feast point-in-time training set and register it in MLflow."""
    from service import pipeline

    container = _container()
    report = pipeline.train_from_bank(
        container, bank_dir or container.settings.home / "bank", need, horizon_days, step_days
    )
    click.echo(
        json.dumps(
            {
                "model": report.model.name,
                "version": report.model.version,
                "run_id": report.model.run_id,
                "rows": report.rows,
                "positives": report.positives,
                "excluded_without_profiling": report.excluded_without_profiling,
                "metrics": report.model.metrics,
            },
            indent=2,
        )
    )


@main.command()
@click.option("--host", default=None, help="Default: NEXTBEST_API_HOST.")
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
def serve(host: str | None, port: int | None) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from service.api import create_app

    container = _container()
    app = create_app(container)
    uvicorn.run(
        app,
        host=host or container.settings.api_host,
        port=port or container.settings.api_port,
        log_level=container.settings.log_level.lower(),
    )


@main.command()
@click.argument("customer_id")
@click.option("--channel", default="mobile_app", show_default=True)
def decide(customer_id: str, channel: str) -> None:
    """Decide for one customer and print the audit record."""
    from service.decisions import DecideForCustomer

    container = _container()
    made = container.decisions.decide(DecideForCustomer(customer_id, channel))
    click.echo(made.record.model_dump_json(indent=2))


@main.group()
def audit() -> None:
    """Check and export the hash-chained audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Verify the whole chain; exit 1 and name the first bad record if it does not hold."""
    result = _container().audit.verify()
    click.echo(json.dumps(result.__dict__))
    sys.exit(0 if result.ok else 1)


@audit.command("export")
@click.option("--customer", default=None, help="Only this customer's records.")
def audit_export(customer: str | None) -> None:
    """Write the audit records as JSON lines to standard output."""
    for entry in _container().audit.export(customer):
        click.echo(json.dumps(entry, sort_keys=True))


@main.command()
@click.option(
    "--duration",
    type=float,
    default=None,
    help="Stop after this many seconds of serving (default: until Ctrl-C).",
)
@click.option("--customers", default=2_000, show_default=True, type=click.IntRange(1_000, 100_000))
@click.option("--days", default=75, show_default=True, type=click.IntRange(45, 365))
@click.option("--seed", default=7, show_default=True)
@click.option("--port", default=None, type=int, help="Default: NEXTBEST_API_PORT.")
def demo(duration: float | None, customers: int, days: int, seed: int, port: int | None) -> None:
    """Set up a synthetic bank on the embedded defaults, train, serve and show decisions."""
    from service.demo import run_demo

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
