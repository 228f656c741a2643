"""The ``nextbest`` command line. Every subcommand reads settings once and wires a Container.

The commands live in one module per group (``data``, ``stream``, ``models``, ``decisions``,
``serve``, ``compliance``, ``alerts``, ``db``, ``keys``, ``report``, ``simulate``). Those
modules import only click and light helpers at the top; Feast, MLflow, LightGBM, pandas and
FastAPI are imported inside the commands that use them, so ``--help`` and the commands that
need none of them start at once.
"""

from __future__ import annotations

import logging

import click

from service.entrypoints.cli.alerts import alerts
from service.entrypoints.cli.compliance import audit, erase, policy
from service.entrypoints.cli.context import settings_or_exit
from service.entrypoints.cli.data import backfill, generate, load
from service.entrypoints.cli.db import db
from service.entrypoints.cli.decisions import decide, score
from service.entrypoints.cli.keys import keys
from service.entrypoints.cli.models import retrain, rollback, train
from service.entrypoints.cli.report import report
from service.entrypoints.cli.serve import demo, serve
from service.entrypoints.cli.simulate import simulate
from service.entrypoints.cli.stream import stream
from service.entrypoints.quiet import quiet_libraries

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nextbest")
def main() -> None:
    """NextBest: proactive next-best-action service for banks.

    Configuration comes from NEXTBEST_* environment variables; with none set, everything runs on
    the embedded defaults in ./.nextbest.
    """
    settings = settings_or_exit()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    quiet_libraries()


for _command in (
    generate,
    load,
    stream,
    train,
    backfill,
    retrain,
    rollback,
    score,
    serve,
    decide,
    audit,
    alerts,
    policy,
    erase,
    demo,
    db,
    keys,
    report,
    simulate,
):
    main.add_command(_command)
