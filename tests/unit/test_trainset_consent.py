"""Training sets hold a customer's snapshot only with profiling consent granted at the snapshot
and at training time: an objection made after a snapshot takes the customer out of every one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from training.trainset import consenting, snapshots

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CUSTOMERS = ("C1", "C2", "C3", "C4")

Entry = tuple[str, int, str, bool]

#: Consent entries: customer, hour (distinct hours: no two entries at one moment), purpose,
#: whether a grant.
entries = st.lists(
    st.tuples(
        st.sampled_from(CUSTOMERS),
        st.integers(0, 24 * 60),
        st.sampled_from(["profiling", "profiling", "marketing"]),
        st.booleans(),
    ),
    max_size=25,
    unique_by=lambda e: e[1],
)


def _latest_is_grant(entries: list[Entry], customer: str, at: datetime) -> bool:
    """The oracle, written plainly over the entries: the customer's latest profiling entry up
    to ``at`` is a grant."""
    mine = [
        (T0 + timedelta(hours=hour), granted)
        for c, hour, purpose, granted in entries
        if c == customer and purpose == "profiling" and T0 + timedelta(hours=hour) <= at
    ]
    return bool(mine) and max(mine)[1]  # hours are distinct: no two entries tie


@settings(max_examples=200, deadline=None)
@given(entries=entries, now_hour=st.integers(0, 24 * 60))
def test_a_snapshot_is_kept_exactly_with_consent_then_and_now(
    entries: list[Entry], now_hour: int
) -> None:
    consents = pd.DataFrame(
        [
            {
                "customer_id": c,
                "purpose": purpose,
                "channel": "any" if purpose == "profiling" else "email",
                "granted": granted,
                "recorded_at": T0 + timedelta(hours=hour),
            }
            for c, hour, purpose, granted in entries
        ],
        columns=["customer_id", "purpose", "channel", "granted", "recorded_at"],
    )
    consents["recorded_at"] = pd.to_datetime(consents["recorded_at"], utc=True)
    times = [T0 + timedelta(days=d) for d in range(0, 60, 7)]
    entity = snapshots(list(CUSTOMERS), times)
    now = pd.Timestamp(T0 + timedelta(hours=now_hour))

    kept, excluded, withdrawn_now = consenting(entity, consents, now.to_pydatetime())

    expected = {
        (c, pd.Timestamp(t))
        for c in CUSTOMERS
        for t in times
        if _latest_is_grant(entries, c, t) and _latest_is_grant(entries, c, now.to_pydatetime())
    }
    assert set(zip(kept["customer_id"], kept["event_timestamp"], strict=True)) == expected
    then = sum(_latest_is_grant(entries, c, t) for c in CUSTOMERS for t in times)
    assert excluded == len(entity) - then
    assert withdrawn_now == then - len(expected)


def test_an_objection_after_the_last_snapshot_removes_every_snapshot() -> None:
    consents = pd.DataFrame(
        {
            "customer_id": ["C1", "C1", "C2"],
            "purpose": ["profiling"] * 3,
            "channel": ["any"] * 3,
            "granted": [True, False, True],
            "recorded_at": pd.to_datetime([T0, T0 + timedelta(days=90), T0], utc=True),
        }
    )
    entity = snapshots(["C1", "C2"], [T0 + timedelta(days=d) for d in (7, 14, 21)])
    kept, excluded, withdrawn_now = consenting(entity, consents, T0 + timedelta(days=100))
    assert set(kept["customer_id"]) == {"C2"} and len(kept) == 3
    assert (excluded, withdrawn_now) == (0, 3)
    # Trained before the objection, C1 was in.
    before, _, none = consenting(entity, consents, T0 + timedelta(days=30))
    assert len(before) == 6 and none == 0
