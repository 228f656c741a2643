"""Time bounds in the stream: one event dated in the future does not freeze a customer's
features, whether the worker meets it (dead-lettered) or a state already holds it (from before
event times were bounded): lateness is measured against the earlier of the customer's latest
event time and the server's clock plus the allowed skew."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from feature_repo.arrival import apply_events
from feature_repo.buckets import WindowState
from feature_repo.events import parse_event
from feature_repo.reference import reference_features
from service.adapters.transport import DLQ_TOPIC
from service.bootstrap import Container
from service.usecases import pipeline
from tests.integration.test_stream_poison import login

NOW = datetime.now(UTC).replace(microsecond=0)
CEILING_US = round((NOW + timedelta(minutes=5)).timestamp() * 1_000_000)


def page_view(event_id: str, at: datetime, customer: str = "C1") -> dict[str, Any]:
    return login(event_id, customer, at, type="page_view", payload={"page": "mortgage_calculator"})


def test_an_event_after_the_ceiling_is_not_applied_and_later_real_events_are() -> None:
    states: dict[str, WindowState] = {}
    future = parse_event(page_view("f", datetime(2099, 1, 1, tzinfo=UTC)))
    real = [parse_event(page_view(f"r{i}", NOW - timedelta(hours=i))) for i in range(3)]
    applied = apply_events(states, [future, *real], ceiling_us=CEILING_US)
    assert (applied.applied, applied.future, applied.late) == (3, 1, 0)
    assert states["C1"].as_of_us == round(NOW.timestamp() * 1_000_000)


def test_a_state_already_in_the_future_does_not_make_real_events_late() -> None:
    states: dict[str, WindowState] = {}
    apply_events(states, [parse_event(page_view("f", datetime(2099, 1, 1, tzinfo=UTC)))])
    stored = states["C1"].as_of_us
    assert stored is not None and stored > CEILING_US  # what an unbounded stream once stored
    real = [parse_event(page_view(f"r{i}", NOW - timedelta(hours=i))) for i in range(3)]
    applied = apply_events(states, real, ceiling_us=CEILING_US)
    assert (applied.applied, applied.late) == (3, 0)
    stored = states["C1"].as_of_us
    assert stored is not None and stored <= CEILING_US
    # Without the ceiling, the same events were all late: the customer was frozen.
    frozen: dict[str, WindowState] = {}
    apply_events(frozen, [parse_event(page_view("f", datetime(2099, 1, 1, tzinfo=UTC)))])
    assert apply_events(frozen, real).late == 3


def test_the_stream_dead_letters_a_future_event_and_applies_those_after_it(
    embedded: Container,
) -> None:
    events = [
        page_view("before", NOW - timedelta(days=2)),
        page_view("future", datetime(2099, 6, 1, tzinfo=UTC)),
        page_view("ancient", datetime(1970, 1, 1, tzinfo=UTC)),
        page_view("after-1", NOW - timedelta(days=1)),
        page_view("after-2", NOW - timedelta(hours=1)),
    ]
    pipeline.publish_events(embedded, events)
    stats = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert (stats.events, stats.late, stats.dead_letters) == (3, 0, 2)
    reasons = [json.loads(r.value or b"") for r in embedded.consumer(DLQ_TOPIC).poll(10, 0)]
    assert [(r["error"], r["origin"]["offset"]) for r in reasons] == [
        ("out_of_bounds", 1),
        ("out_of_bounds", 2),
    ]
    kept = [parse_event(e) for e in events if e["event_id"] not in ("future", "ancient")]
    as_of, values = reference_features(kept, now=datetime.now(UTC))["C1"]  # timers: now's day
    online = embedded.features.read("C1")
    assert online.as_of is not None and abs((online.as_of - as_of).total_seconds()) < 1
    assert (
        online.values["mortgage_calculator_views_7d"] == values["mortgage_calculator_views_7d"] == 3
    )


def test_a_window_state_refuses_an_id_that_would_corrupt_it() -> None:
    state = WindowState(as_of_us=0, seen={"fine": 1, "evil\nid": 2})
    with pytest.raises(ValueError, match="newline"):
        state.to_bytes()
    kept = WindowState(as_of_us=0, seen={"a:b.c-d_e": 1, "f": 2})
    assert WindowState.from_bytes(kept.to_bytes()).seen == kept.seen
