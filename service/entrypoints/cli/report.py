"""``report``: what the recommendations caused (``report lift``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from service.entrypoints.cli.context import open_container
from service.entrypoints.cli.options import utc

DATES = click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"])


@click.group()
def report() -> None:
    """Reports on what the recommendations did."""


@report.command()
@click.option(
    "--since", type=DATES, default=None, help="Decisions from (UTC); default 90 days ago."
)
@click.option("--until", type=DATES, default=None, help="Decisions before (UTC); default now.")
@click.option("--action", default=None, help="One action of the catalog; default every one.")
@click.option(
    "--window-days",
    type=click.IntRange(1, 365),
    default=30,
    show_default=True,
    help="The programme's attribution window (each action has its own in the catalog).",
)
@click.option(
    "--html",
    "html_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the report as an HTML page with plots.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def lift(
    since: datetime | None,
    until: datetime | None,
    action: str | None,
    window_days: int,
    html_out: Path | None,
    as_json: bool,
) -> None:
    """Conversions the recommendations caused, per action and channel and over time, measured
    against the control groups (customers for whom an action was chosen but who did not get
    it), with 90% intervals; and declines, complaints and opt-outs per 1,000 contacts."""
    from service.adapters.lift_page import page, text_table
    from service.usecases.lift_measure import measure_lift

    end = utc(until) or datetime.now(UTC)
    start = utc(since) or end - timedelta(days=90)
    if start >= end:
        raise click.UsageError("--since must be before --until")
    container = open_container()
    try:
        if action is not None and action not in container.catalog.actions:
            raise click.UsageError(f"no action {action!r} in the catalog")
        measured = measure_lift(container, start, end, action=action, window_days=window_days)
    finally:
        container.close()
    if html_out is not None:
        html_out.write_text(page(measured), encoding="utf-8")
    click.echo(json.dumps(measured.as_dict(), indent=2) if as_json else text_table(measured))
