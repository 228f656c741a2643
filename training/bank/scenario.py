"""The design's seed scenario as events, and who the gate's mortgage rules allow: shared by the
demo, the end-to-end tests and the benchmarks."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

PAGES = ("property_listing", "mortgage_calculator")


def seed_scenario(
    customer_id: str, now: datetime, views: int = 8, amount: str = "600000.00"
) -> list[dict[str, Any]]:
    """A large transfer in, then ``views`` property and mortgage page views, all within the
    last half hour before ``now`` (event contract dicts, fresh event ids)."""
    start = now - timedelta(minutes=30)
    inflow = {
        "event_id": f"seed-{uuid.uuid4()}",
        "customer_id": customer_id,
        "type": "transaction",
        "occurred_at": start.isoformat(),
        "channel": "core_banking",
        "payload": {
            "amount": amount,
            "currency": "CNY",
            "direction": "credit",
            "category": "transfer_in",
        },
    }
    step = timedelta(minutes=25) / max(views, 1)
    pages = [
        {
            "event_id": f"seed-{uuid.uuid4()}",
            "customer_id": customer_id,
            "type": "page_view",
            "occurred_at": (start + timedelta(minutes=5) + i * step).isoformat(),
            "channel": "mobile_app",
            "payload": {"page": PAGES[i % 2], "seconds": 90},
        }
        for i in range(views)
    ]
    return [inflow, *pages]


def mortgage_suitable(people: pd.DataFrame) -> pd.Series:
    """Customers (rows of the extract) the gate's mortgage rules allow: KYC complete, not
    vulnerable, no AML flag, not in arrears, debt to income at most 0.45, aged 18–70, income at
    least 30,000, no mortgage yet."""
    return (
        people["kyc_status"].eq("complete")
        & ~people["vulnerable"]
        & ~people["aml_flag"]
        & ~people["in_arrears"]
        & people["debt_to_income"].le(0.45)
        & people["age"].between(18, 70)
        & people["income"].ge(30_000)
        & ~people["holds_mortgage"]
    )
