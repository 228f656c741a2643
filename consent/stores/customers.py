"""The customer directory: what the gate knows about each customer besides consent.

The bank's customer master is the source (`nextbest load` writes it from the bank's extract);
the directory keeps one row per customer: household, relationship manager and the facts the
rules read (`CustomerFacts`). A customer missing from it is unknown, and the gate treats every
fact it would need as the unsafe value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from consent.rules.model import CustomerFacts
from consent.rules.vocabulary import NEEDS
from consent.stores.tables import customers

#: Rows per statement when loading a whole extract.
UPSERT_BATCH = 5_000


@dataclass(frozen=True)
class KnownCustomer:
    customer_id: str
    household_id: str | None
    rm_id: str | None
    facts: CustomerFacts


class CustomerDirectory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def upsert(self, rows: Iterable[KnownCustomer]) -> int:
        """Insert or replace customers (the master is the source of truth)."""
        now = datetime.now(UTC)
        values = [
            {
                "customer_id": r.customer_id,
                "household_id": r.household_id,
                "rm_id": r.rm_id,
                "facts": r.facts.model_dump_json(),
                "updated_at": now,
            }
            for r in rows
        ]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self.engine.begin() as connection:
            for start in range(0, len(values), UPSERT_BATCH):
                statement = dialect.insert(customers)
                statement = statement.on_conflict_do_update(
                    index_elements=[customers.c.customer_id],
                    set_={
                        c: statement.excluded[c]
                        for c in ("household_id", "rm_id", "facts", "updated_at")
                    },
                )
                connection.execute(statement, values[start : start + UPSERT_BATCH])
        return len(values)

    def get(self, customer_id: str) -> KnownCustomer | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(customers).where(customers.c.customer_id == customer_id)
            ).first()
        return None if row is None else _known(row)

    def get_many(self, customer_ids: Iterable[str]) -> dict[str, KnownCustomer]:
        """The known ones of ``customer_ids`` (a customer missing from the result is unknown)."""
        ids = sorted(set(customer_ids))
        found: dict[str, KnownCustomer] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(ids), UPSERT_BATCH):
                rows = connection.execute(
                    select(customers).where(
                        customers.c.customer_id.in_(ids[start : start + UPSERT_BATCH])
                    )
                )
                found.update((row.customer_id, _known(row)) for row in rows)
        return found

    @staticmethod
    def erase(connection: Connection, customer_id: str) -> int:
        result = connection.execute(delete(customers).where(customers.c.customer_id == customer_id))
        return result.rowcount


def _known(row: Any) -> KnownCustomer:
    return KnownCustomer(
        row.customer_id, row.household_id, row.rm_id, CustomerFacts.model_validate_json(row.facts)
    )


def _value(row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def from_extract(frame: pd.DataFrame) -> list[KnownCustomer]:
    """Directory rows from a customer extract (the synthetic bank's `customers.parquet` has the
    columns; a bank maps its own master onto the same names). Missing columns stay unknown."""
    out = []
    for row in frame.to_dict("records"):
        assessed = _value(row, "risk_assessed_at")
        facts = CustomerFacts(
            age=_value(row, "age"),
            income=_value(row, "income"),
            timezone=_value(row, "timezone"),
            do_not_contact=bool(_value(row, "do_not_contact") or False),
            vulnerable=bool(_value(row, "vulnerable") or False),
            kyc_status=_value(row, "kyc_status") or "unknown",
            aml_flag=bool(_value(row, "aml_flag") or False),
            in_arrears=bool(_value(row, "in_arrears") or False),
            debt_to_income=_value(row, "debt_to_income"),
            risk_level=_value(row, "risk_level"),
            risk_assessed_at=(
                None if assessed is None else pd.Timestamp(assessed).floor("us").to_pydatetime()
            ),
            holds=tuple(n for n in NEEDS if bool(_value(row, f"holds_{n}") or False)),
            open_complaint=bool(_value(row, "open_complaint") or False),
        )
        out.append(
            KnownCustomer(
                str(row["customer_id"]),
                _value(row, "household_id"),
                _value(row, "rm_id"),
                facts,
            )
        )
    return out
