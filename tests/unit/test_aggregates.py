import random
from datetime import UTC, datetime, timedelta

from feature_repo.aggregates import CustomerWindows, batch_features
from feature_repo.events import parse_event

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def txn(n: int, at: datetime, amount: str, direction: str = "credit", customer: str = "C1"):
    return parse_event(
        {
            "event_id": f"e{n}",
            "customer_id": customer,
            "type": "transaction",
            "occurred_at": at.isoformat(),
            "channel": "core_banking",
            "payload": {
                "amount": amount,
                "currency": "CNY",
                "direction": direction,
                "category": "transfer_in" if direction == "credit" else "card_purchase",
            },
        }
    )


def view(n: int, at: datetime, page: str, customer: str = "C1"):
    return parse_event(
        {
            "event_id": f"v{n}",
            "customer_id": customer,
            "type": "page_view",
            "occurred_at": at.isoformat(),
            "channel": "mobile_app",
            "payload": {"page": page, "seconds": 30},
        }
    )


def test_seven_day_window_covers_the_as_of_day_and_six_before() -> None:
    windows = CustomerWindows()
    windows.add(txn(1, NOW - timedelta(days=7), "100.00"))  # day -7: outside 7d, inside 30d
    windows.add(txn(2, NOW - timedelta(days=6), "10.00"))  # day -6: inside
    windows.add(txn(3, NOW, "1.00"))
    features = windows.features()
    assert features["inflow_7d"] == 11.0
    assert features["inflow_30d"] == 111.0
    assert features["largest_inflow_30d"] == 100.0
    assert features["transactions_30d"] == 3.0
    assert windows.as_of == NOW


def test_debits_and_page_topics_go_to_their_own_features() -> None:
    windows = CustomerWindows()
    windows.add(txn(1, NOW, "50.00", "debit"))
    windows.add(view(1, NOW, "mortgage_calculator"))
    windows.add(view(2, NOW, "property_listing"))
    windows.add(view(3, NOW, "card_offer"))
    features = windows.features()
    assert features["outflow_30d"] == 50.0
    assert features["inflow_30d"] == 0.0
    assert features["property_views_7d"] == 2.0


def test_buckets_older_than_the_longest_window_are_evicted() -> None:
    windows = CustomerWindows()
    windows.add(txn(1, NOW - timedelta(days=40), "100.00"))
    windows.add(txn(2, NOW, "1.00"))
    assert len(windows.buckets) == 1
    assert windows.features()["inflow_30d"] == 1.0


def test_stream_order_does_not_matter_batch_equals_shuffled_stream() -> None:
    rng = random.Random(3)
    events = [
        txn(
            i,
            NOW - timedelta(hours=rng.randint(0, 24 * 45)),
            f"{rng.randint(1, 9999)}.00",
            rng.choice(["credit", "debit"]),
            customer=f"C{i % 7}",
        )
        for i in range(600)
    ] + [
        view(
            i,
            NOW - timedelta(hours=rng.randint(0, 24 * 45)),
            rng.choice(["property_listing", "fund_detail"]),
            customer=f"C{i % 7}",
        )
        for i in range(300)
    ]
    expected = batch_features(sorted(events, key=lambda e: e.occurred_at))
    shuffled = events[:]
    rng.shuffle(shuffled)
    assert batch_features(shuffled) == expected
    assert len(expected) == 7
