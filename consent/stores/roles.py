"""The operational store's roles on PostgreSQL, set up by the migration (``nextbest db migrate``),
run as the tables' owner:

- **the application's role** (the API, the stream worker, the alerter; the login role of their
  ``NEXTBEST_DATABASE_URL``) may read and write the working tables, but may only read and
  INSERT into the audit tables and the customers' keys: no UPDATE, DELETE or TRUNCATE there.
  It may call the append function and the erase function;
- **the erasure role** (no login) owns the erase function (``append_only.sql``) and may delete
  customers' keys: the application erases a key only through that function, one customer at a
  time, in the same transaction as the rest of an erasure.

The append-only triggers refuse changes to the audit tables whoever asks, the owner included.
Every statement is idempotent: the migration is run again after each upgrade.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, Engine

from consent.stores.audit.append_function import NAME as APPEND
from consent.stores.audit.append_function import AppendFunction
from consent.stores.audit.append_only import install
from consent.stores.audit.writes import ERASE_KEY, LOCK_TIMEOUT_SECONDS
from consent.stores.tables import audit_checkpoints, audit_log, customer_keys, metadata

#: Tables the application only reads and appends to.
APPEND_ONLY = (audit_log.name, audit_checkpoints.name, customer_keys.name)
_ROLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleError(RuntimeError):
    """The roles cannot be set up as asked."""


def _exists(connection: Connection, role: str) -> bool:
    found = connection.exec_driver_sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return found.first() is not None


def set_up_roles(engine: Engine, app_role: str, erasure_role: str) -> list[str]:
    """Grant ``app_role`` (which must exist) what the application needs and no more; make
    ``erasure_role`` if missing and give it the erase function. The statements run."""
    if engine.dialect.name != "postgresql":
        raise RoleError("roles are PostgreSQL's: SQLite has none")
    for role in (app_role, erasure_role):
        if not _ROLE.match(role):
            raise RoleError(f"{role!r} is not a plain lower-case role name")
    if app_role == erasure_role:
        raise RoleError("the application and the erasure need two roles")
    if not install(engine) or not AppendFunction(engine, LOCK_TIMEOUT_SECONDS).check():
        raise RoleError("run the migration as the tables' owner")
    run: list[str] = []
    with engine.begin() as connection:
        if not _exists(connection, app_role):
            raise RoleError(f"role {app_role} does not exist: create it with LOGIN first")
        if not _exists(connection, erasure_role):
            run.append(f"CREATE ROLE {erasure_role} NOLOGIN")
        schema = connection.exec_driver_sql("SELECT current_schema()").scalar_one()
        owner = connection.exec_driver_sql("SELECT current_user").scalar_one()
        working = [t.name for t in metadata.sorted_tables if t.name not in APPEND_ONLY]
        run += [
            # To hand the erase function to the erasure role, the owner must be able to act
            # as it (PostgreSQL's rule for ALTER ... OWNER).
            f"GRANT {erasure_role} TO {owner}",
            f"GRANT USAGE ON SCHEMA {schema} TO {app_role}, {erasure_role}",
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {app_role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(working)} TO {app_role}",
            f"GRANT SELECT, INSERT ON {', '.join(APPEND_ONLY)} TO {app_role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app_role}",
            f"REVOKE ALL ON {customer_keys.name} FROM {erasure_role}",
            f"GRANT SELECT, DELETE ON {customer_keys.name} TO {erasure_role}",
            # A function's new owner needs CREATE on its schema at that moment, not after.
            f"GRANT CREATE ON SCHEMA {schema} TO {erasure_role}",
            f"ALTER FUNCTION {ERASE_KEY}(text) OWNER TO {erasure_role}",
            f"REVOKE CREATE ON SCHEMA {schema} FROM {erasure_role}",
            f"REVOKE ALL ON FUNCTION {ERASE_KEY}(text) FROM PUBLIC",
            f"GRANT EXECUTE ON FUNCTION {ERASE_KEY}(text) TO {app_role}",
            f"GRANT EXECUTE ON FUNCTION {APPEND} TO {app_role}",
        ]
        for statement in run:
            connection.exec_driver_sql(statement)
    return run
