"""Commands that make and bring in data: ``generate`` a synthetic bank, ``load`` one into the
stores, ``backfill`` its offline feature history."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from service.entrypoints.cli.context import open_container


@click.command()
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
    from training.bank.spec import BankSpec
    from training.bank.store import write_bank

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


@click.command()
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
    from training.bank.replay import paced, stream_folder
    from training.bank.spec import BankSpec

    if rate is not None and speedup is not None:
        raise click.UsageError("choose --rate or --speedup, not both")
    container = open_container()
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


@click.command()
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Bank folder (default: $NEXTBEST_HOME/bank).",
)
@click.option("--step-days", default=1, show_default=True, type=click.IntRange(1, 90))
@click.option(
    "--seed-stream",
    is_flag=True,
    help="Also set the stream worker's state, timers and online features as of the archive's "
    "end, so the stream carries on from there (with the worker stopped).",
)
def backfill(bank_dir: Path | None, step_days: int, seed_stream: bool) -> None:
    """Compute the offline feature history of a bank's event archive without the stream, so
    models can train on history that never went through it (run `load --skip-events` too)."""
    from service.usecases import pipeline

    container = open_container()
    folder = bank_dir or container.settings.home / "bank"
    started = time.perf_counter()
    done: dict[str, float] = {"rows": pipeline.backfill(container, folder, step_days)}
    if seed_stream:
        try:
            seeded = pipeline.seed_stream(container, folder)
        except ValueError as error:  # an archive that does not end at a midnight
            raise click.UsageError(str(error)) from None
        done |= {"seeded_customers": seeded.customers, "seeded_timers": seeded.timers}
    done["seconds"] = round(time.perf_counter() - started, 1)
    click.echo(json.dumps(done))
