import json
from typing import Any

import pytest

from feature_repo.events import InvalidEvent, event_to_json, parse_event

VALID: dict[str, Any] = {
    "event_id": "7f6c",
    "customer_id": "C0001234",
    "type": "transaction",
    "occurred_at": "2026-11-29T05:28:27+08:00",
    "channel": "mobile_app",
    "schema_version": 1,
    "payload": {
        "amount": "600000.00",
        "currency": "CNY",
        "direction": "credit",
        "category": "transfer_in",
    },
}


def test_design_example_parses_and_round_trips_in_utc() -> None:
    event = parse_event(json.dumps(VALID))
    again = json.loads(event_to_json(event))
    assert again["occurred_at"] == "2026-11-28T21:28:27Z"
    assert again["payload"]["amount"] == "600000.00"
    assert parse_event(event_to_json(event)) == event


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"occurred_at": "2026-11-29T05:28:27"}, "occurred_at"),  # no offset: ambiguous time
        ({"type": "teleport"}, "type"),
        ({"customer_id": ""}, "customer_id"),
        ({"payload": {**VALID["payload"], "amount": "-5"}}, "amount"),
        ({"payload": {**VALID["payload"], "direction": "sideways"}}, "direction"),
        ({"schema_version": 2}, "schema_version"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_invalid_events_name_what_is_wrong(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        parse_event(json.dumps({**VALID, **change}))
    assert where in raised.value.reason


def test_not_json_is_an_invalid_event() -> None:
    with pytest.raises(InvalidEvent, match="Invalid JSON"):
        parse_event(b"\xff\xfe not json")
