"""What an attacker with the tables' owner rights does first on PostgreSQL: switch off the audit
tables' append-only triggers (``consent/stores/audit/append_only.sql``). SQLite has none."""

from __future__ import annotations

from sqlalchemy import Engine

from consent.stores.tables import audit_checkpoints, audit_log, customer_keys


def unguarded(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as connection:
        for table in (audit_log, audit_checkpoints, customer_keys):
            connection.exec_driver_sql(f"ALTER TABLE {table.name} DISABLE TRIGGER USER")
