"""The rows of a bank's events table as events of the contract (``feature_repo.events``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pyarrow as pa


def _iso(moment: pd.Timestamp) -> str:
    iso: str = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return iso


def contract_events(events: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of an events table as contract events (``feature_repo.events``)."""
    cols = {name: events[name].to_pylist() for name in events.column_names}
    for i in range(events.num_rows):
        kind = cols["type"][i]
        if kind == "transaction":
            payload: dict[str, Any] = {
                "amount": f"{cols['amount'][i]:.2f}",
                "currency": cols["currency"][i],
                "direction": cols["direction"][i],
                "category": cols["category"][i],
            }
        elif kind == "page_view":
            payload = {"page": cols["page"][i], "seconds": round(cols["seconds"][i], 1)}
        elif kind == "login":
            payload = {"method": "password"}
        elif kind == "application":
            payload = {"product": cols["product"][i], "status": cols["status"][i]}
        elif kind in ("product_opened", "product_closed"):
            payload = {"product": cols["product"][i]}
        elif kind == "contact":
            payload = {"reason": cols["reason"][i], "channel": cols["contact_channel"][i]}
        else:
            payload = {"changed": [cols["changed"][i]]}
        yield {
            "event_id": cols["event_id"][i],
            "customer_id": cols["customer_id"][i],
            "type": kind,
            "occurred_at": _iso(cols["occurred_at"][i]),
            "channel": cols["channel"][i],
            "schema_version": 1,
            "payload": payload,
        }
