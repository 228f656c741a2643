"""Property: over any interleaving of grants, withdrawals and decisions, for many customers and
across two API processes (two engines on one operational store), no marketing action is ever
delivered without marketing consent for the channel (and profiling consent when scored by a
personal model) valid at decision time; and when consent is valid and nothing else stands in
the way, the action is delivered (so the property is not satisfied by delivering nothing)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from consent.rules.model import ConsentGiven
from consent.stores.customers import KnownCustomer
from consent.stores.store import connect
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.decisions import DecisionService
from tests.doubles import GOOD_STANDING, decision_service

CUSTOMERS = 3
#: mobile_app and rm have no quiet hours; email has.
CHANNELS = ("mobile_app", "email", "rm")


@pytest.fixture(scope="module")
def processes(tmp_path_factory) -> Iterator[tuple[DecisionService, DecisionService]]:
    """Two decision services on separate engines over one store, like two API processes."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('store')) / 'nextbest.db'}"
    engines = [connect(url), connect(url)]
    services = tuple(decision_service(engine) for engine in engines)
    yield services  # type: ignore[misc]
    for engine in engines:
        engine.dispose()


_customer = st.integers(0, CUSTOMERS - 1)
_channel = st.sampled_from(CHANNELS)
_step = st.one_of(
    st.tuples(st.sampled_from(["grant", "withdraw"]), _customer, st.just("marketing"), _channel),
    st.tuples(
        st.sampled_from(["grant", "withdraw"]), _customer, st.just("profiling"), st.just("any")
    ),
    st.tuples(st.just("decide"), _customer, st.integers(0, 1), _channel),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(_step, min_size=8, max_size=40))
def test_no_marketing_action_is_delivered_without_valid_consent(processes, steps) -> None:
    writer, _ = processes
    run = uuid.uuid4().hex[:8]
    ids = [f"P{run}{i}" for i in range(CUSTOMERS)]
    writer.directory.upsert(
        KnownCustomer(c, f"H{run}{i}", None, GOOD_STANDING) for i, c in enumerate(ids)
    )
    valid: dict[tuple[str, str, str], bool] = {}  # the reference: the last acknowledged choice
    for kind, who, purpose_or_process, channel in steps:
        customer = ids[who]
        if kind in ("grant", "withdraw"):
            writer.registry.record(
                [
                    ConsentGiven(
                        customer_id=customer,
                        purpose=purpose_or_process,
                        channel=channel,
                        granted=kind == "grant",
                        recorded_at=datetime.now(UTC),
                        source="property_test",
                        notice_version="v1",
                    )
                ]
            )
            valid[(customer, purpose_or_process, channel)] = kind == "grant"
            continue
        service = processes[int(purpose_or_process)]
        made = service.decide(DecideForCustomer(customer, channel))
        marketing = valid.get((customer, "marketing", channel), False)
        profiling = valid.get((customer, "profiling", "any"), False)
        for action_id in made.record.delivered:
            action = service.catalog.actions[action_id]
            if action.purpose == "marketing":
                event("a marketing action was delivered")
                assert marketing, f"{action_id} delivered on {channel} without marketing consent"
                if action.need is not None:
                    assert profiling, f"{action_id} delivered without profiling consent"
        if marketing and profiling and channel == "mobile_app":
            sales = [a for a in made.record.delivered if service.catalog.actions[a].kind == "sales"]
            control = made.record.control
            if control is not None and control.group == "control":
                # The universal control group (ids are random: 2% of customers) gets no sales
                # action whatever her consents: the lift is measured against her.
                event("the customer is in the universal control group")
                assert not sales, f"{sales} delivered to the universal control group"
            else:
                assert sales, "valid consent and nothing in the way, yet no sales action delivered"
