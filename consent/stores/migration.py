"""Columns added to the operational store's tables since their first release: a store made by
an earlier version gains them when it is opened."""

from __future__ import annotations

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError

from consent.stores.tables import audit_log, consent_history, contact_history

#: Columns added since the first release of each table, as ``ALTER TABLE ... ADD COLUMN``
#: clauses: a store made before them (the demo's SQLite, a dev PostgreSQL) gains them at
#: connect.
_ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    consent_history.name: (
        ("given_at", "TIMESTAMP WITH TIME ZONE"),
        ("recorded_by", "VARCHAR(80)"),
        ("event_id", "VARCHAR(128)"),
    ),
    contact_history.name: (("recorded_by", "VARCHAR(80)"),),
    audit_log.name: (("leaf_hash", "BYTEA"),),
}
#: Types whose name differs on SQLite.
_SQLITE_TYPES = {"BYTEA": "BLOB"}


def add_missing_columns(engine: Engine) -> None:
    """Bring a store made by an earlier version up to these tables; idempotent, and safe
    when several processes start at once (PostgreSQL: ``IF NOT EXISTS``; on SQLite a column
    another process added since we looked fails as a duplicate and is skipped)."""
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspect(engine).get_columns(table)}
        missing = [(name, kind) for name, kind in columns if name not in present]
        for name, kind in missing:
            _add_column(engine, table, name, kind)
        if missing and table == consent_history.name:
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS ux_{table}_event_id ON {table} (event_id)"
                )


def _add_column(engine: Engine, table: str, name: str, kind: str) -> None:
    postgres = engine.dialect.name == "postgresql"
    if not postgres:
        kind = _SQLITE_TYPES.get(kind, kind)
    clause = f"ADD COLUMN IF NOT EXISTS {name}" if postgres else f"ADD COLUMN {name}"
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER TABLE {table} {clause} {kind}")
    except OperationalError as error:
        if "duplicate column" not in str(error).lower():
            raise
