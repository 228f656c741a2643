"""What every command starts from: the settings, read once, and a container wired from them
that is closed when the command ends."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from service.entrypoints.quiet import quiet_libraries
from service.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from service.bootstrap import Container


def settings_or_exit() -> Settings:
    """The settings; an invalid environment ends the command with its message (exit 2)."""
    try:
        return load_settings()
    except SettingsError as error:
        click.echo(f"nextbest: {error}", err=True)
        sys.exit(2)


def open_container(*, writes_audit: bool = False) -> Container:
    """A container on the settings, closed with the command's context. A command that
    ``writes_audit`` needs the checkpoint signing key: without one (production) it ends at
    once with the reason (exit 2), before it decides anything."""
    from service.adapters.audit_checkpoints import AuditKeyError
    from service.bootstrap import Container

    quiet_libraries()
    container = Container(settings_or_exit())
    if writes_audit:
        try:
            _ = container.audit_signer
        except AuditKeyError as error:
            click.echo(f"nextbest: {error}", err=True)
            sys.exit(2)
    # Its database connections are given back when the command ends, not left to the collector.
    context = click.get_current_context(silent=True)
    if context is not None:
        context.call_on_close(container.close)
    return container
