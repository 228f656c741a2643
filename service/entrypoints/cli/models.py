"""Commands for the need models: ``train`` them, ``retrain`` challengers against the champions,
``rollback`` a champion."""

from __future__ import annotations

import dataclasses
import json
from contextlib import AbstractContextManager, closing, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from service.entrypoints.cli.context import open_container, settings_or_exit
from service.entrypoints.cli.options import NEED, bank_option, needs_or_all
from service.entrypoints.quiet import quiet_libraries

if TYPE_CHECKING:
    from distributed import Client


@click.command()
@click.option(
    "--need",
    "needs",
    type=NEED,
    multiple=True,
    help="A need to train (repeatable; default: all seven). With --table: exactly one.",
)
@bank_option
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
        _train_table(table, label, needs[0], drop, alias)
        return
    from service.usecases import pipeline

    container = open_container()
    with _dask_client(dask_scheduler) as client:
        report = pipeline.train_from_bank(
            container,
            bank_dir or container.settings.home / "bank",
            needs_or_all(needs),
            horizon_days,
            step_days,
            alias,
            dask_client=client,
        )
    click.echo(json.dumps(pipeline.report_dict(report), indent=2))


def _dask_client(scheduler: str | None) -> AbstractContextManager[Client | None]:
    """A client of the Dask scheduler named (``local``: a cluster of its own), closed after the
    training; none named: no client."""
    if not scheduler:
        return nullcontext()
    from training.distributed import connect

    return closing(connect(None if scheduler == "local" else scheduler))


def _train_table(table: Path, label: str, need: str, drop: str, alias: str | None) -> None:
    """One need from a customer table: no feature store, no container."""
    from training.table import train_table

    settings = settings_or_exit()
    quiet_libraries()
    result = train_table(
        table,
        label,
        need,
        [c.strip() for c in drop.split(",") if c.strip()],
        settings.tracking_uri,
        settings.artifact_root,
        alias=alias or settings.model_alias,
    )
    click.echo(json.dumps(dataclasses.asdict(result), indent=2))


@click.command()
@click.option(
    "--need", "needs", type=NEED, multiple=True, help="A need (repeatable; default: all seven)."
)
@bank_option
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

    container = open_container()
    verdicts = run(
        container,
        bank_dir or container.settings.home / "bank",
        needs_or_all(needs),
        min_gain=min_gain,
        fairness_tolerance=fairness_tolerance,
    )
    click.echo(json.dumps([v.as_dict() for v in verdicts], indent=2))


@click.command()
@click.option("--need", type=NEED, required=True, help="The need whose champion moves back.")
@click.option("--to-version", default=None, help="Default: the previous champion.")
def rollback(need: str, to_version: str | None) -> None:
    """Point a need's champion alias back at the previous champion (or a given version)."""
    from service.usecases.retrain import rollback as run

    try:
        event = run(open_container(), need, to_version)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(json.dumps(event))
