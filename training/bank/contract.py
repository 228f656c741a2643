"""The rows of a bank's events table as events of the contract (``feature_repo.events``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa


def _iso(moments: pa.ChunkedArray) -> list[str]:
    """Event times as the contract writes them: UTC to the second (truncated), with a Z."""
    seconds = moments.to_numpy().astype("datetime64[s]")
    return [f"{text}Z" for text in np.datetime_as_string(seconds, unit="s").tolist()]


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column's Python values; a dictionary-encoded one decoded as a whole first, which is
    much cheaper than converting element by element."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    values: list[Any] = column.to_pylist()
    return values


def contract_events(events: pa.Table) -> Iterator[dict[str, Any]]:
    """The rows of an events table as contract events (``feature_repo.events``)."""
    cols = {name: _values(events[name]) for name in events.column_names if name != "occurred_at"}
    cols["occurred_at"] = _iso(events["occurred_at"])
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
            "occurred_at": cols["occurred_at"][i],
            "channel": cols["channel"][i],
            "schema_version": 1,
            "payload": payload,
        }
