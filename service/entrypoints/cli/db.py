"""``db``: the operational store's migration, run by the operator as the tables' owner."""

from __future__ import annotations

import json
import sys

import click

from service.entrypoints.cli.context import open_container


@click.group()
def db() -> None:
    """The operational store."""


@db.command("migrate")
@click.option(
    "--app-role",
    default=None,
    help="PostgreSQL: the login role the API, stream worker and alerter connect as; it gets "
    "INSERT-only rights on the audit tables.",
)
@click.option(
    "--erasure-role",
    default="nextbest_erasure",
    show_default=True,
    help="PostgreSQL: the role (made if missing, no login) that alone may delete customers' "
    "pseudonym keys, through its erase function.",
)
def migrate(app_role: str | None, erasure_role: str) -> None:
    """Create or bring up to date the tables, the audit log's append function and its
    append-only guard; with --app-role, set up the application's and the erasure's roles.
    Idempotent: run it after every upgrade, as the tables' owner."""
    from consent.stores.audit.append_only import install
    from consent.stores.roles import RoleError, set_up_roles

    engine = open_container().engine  # opening the store creates and updates the tables
    report: dict[str, object] = {"guard": install(engine)}
    if app_role is not None:
        try:
            report["roles"] = set_up_roles(engine, app_role, erasure_role)
        except RoleError as error:
            click.echo(f"nextbest: {error}", err=True)
            sys.exit(1)
    click.echo(json.dumps(report))
