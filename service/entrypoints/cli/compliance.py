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
    help="A checkpoint kept outside (from `audit checkpoint --out`, or an earlier release's "
    "JSON head): held to it as well as to the published ones.",
)
def audit_verify(checkpoint_file: Path | None) -> None:
    """Verify the whole log against every signed checkpoint the sinks hold; print how far it
    is covered; exit 1 and name the first bad record or the missing ones if it does not hold."""
    from consent.rules.chain import Checkpoint
    from consent.rules.checkpoints import Publication
    from service.usecases.audit_verification import verify_log

    container = open_container()
    checkpoint, given = None, []
    if checkpoint_file is not None:
        text = checkpoint_file.read_text(encoding="utf-8")
        try:
            given.append((str(checkpoint_file), Publication.from_json(text)))
        except ValueError:
            checkpoint = Checkpoint.from_json(text)
    report = verify_log(
        container.audit,
        container.checkpoint_sinks,
        container.audit_verifier_keys(),
        container.settings.audit_origin,
        checkpoint,
        given,
    )
    click.echo(json.dumps(report.as_dict(), default=str))
    sys.exit(0 if report.ok else 1)


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
    help="Also write the publication (JSON) to this file, for an outside party to keep.",
)
def audit_checkpoint(out: Path | None) -> None:
    """Sign and publish a checkpoint of the whole log now (the writing processes publish them
    on their own); print its signed note."""
    checkpointer = open_container(writes_audit=True).audit.checkpointer
    assert checkpointer is not None  # the container always makes one
    made = checkpointer.publish()
    if not made:
        click.echo("every record is covered by a published checkpoint already", err=True)
        return
    if out is not None:
        out.write_text(made[-1].to_json() + "\n", encoding="utf-8")
    click.echo(made[-1].note, nl=False)


@audit.command("proof")
@click.argument("decision_id")
@click.option(
    "--checkpoint",
    type=click.IntRange(1),
    default=None,
    help="The checkpoint's size (default: "
    "the newest that holds the record; one is signed now if none does).",
)
def audit_proof(decision_id: str, checkpoint: int | None) -> None:
    """Print the decision's record with its inclusion proof to a signed checkpoint, as JSON
    that `python consent/verify_audit.py inclusion FILE --key KEY` checks."""
    from consent.stores.audit.proofs import ProofRefused

    container = open_container(writes_audit=checkpoint is None)
    try:
        proof = container.audit_proofs.inclusion(decision_id, checkpoint)
    except ProofRefused as refused:
        click.echo(f"nextbest: {refused}", err=True)
        sys.exit(1)
    click.echo(json.dumps(proof, indent=2))


@audit.command("consistency")
@click.option("--from", "old", type=click.IntRange(1), required=True, help="Earlier size.")
@click.option("--to", "new", type=click.IntRange(1), required=True, help="Later size.")
def audit_consistency(old: int, new: int) -> None:
    """Print the proof that the checkpoint of --to records extends the one of --from, as JSON
    that `python consent/verify_audit.py consistency FILE --key KEY` checks."""
    from consent.stores.audit.proofs import ProofRefused

    try:
        proof = open_container().audit_proofs.consistency(old, new)
    except ProofRefused as refused:
        click.echo(f"nextbest: {refused}", err=True)
        sys.exit(1)
    click.echo(json.dumps(proof, indent=2))


@audit.command("key")
def audit_key() -> None:
    """Print the verifier key of the checkpoint signing key: give it to auditors (and keep it
    in NEXTBEST_AUDIT_VERIFIER_KEYS_FILE after a rotation)."""
    click.echo(open_container(writes_audit=True).audit_signer.verifier_key())


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
    container = open_container(writes_audit=True)
    erased = erase_customer(container, customer_id, f"cli:{getpass.getuser()}")
    click.echo(json.dumps({"erased": True, **asdict(erased)}))
