"""The gate withholds a need's actions when no model of it is served (the quality floor's
consequence; the floor itself is in tests/unit/test_quality_floor.py)."""

from __future__ import annotations

from consent.stores.customers import KnownCustomer
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.ports import FixedModels
from tests.doubles import GOOD_STANDING, decision_service, grant_all


def test_without_a_served_model_the_needs_actions_are_withheld_with_no_model(embedded) -> None:
    service = decision_service(embedded.engine)
    service.models = FixedModels(
        {n: m for n, m in service.models.snapshot().items() if n != "mortgage"}
    )
    grant_all(service.registry, "K1", "mobile_app")
    service.directory.upsert([KnownCustomer("K1", None, None, GOOD_STANDING)])
    made = service.decide(DecideForCustomer("K1", "mobile_app"))
    candidates = {c.action_id: c for c in made.record.candidates}
    mortgage = candidates["mortgage_consultation"]
    assert not mortgage.delivered and "NO_MODEL" in mortgage.suppressed_by
    assert "mortgage" not in (made.record.gate.models_served or ())  # type: ignore[union-attr]
    # The other needs' actions are not touched by it.
    others = [c for c in candidates.values() if c.need not in (None, "mortgage")]
    assert others and not any("NO_MODEL" in c.suppressed_by for c in others)
