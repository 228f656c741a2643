"""Commands that decide: ``decide`` for one customer, ``score`` every customer for a campaign."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from service.entrypoints.cli.context import open_container
from service.entrypoints.cli.options import problems


@click.command()
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
    from consent.stores.audit.failures import AuditWriteFailed
    from service.usecases.scoring import batch_score

    container = open_container(writes_audit=True)
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


@click.command()
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
    from service.usecases.decision_messages import DecideForCustomer

    # The API's own request model: what it answers 422 to is refused here before anything runs.
    try:
        request = DecisionRequest.model_validate({"customer_id": customer_id, "channel": channel})
    except ValidationError as error:
        raise click.UsageError(f"invalid decision request: {problems(error)}") from None
    container = open_container(writes_audit=True)
    try:
        made = container.decisions.decide(
            DecideForCustomer(request.customer_id, request.channel, request.limit)
        )
    except NextBestError as error:
        raise click.ClickException(f"{error.code}: {error.message}") from None
    click.echo(made.record.model_dump_json(indent=2))
