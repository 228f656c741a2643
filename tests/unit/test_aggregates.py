"""The streaming aggregates: definitions, arrival rules, and the stream equal to the reference."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_repo.activity import FEATURE_NAMES, MAX_DAYS, NOT_SEEN_DAYS
from feature_repo.aggregates import contributions
from feature_repo.arrival import apply_events, epoch_micros
from feature_repo.buckets import DAY_US, WindowState, combine_buckets
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from feature_repo.windows import compute_features
from training.bank.in_memory import generate
from training.bank.spec import BankSpec

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
_ids = iter(range(10**9))


def txn(
    at: datetime,
    amount: str,
    direction: str = "credit",
    category: str = "transfer_in",
    customer: str = "C1",
    event_id: str | None = None,
):
    return parse_event(
        {
            "event_id": event_id or f"t{next(_ids)}",
            "customer_id": customer,
            "type": "transaction",
            "occurred_at": at.isoformat(),
            "channel": "core_banking",
            "payload": {
                "amount": amount,
                "currency": "CNY",
                "direction": direction,
                "category": category,
            },
        }
    )


def event(kind: str, at: datetime, customer: str = "C1", **payload):
    return parse_event(
        {
            "event_id": f"e{next(_ids)}",
            "customer_id": customer,
            "type": kind,
            "occurred_at": at.isoformat(),
            "channel": "mobile_app",
            "payload": payload,
        }
    )


def features(events) -> dict[str, float]:
    """One customer's features from events applied in time order."""
    states: dict[str, WindowState] = {}
    apply_events(states, sorted(events, key=lambda e: e.occurred_at))
    (state,) = states.values()
    return dict(zip(FEATURE_NAMES, compute_features([state])[0], strict=True))


def test_windows_are_calendar_days_ending_on_the_as_of_day() -> None:
    f = features(
        [
            txn(NOW - timedelta(days=40), "1000.00"),  # inside 90d only
            txn(NOW - timedelta(days=7), "100.00"),  # day -7: outside 7d, inside 30d
            txn(NOW - timedelta(days=6), "10.00"),  # day -6: inside 7d
            txn(NOW, "1.00"),
        ]
    )
    assert (f["inflow_1d"], f["inflow_7d"], f["inflow_30d"], f["inflow_90d"]) == (
        1.0,
        11.0,
        111.0,
        1111.0,
    )
    assert f["largest_inflow_7d"] == 10.0 and f["largest_inflow_90d"] == 1000.0
    assert f["transactions_30d"] == 3.0
    assert f["large_inflow_share_30d"] == pytest.approx(100 / 111)


def test_categories_pages_applications_and_days_since() -> None:
    f = features(
        [
            txn(NOW - timedelta(days=45), "9000.00", category="salary"),
            txn(NOW - timedelta(days=15), "9900.00", category="salary"),
            txn(NOW - timedelta(days=2), "50.00", "debit", "card_purchase"),
            txn(NOW - timedelta(days=1), "3000.00", "debit", "rent"),
            event("page_view", NOW, page="mortgage_calculator", seconds=30),
            event("page_view", NOW, page="property_listing", seconds=30),
            event("page_view", NOW, page="fund_detail", seconds=30),
            event("login", NOW - timedelta(days=4)),
            event("application", NOW - timedelta(days=3), product="mortgage", status="submitted"),
            event("application", NOW - timedelta(days=3), product="pension", status="submitted"),
            event("application", NOW - timedelta(days=1), product="pension", status="approved"),
            event("contact", NOW, reason="complaint", channel="phone"),
        ]
    )
    assert f["salary_30d"] == 9900.0 and f["salary_count_90d"] == 2.0
    assert f["salary_change_ratio"] == pytest.approx(9900 / 9000)
    assert (f["card_spend_7d"], f["card_count_30d"], f["housing_30d"]) == (50.0, 1.0, 3000.0)
    assert f["outflow_30d"] == 3050.0 and f["net_flow_30d"] == 9900.0 - 3050.0
    assert (f["property_views_1d"], f["mortgage_calculator_views_7d"]) == (2.0, 1.0)
    assert f["investment_views_7d"] == 1.0 and f["page_views_7d"] == 3.0
    assert (f["in_flight_mortgage"], f["in_flight_pension"], f["applications_in_flight"]) == (
        1.0,
        0.0,
        1.0,
    )
    assert (f["complaints_30d"], f["contacts_30d"]) == (1.0, 1.0)
    # The day of the last submission, not of its decision; never applied: not seen.
    assert (f["days_since_applied_mortgage"], f["days_since_applied_pension"]) == (3.0, 3.0)
    assert f["days_since_applied_personal_loan"] == NOT_SEEN_DAYS
    assert (f["days_since_login"], f["days_since_transaction"], f["days_since_page_view"]) == (
        4.0,
        1.0,
        0.0,
    )


def test_fees_loan_calculator_views_and_enquiries_count_as_signs_of_difficulty() -> None:
    f = features(
        [
            txn(NOW - timedelta(days=40), "35.00", "debit", "fee"),
            event("page_view", NOW - timedelta(days=12), page="loan_calculator", seconds=40),
            event("contact", NOW - timedelta(days=2), reason="enquiry", channel="phone"),
            # Not signs of difficulty: a complaint, a service call, another page, a transfer.
            event("contact", NOW, reason="complaint", channel="phone"),
            event("contact", NOW, reason="service", channel="branch"),
            event("page_view", NOW, page="fund_detail", seconds=30),
            txn(NOW, "900.00", "debit", "transfer_out"),
        ]
    )
    assert f["difficulty_signals_30d"] == 2.0  # the fee is 40 days old
    assert f["days_since_first_difficulty_signals"] == 40.0
    assert (f["fee_count_30d"], f["loan_views_30d"], f["contacts_30d"]) == (0.0, 1.0, 3.0)


def test_duplicates_change_nothing_and_late_events_are_counted_not_applied() -> None:
    states: dict[str, WindowState] = {}
    first = txn(NOW, "5.00", event_id="same")
    result = apply_events(states, [first, txn(NOW, "5.00", event_id="same")])
    assert (result.applied, result.duplicates) == (1, 1)
    within = apply_events(states, [txn(NOW - timedelta(days=2), "7.00")])
    late = apply_events(states, [txn(NOW - timedelta(days=4), "100.00")])
    assert within.applied == 1 and (late.applied, late.late) == (0, 1)
    row = dict(zip(FEATURE_NAMES, compute_features([states["C1"]])[0], strict=True))
    assert row["inflow_7d"] == 12.0


def test_state_survives_serialisation_and_old_buckets_are_evicted() -> None:
    states: dict[str, WindowState] = {}
    apply_events(states, [txn(NOW - timedelta(days=95), "1.00")])
    apply_events(states, [txn(NOW, "2.00"), event("login", NOW)])
    state = states["C1"]
    assert set(state.days.tolist()) == {int(NOW.timestamp() * 1e6) // DAY_US}
    again = WindowState.from_bytes(state.to_bytes())
    assert again.as_of_us == state.as_of_us and again.seen == state.seen
    assert np.array_equal(compute_features([again]), compute_features([state]))
    empty = dict(zip(FEATURE_NAMES, compute_features([WindowState(as_of_us=0)])[0], strict=True))
    assert empty["days_since_login"] == NOT_SEEN_DAYS and empty["inflow_90d"] == 0.0


def test_batched_shuffled_duplicated_stream_equals_the_reference() -> None:
    bank = generate(BankSpec(seed=31, customers=400, days=100))
    events = [parse_event(e) for e in bank.event_dicts()]
    rng = random.Random(5)
    arrivals = events + rng.sample(events, 500)  # redeliveries
    # Out of order by up to two days (inside the allowed lateness of three).
    arrivals.sort(key=lambda e: e.occurred_at.timestamp() + rng.uniform(0, 2 * 86_400))
    expected = reference_features(arrivals)
    states: dict[str, WindowState] = {}
    for start in range(0, len(arrivals), 3_000):
        apply_events(states, arrivals[start : start + 3_000])
        states = {c: WindowState.from_bytes(s.to_bytes()) for c, s in states.items()}
    customers = sorted(states)
    matrix = compute_features([states[c] for c in customers])
    assert customers == sorted(expected)
    for row, customer in enumerate(customers):
        as_of, values = expected[customer]
        assert states[customer].as_of_us == round(as_of.timestamp() * 1e6)
        assert np.allclose(matrix[row], [values[n] for n in FEATURE_NAMES], rtol=1e-12, atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["C1", "C2", "C3"]),
            st.integers(0, 120 * 24),  # hours before the end
            st.decimals("0.01", "99999.99", places=2),
            st.booleans(),
            st.sampled_from(["transaction", "login", "page_view"]),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 7),
)
def test_folding_in_batches_gives_the_buckets_of_one_sum_to_the_last_bit(draws, batch) -> None:
    """New contributions merged into months of buckets give exactly what summing every
    contribution at once gives (each bucket's in arrival order), maxima included."""
    end = NOW + timedelta(days=120)
    events = []
    for customer, hours, amount, credit, kind in draws:
        at = end - timedelta(hours=hours)
        if kind == "transaction":
            direction = "credit" if credit else "debit"
            events.append(txn(at, str(amount), direction, customer=customer))
        elif kind == "login":
            events.append(event("login", at, customer))
        else:
            events.append(event("page_view", at, customer, page="mortgage_calculator"))
    events.sort(key=lambda e: e.occurred_at)  # in order: nothing is late
    states: dict[str, WindowState] = {}
    for start in range(0, len(events), batch):
        apply_events(states, events[start : start + batch])
        states = {c: WindowState.from_bytes(s.to_bytes()) for c, s in states.items()}
    for customer, state in states.items():
        mine = [e for e in events if e.customer_id == customer]
        assert state.row_time_us is not None
        today = state.row_time_us // DAY_US
        parts = [
            (epoch_micros(e.occurred_at) // DAY_US, m, v) for e in mine for m, v in contributions(e)
        ]
        days = np.array([d for d, _, _ in parts], np.int64)
        measures = np.array([m for _, m, _ in parts], np.int64)
        values = np.array([v for _, _, v in parts])
        _, day, measure, value = combine_buckets(
            np.zeros(len(parts), np.int64), days, measures, values
        )
        inside = day > today - MAX_DAYS
        assert state.days.tolist() == day[inside].tolist()
        assert state.measures.tolist() == measure[inside].tolist()
        assert state.values.tobytes() == value[inside].tobytes()


def test_a_state_whose_buckets_are_out_of_order_is_merged_all_the_same() -> None:
    """Buckets this code did not write (out of order) are sorted with the new ones, not lost."""
    day = epoch_micros(NOW) // DAY_US
    logins = contributions(event("login", NOW))[0][0]
    pages = contributions(event("page_view", NOW, page="home"))[0][0]
    state = WindowState(
        as_of_us=epoch_micros(NOW),
        days=np.array([day, day - 1], np.int32),  # newest first: not this module's order
        measures=np.array([logins, logins], np.int8),
        values=np.array([2.0, 1.0]),
    )
    states = {"C1": state}
    apply_events(states, [event("login", NOW), event("page_view", NOW, page="home")])
    merged = states["C1"]
    assert merged.days.tolist() == [day - 1, day, day]
    today = {logins: 3.0, pages: 1.0}  # two stored logins and one new; one new page view
    assert merged.measures.tolist() == [logins, *sorted(today)]
    assert merged.values.tolist() == [1.0, *(today[m] for m in sorted(today))]
