"""``nextbest alerts``: what RM alerts give back (training labels from dispositions)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from service.entrypoints.cli.context import open_container


@click.group()
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

    labels = open_container().alert_store.labels()
    columns = ["customer_id", "need", "event_timestamp", "label", "outcome", "decision_id"]
    pd.DataFrame(labels, columns=columns).to_parquet(out, index=False)
    click.echo(json.dumps({"labels": len(labels), "out": str(out)}))
