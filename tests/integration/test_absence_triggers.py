"""An expected event that does not come is a trigger. Day by day on a simulated clock, through
the real stream worker, its timers, the alerter and the gate (embedded stores): a customer whose
salary stops gets the income check-in and an RM alert within one day of the date it was
missed; one whose salary comes on time (brought forward over a weekend) gets none; a customer
who stops logging in gets a check-in on the 60th day."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import NEEDS, ConsentChannel, Purpose
from consent.stores.customers import KnownCustomer
from service.bootstrap import Container
from service.usecases import pipeline
from service.usecases.alert_model import Alert
from service.usecases.alerter import Alerter
from service.usecases.decisions import DecisionService
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.ports import FixedModels
from tests.doubles import GOOD_STANDING, ConfidentModel

SALARY_DAY = 14  # November 14th, 2026 is a Saturday: paid on Friday the 13th
# Ids that appear nowhere else in a record (a trigger is named "salary_missed").
MISSED, ON_TIME, LAPSED, TICK = "C0000901", "C0000902", "C0000903", "C0000999"
LAST_LOGIN = date(2026, 9, 10)
START = date(2026, 8, 1)
GRANTS: tuple[tuple[Purpose, ConsentChannel], ...] = (("service", "rm"), ("profiling", "any"))


def _at(day: date, hour: int = 10) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _event_id(kind: str, customer: str, day: date) -> str:
    """An id that does not carry the customer's (a decision record must not)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{kind}/{customer}/{day}"))


def _salary(customer: str, day: date) -> dict[str, Any]:
    return {
        "event_id": _event_id("salary", customer, day),
        "customer_id": customer,
        "type": "transaction",
        "occurred_at": _at(day).isoformat(),
        "channel": "core_banking",
        "payload": {
            "amount": "4200.00",
            "currency": "EUR",
            "direction": "credit",
            "category": "salary",
        },
    }


def _login(customer: str, day: date) -> dict[str, Any]:
    return {
        "event_id": _event_id("login", customer, day),
        "customer_id": customer,
        "type": "login",
        "occurred_at": _at(day, 12).isoformat(),
        "channel": "mobile_app",
        "payload": {"method": "password"},
    }


def _events(day: date) -> list[dict[str, Any]]:
    """What happens on ``day``: salaries on the 14th (the 13th in November), the lapsed
    customer's logins until 10 September, and a ticker's login every day."""
    out = [_login(TICK, day)]
    paid = date(2026, 11, 13) if day.month == 11 else day.replace(day=SALARY_DAY)
    if day == paid:
        out += [_salary(ON_TIME, day)]
        if day.month < 11:
            out += [_salary(MISSED, day)]
    if day <= LAST_LOGIN and day.day in (1, 10, 20):
        out += [_login(LAPSED, day)]
    return out


class Silent(ConfidentModel):
    """A model that scores every need low: only the rule triggers can raise an alert."""

    def probability(self, row: Any) -> float:
        return 0.01


@pytest.fixture
def simulated(embedded: Container):
    """The worker, the decision service and the alerter on one simulated clock."""
    now = [_at(START, 0)]
    people = [MISSED, ON_TIME, LAPSED]
    facts = GOOD_STANDING.model_copy(update={"risk_assessed_at": now[0]})
    embedded.directory.upsert(KnownCustomer(c, f"H{n}", "RM1", facts) for n, c in enumerate(people))
    embedded.registry.record(
        ConsentGiven(
            customer_id=c,
            purpose=purpose,
            channel=channel,
            granted=True,
            recorded_at=now[0],
            source="test",
            notice_version="v1",
        )
        for c in people
        for purpose, channel in GRANTS
    )
    decisions = DecisionService(
        embedded.registry,
        embedded.directory,
        embedded.contacts,
        embedded.features,
        FixedModels({need: Silent(need) for need in NEEDS}),
        embedded.catalog,
        embedded.policy,
        embedded.audit,
        embedded.gate_reads,
        clock=lambda: now[0],
    )
    alerter = Alerter(
        decisions,
        embedded.alert_store,
        embedded.alert_policy,
        embedded.catalog,
        embedded.alert_memory(),
        clock=lambda: now[0],
    )
    worker = embedded.worker(clock=lambda: round(now[0].timestamp() * 1e6))
    changed: dict[str, Origin | TimerOrigin | None] = {}
    worker.on_features = changed.update
    try:
        yield embedded, worker, alerter, changed, now
    finally:
        worker.close()


def _run_days(simulated, first: date, last: date) -> dict[date, list[Alert]]:
    """The events before ``first`` stream in at once; then each day's events do, and at a
    minute past the next midnight the worker has fired the timers due by then and the alerter
    has looked at every customer changed. The alerts raised, by the day they were raised."""
    container, worker, alerter, changed, now = simulated
    raised: dict[date, list[Alert]] = {}
    day, days = START, []
    while day <= last:
        days.append(day)
        if day >= first:
            pipeline.publish_events(container, [e for d in days for e in _events(d)])
            days = []
            now[0] = _at(day + timedelta(days=1), 0) + timedelta(minutes=1)
            worker.run(idle_exit_s=0.2)
            container.features.pipeline.refresh()
            raised[day + timedelta(days=1)] = alerter.process(dict(changed))
            changed.clear()
        day += timedelta(days=1)
    return raised


def _of(raised: Mapping[date, list[Alert]], customer: str) -> dict[date, list[Alert]]:
    return {d: [a for a in alerts if a.customer_id == customer] for d, alerts in raised.items()}


def test_a_salary_that_does_not_come_raises_the_income_check_in(simulated) -> None:
    raised = _run_days(simulated, date(2026, 10, 31), date(2026, 11, 20))
    container = simulated[0]

    # Expected on 14 November (a Saturday), so two working days after it are Monday 16 and
    # Tuesday 17: at the start of Wednesday 18 the alert is raised, within a day of the miss.
    missed = {d: a for d, a in _of(raised, MISSED).items() if a}
    assert list(missed) == [date(2026, 11, 18)]
    [alert] = missed[date(2026, 11, 18)]
    assert alert.action_id == "income_change_check_in" and alert.triggers == ("salary_missed",)
    assert alert.status == "open" and alert.rm_id == "RM1"
    assert "working days the salary is overdue: 2" in alert.talking_points
    assert alert.origin == {"timer": "2026-11-18T00:00:00Z"}
    # The decision record says a timer raised it, and what the gate checked.
    [record] = [
        e["record"]
        for e in container.audit.export()
        if e["record"]["decision_id"] == alert.decision_id
    ]
    assert record["channel"] == "rm" and record["delivered"] == ["income_change_check_in"]
    assert record["trigger"]["fired"] == ["salary_missed"]
    assert record["trigger"]["timer"] == "2026-11-18T00:00:00Z"

    # Paid on Friday the 13th, a day before the usual date: no alert, ever.
    assert not any(_of(raised, ON_TIME).values())
    online = container.features.read(ON_TIME)
    assert online.values["salary_overdue_days"] == 0.0

    # Last login on 10 September: 60 days later, on 9 November, an RM check-in.
    lapsed = {d: a for d, a in _of(raised, LAPSED).items() if a}
    assert list(lapsed) == [LAST_LOGIN + timedelta(days=60)]
    [check_in] = lapsed[LAST_LOGIN + timedelta(days=60)]
    assert check_in.action_id == "online_lapse_check_in"
    assert check_in.triggers == ("online_lapse",)
