"""Compliance commands: check and export the ``audit`` log, replay decisions under a changed
``policy``, ``erase`` a customer."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from service.entrypoints.cli.context import open_container
from service.entrypoints.cli.options import CUSTOMER_ID, WHEN, utc


@click.group()
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
    from consent.rules.chain import Checkpoint

    checkpoint = Checkpoint.from_json(checkpoint_file.read_text()) if checkpoint_file else None
    result = open_container().audit.verify(checkpoint)
    click.echo(json.dumps(result.__dict__, default=str))
    sys.exit(0 if result.ok else 1)


@audit.command("export")
@click.option("--customer", type=CUSTOMER_ID, default=None, help="Only this customer's records.")
@click.option("--since", type=WHEN, default=None, help="Recorded at or after (UTC if no zone).")
@click.option("--until", type=WHEN, default=None, help="Recorded before (UTC if no zone).")
def audit_export(customer: str | None, since: datetime | None, until: datetime | None) -> None:
    """Write audit records as JSON lines to standard output: all, one customer's (found through
    their pseudonym key; none once erased), and/or a time range."""
    for entry in open_container().audit.export(customer, utc(since), utc(until)):
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
    checkpoint = open_container().audit.checkpoint()
    document = checkpoint.to_json()
    if out is not None:
        out.write_text(document + "\n")
    click.echo(document)


@click.group()
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
@click.option("--since", type=WHEN, default=None, help="Decisions recorded at or after.")
@click.option("--until", type=WHEN, default=None, help="Decisions recorded before.")
def policy_simulate(policy_file: Path, since: datetime | None, until: datetime | None) -> None:
    """Replay recorded decisions under a changed policy and report, by rule and by action, how
    many actions would be added or removed. Nothing is written."""
    from consent.rules.documents import PolicyError
    from consent.rules.policy import Policy
    from consent.rules.simulate import replay

    try:
        candidate = Policy.load(policy_file)
    except PolicyError as error:
        raise click.ClickException(str(error)) from None
    container = open_container()
    records = (entry["record"] for entry in container.audit.export(None, utc(since), utc(until)))
    report = replay(records, candidate, container.catalog)
    click.echo(
        json.dumps(
            {"current_policy_version": container.policy.version, **report.as_dict()}, indent=2
        )
    )


@click.command()
@click.argument("customer_id", type=CUSTOMER_ID)
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
    erased = erase_customer(open_container(), customer_id, f"cli:{getpass.getuser()}")
    click.echo(json.dumps({"erased": True, **asdict(erased)}))
