"""``keys``: new secrets for a production set-up, printed, never stored by NextBest: an API key
(the entry for the keys file on standard output, the key itself on standard error, to hand to
its holder) and the audit's checkpoint signing key (the key on standard output, to put in the
secret store; its verifier key on standard error, to give to auditors)."""

from __future__ import annotations

import json
import secrets

import click

from service.entrypoints.auth import ROLES


@click.group()
def keys() -> None:
    """Make new API keys and audit signing keys."""


@keys.command("api")
@click.option("--name", required=True, help="Who holds it (recorded as the author of writes).")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--rm-id", default=None, help="For an rm key: the relationship manager's id.")
def api_key(name: str, role: str, rm_id: str | None) -> None:
    """Print a keys-file entry (SHA-256 only) and, on standard error, the key itself."""
    from service.entrypoints.auth import KeyEntry, digest

    key = secrets.token_urlsafe(32)
    entry = KeyEntry.model_validate(
        {"name": name, "role": role, "sha256": digest(key)} | ({"rm_id": rm_id} if rm_id else {})
    )
    click.echo(json.dumps(entry.model_dump(exclude_none=True)))
    click.echo(f"the key (give it to {name}; it is not kept anywhere): {key}", err=True)


@keys.command("audit")
@click.option(
    "--name", required=True, help="The key's name: the log's origin, e.g. bank.example/audit."
)
def audit_key(name: str) -> None:
    """Print a new checkpoint signing key and, on standard error, its verifier key."""
    from consent.rules.signed_note import Signer

    try:
        signer = Signer.generate(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--name") from error
    click.echo(signer.encoded())
    click.echo(f"verifier key (for auditors): {signer.verifier_key()}", err=True)
