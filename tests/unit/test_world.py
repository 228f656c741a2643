"""The bank that answers back: the same seed gives the same world; with no contact it lives
exactly its counterfactual; contacts move persuadable customers, put off the ones who do not
want to be disturbed, and cause on average what the oracle says they cause."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from training.bank import response
from training.bank.spec import BankSpec, lively
from training.bank.world import Answer, Delivery, World

END = datetime(2026, 11, 1, tzinfo=UTC)
SPEC = BankSpec(seed=11, customers=3_000, days=150, end=END, situations=lively())
SIMULATED = 30


@pytest.fixture(scope="module")
def pristine() -> World:
    return World(SPEC, 0, SIMULATED)


def test_the_same_seed_gives_the_same_world(pristine: World) -> None:
    again = World(SPEC, 0, SIMULATED)
    assert again.events.equals(pristine.events)
    assert np.array_equal(again.types, pristine.types)
    assert np.array_equal(again.uniforms, pristine.uniforms)


def test_without_contact_the_world_is_its_own_counterfactual() -> None:
    world = World(SPEC, 0, SIMULATED)
    days = [world.end_day(d) for d in range(world.history, world.history + SIMULATED)]
    assert sum(d.applied for d in days) > 0
    assert all(d.applied == d.applied_without for d in days)
    assert world.applied == world.applied_without


def _deliver_everyone(
    world: World, need: str, action_id: str, channel: str, at: datetime
) -> tuple[np.ndarray, list[Answer]]:
    rows = np.arange(len(world.ids))
    expected = world.uplift(rows, need, channel, at)
    deliveries = [
        Delivery(customer_id, action_id, need, channel, at, f"d-{i}")
        for i, customer_id in enumerate(world.ids)
    ]
    return expected, world.respond(deliveries)


def test_contacts_cause_on_average_what_the_oracle_says() -> None:
    world = World(SPEC, 0, SIMULATED)
    first = world.history
    at = world.start_of(first) + timedelta(hours=3)  # 11:00 in Shanghai, 03:00 in London
    expected = 0.0
    plan = [
        ("mortgage", "mortgage_consultation", "rm"),
        ("credit_card", "credit_card_offer", "mobile_app"),
        ("personal_loan", "personal_loan_offer", "email"),
        ("term_deposit", "term_deposit_offer", "mobile_app"),
    ]
    for need, action_id, channel in plan:
        uplift, _ = _deliver_everyone(world, need, action_id, channel, at)
        expected += float(uplift.sum())
    for day in range(first, first + SIMULATED):
        world.end_day(day)
    caused = sum(
        world.incremental(row, need, first, first + SIMULATED)
        for row in range(len(world.ids))
        for need, _, _ in plan
    )
    # Each customer's difference is -1, 0 or 1; their variance is at most their chance of
    # applying in either world, which the expected count bounds well above.
    assert caused > 0
    assert abs(caused - expected) < 4 * (abs(expected) + 10) ** 0.5


def test_persuadable_customers_are_moved_and_the_disturbed_put_off() -> None:
    world = World(SPEC, 0, SIMULATED)
    at = world.start_of(world.history) + timedelta(hours=3)
    rows = np.arange(len(world.ids))
    uplift = world.uplift(rows, "mortgage", "rm", at)
    kinds = world.types[:, 0]
    assert uplift[kinds == response.PERSUADABLE].mean() > 0
    assert (uplift[kinds == response.DO_NOT_DISTURB] <= 0).all()
    assert (uplift[kinds == response.SURE_THING] == 0).all()
    _, answers = _deliver_everyone(world, "mortgage", "mortgage_consultation", "phone", at)
    seen = [a for a in answers if a.seen]
    by_type = {
        t: [a for a in seen if world.types[world.row(a.delivery.customer_id), 0] == t]
        for t in (response.PERSUADABLE, response.DO_NOT_DISTURB)
    }
    complaint_rate = {t: np.mean([a.complained for a in v]) for t, v in by_type.items()}
    assert complaint_rate[response.DO_NOT_DISTURB] > 5 * complaint_rate[response.PERSUADABLE]
    # A complaint and an opt-out come back as events of the day.
    events = world.events_between(at, at + timedelta(hours=3))
    kinds_seen = {e["type"] for e in events if e["event_id"].startswith(f"E{SPEC.seed}-0-s")}
    assert kinds_seen == {"contact", "consent_changed"}


def test_fatigue_wears_the_effect_off() -> None:
    recent = np.arange(0, 10)
    left = response.fatigue(recent)
    assert left[0] == left[2] == 1.0
    assert all(np.diff(left) <= 0)
    assert left[response.WORN_OUT] == 0.0


def test_an_answer_does_not_depend_on_what_else_the_bank_did() -> None:
    # Counter-based draws: the same delivery gets the same answer in a world where other
    # customers were contacted first (policies compare on common random numbers).
    a, b = World(SPEC, 0, SIMULATED), World(SPEC, 0, SIMULATED)
    at = a.start_of(a.history) + timedelta(hours=3)
    target = Delivery(a.ids[42], "credit_card_offer", "credit_card", "sms", at, "d")
    others = [Delivery(c, "credit_card_offer", "credit_card", "sms", at, "o") for c in a.ids[:40]]
    b.respond(others)
    assert a.respond([target]) == b.respond([target])


def test_every_application_drawn_reaches_the_stream_even_after_its_time() -> None:
    """An application is drawn at the end of its day with a time during the day, after the
    day's events were released: it is released with the next ones (late, as real events
    arrive), never lost, at the time both worlds give it."""
    world = World(SPEC, 0, SIMULATED)
    day = world.history
    midnight = world.start_of(day + 1)
    world.events_between(world.start_of(day), midnight)  # the day, released before the draw
    drawn = world.end_day(day)
    assert drawn.applied > 0
    released = world.events_between(midnight, midnight + timedelta(hours=1))
    applications = [
        e for e in released if e["type"] == "application" and e["payload"]["status"] == "submitted"
    ]
    assert len(applications) == drawn.applied
    expected = sorted(
        world.applied_at(r, k, d).strftime("%Y-%m-%dT%H:%M:%SZ")
        for (r, k), days in world.applied.items()
        for d in days
    )
    assert sorted(e["occurred_at"] for e in applications) == expected
    again = world.events_between(midnight, midnight + timedelta(hours=1))
    assert not {e["event_id"] for e in again} & {e["event_id"] for e in applications}
