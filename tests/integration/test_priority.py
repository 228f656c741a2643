"""Arbitration by priority = calibrated propensity × action value × context weight × business
lever, each term recorded; at most one action per need; service actions compete on the same
scale."""

from __future__ import annotations

from consent.stores.customers import KnownCustomer
from service.usecases.decision_messages import DecideForCustomer
from tests.doubles import GOOD_STANDING, decision_service, grant_all


def _decide(embedded, **context: str):
    service = decision_service(embedded.engine)
    service.directory.upsert([KnownCustomer("P1", "HP1", None, GOOD_STANDING)])
    grant_all(service.registry, "P1", "mobile_app")
    return service.decide(DecideForCustomer("P1", "mobile_app", limit=3, context=context))


def test_every_term_of_the_priority_is_recorded(embedded) -> None:
    made = _decide(embedded)
    for c in made.record.candidates:
        assert c.priority == round(c.propensity * c.value * c.context_weight * c.lever, 6)
        assert c.propensity == (c.score if c.score is not None else 1.0)
    needs = [c.need for c in made.record.candidates if c.delivered and c.need]
    assert len(needs) == len(set(needs))  # at most one action per need


def test_the_page_being_viewed_raises_its_topic(embedded) -> None:
    plain = {c.action_id: c for c in _decide(embedded).record.candidates}
    on_page = _decide(embedded, page="mortgage_calculator")
    mortgage = next(c for c in on_page.record.candidates if c.action_id == "mortgage_consultation")
    assert mortgage.context_weight == 2.0
    assert mortgage.priority == 2 * plain["mortgage_consultation"].priority
    pension = next(c for c in on_page.record.candidates if c.action_id == "pension_review")
    assert pension.context_weight == 1.0
    # All scores tie (0.9), so the mortgage's context weight puts it first.
    assert on_page.record.delivered[0] == "mortgage_consultation"
