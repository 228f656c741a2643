"""The audit tables' guard on PostgreSQL (``append_only.sql``): triggers that refuse any change
to records and checkpoints, and the one function that erases a customer's key.

It is installed when the store is opened by a role that may (the tables' owner: the migration,
a development database), under the chain's lock so processes starting together do not race; a
role that may not (the application's, in production) finds it in place. SQLite, the embedded
demo store, has no roles: anyone with the file can change it, and only the published
checkpoints show what changed.
"""

from __future__ import annotations

import logging
from importlib import resources

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import ProgrammingError

from consent.stores.audit.writes import ERASE_KEY, lock_chain
from consent.stores.tables import audit_checkpoints, audit_log, customer_keys

log = logging.getLogger(__name__)

REFUSE = "nextbest_audit_refuse_change"
#: The triggers the guard makes, on the tables they guard.
TRIGGERS = (
    f"{audit_log.name}_append_only",
    f"{audit_log.name}_no_truncate",
    f"{audit_checkpoints.name}_append_only",
    f"{audit_checkpoints.name}_no_truncate",
    f"{customer_keys.name}_never_changed",
    f"{customer_keys.name}_no_truncate",
)


def definition(schema: str) -> str:
    template = resources.files("consent.stores.audit").joinpath("append_only.sql")
    return template.read_text("utf-8") % {
        "refuse": REFUSE,
        "erase_key": ERASE_KEY,
        "audit_log": audit_log.name,
        "audit_checkpoints": audit_checkpoints.name,
        "customer_keys": customer_keys.name,
        "schema": schema,
    }


def installed(connection: Connection) -> bool:
    """Whether every trigger and the erase function are in the current schema."""
    found = connection.exec_driver_sql(
        "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE c.relnamespace = CAST(current_schema() AS regnamespace) AND t.tgname = ANY(%s)",
        (list(TRIGGERS),),
    ).scalar()
    erase = connection.exec_driver_sql("SELECT to_regproc(%s) IS NOT NULL", (ERASE_KEY,)).scalar()
    return found == len(TRIGGERS) and bool(erase)


def install(engine: Engine) -> bool:
    """Install the guard on PostgreSQL unless it is there; whether it is there now (a role
    that may not install it is told so in the log)."""
    if engine.dialect.name != "postgresql":
        return False
    try:
        with engine.begin() as connection:
            lock_chain(connection)
            if not installed(connection):
                schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
                connection.exec_driver_sql(definition(schema))
        return True
    except ProgrammingError as error:  # not the tables' owner: the migration installs it
        log.warning("audit log: append-only guard not installed here: %s", error.orig)
        return False
