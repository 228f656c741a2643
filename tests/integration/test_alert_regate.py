"""RM alerts pass the gate again when they reach the RM (service/usecases/regate.py), on the
embedded store: which rules withdraw an alert and which do not, what the RM, compliance and the
topic see, how a withdrawal is logged (a record that replays like any decision), what happens when
it cannot be logged, and that the gate reads each customer once per look."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from consent.rules.documents import PolicyError
from consent.rules.simulate import replay
from consent.stores.contacts import ContactMade
from consent.stores.customers import KnownCustomer
from consent.stores.reads import GateRead, GateReads
from consent.stores.tables import audit_log
from service.bootstrap import Container
from service.errors import AuditUnavailable
from service.usecases.alert_model import Alert, shown_to
from service.usecases.regate import AlertGate
from tests.doubles import GOOD_STANDING, choose, grant_all, sample_alert

RM = "RM0001"


def _raise(container: Container, customer_id: str, action_id: str = "mortgage_consultation"):
    need = container.catalog.actions[action_id].need
    alert = sample_alert(customer_id, RM, f"a-{uuid.uuid4().hex[:8]}").model_copy(
        update=dict(action_id=action_id, need=need, topic=need or action_id)
    )
    alert = alert.model_copy(update=dict(decision_id=str(uuid.uuid4())))
    [stored] = container.alert_store.add([alert], 10_000, datetime.now(UTC))
    return stored


def _known(container: Container, customer_id: str, **facts) -> None:
    fact_sheet = GOOD_STANDING.model_copy(update=facts)
    container.directory.upsert([KnownCustomer(customer_id, None, RM, fact_sheet)])


def _status(container: Container, alert: Alert) -> Alert:
    stored = container.alert_store.get(alert.alert_id)
    assert stored is not None
    return stored


_SEQUENCE = itertools.count()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    marketing=st.booleans(),
    profiling=st.booleans(),
    do_not_contact=st.booleans(),
    vulnerable=st.booleans(),
    kyc=st.sampled_from(["complete", "pending", "expired", "unknown"]),
    aml=st.booleans(),
    complaint=st.booleans(),
)
def test_an_alert_stays_open_exactly_while_consent_and_the_customer_allow_it(
    embedded: Container,
    marketing: bool,
    profiling: bool,
    do_not_contact: bool,
    vulnerable: bool,
    kyc: str,
    aml: bool,
    complaint: bool,
) -> None:
    customer = f"P{next(_SEQUENCE):07d}"
    _known(embedded, customer)
    grant_all(embedded.registry, customer, "rm")
    alert = _raise(embedded, customer)  # a sales action, by a personal model
    _known(
        embedded,
        customer,
        do_not_contact=do_not_contact,
        vulnerable=vulnerable,
        kyc_status=kyc,
        aml_flag=aml,
        open_complaint=complaint,
    )
    choose(embedded.registry, customer, "marketing", "rm", marketing)
    choose(embedded.registry, customer, "profiling", "any", profiling)

    listed = embedded.alert_inbox.alerts(RM, None, 500).alerts
    [now] = [a for a in listed if a.alert_id == alert.alert_id]
    allowed = (
        marketing
        and profiling
        and not (do_not_contact or vulnerable or aml or complaint)
        and kyc == "complete"
    )
    assert now.status == ("open" if allowed else "withdrawn")
    assert _status(embedded, alert).status == now.status  # stored, not only shown
    if not allowed:
        assert now.withdrawal is not None
        consent_failed = not (marketing and profiling)
        assert now.withdrawal.notice == ("consent_withdrawn" if consent_failed else "not_allowed")


def test_what_was_judged_when_the_alert_was_raised_does_not_withdraw_it(embedded) -> None:
    """A decline of another action for the same need (cool-off) or a product now held are not
    among the rules asked again: the alert was allowed under them, and contacts no one."""
    _known(embedded, "C1")
    grant_all(embedded.registry, "C1", "rm")
    alert = _raise(embedded, "C1")
    _known(embedded, "C1", holds=("mortgage",))
    embedded.contacts.record(
        [
            ContactMade(
                customer_id="C1",
                occurred_at=datetime.now(UTC),
                channel="mobile_app",
                kind="decline",
                need="mortgage",
                action_id="mortgage_consultation",
            )
        ]
    )
    [listed] = embedded.alert_inbox.alerts(RM, "open", 10).alerts
    assert listed.alert_id == alert.alert_id


def test_an_unknown_customer_or_a_retired_action_is_withdrawn_with_one_reason(embedded) -> None:
    _known(embedded, "C1")
    grant_all(embedded.registry, "C1", "rm")
    retired = _raise(embedded, "C1").model_copy(update=dict(action_id="retired_offer"))
    nobody = _raise(embedded, "C2")  # not in the directory
    regated = embedded.alert_gate.check([retired, nobody], datetime.now(UTC), "list")
    reasons = {a.alert_id: a.withdrawal.reason_codes for a in regated.withdrawn if a.withdrawal}
    assert reasons == {
        retired.alert_id: ("ACTION_RETIRED",),
        nobody.alert_id: ("CUSTOMER_UNKNOWN",),
    }
    for alert in regated.withdrawn:
        assert alert.withdrawal is not None
        entry = embedded.audit.get(alert.withdrawal.decision_id)
        assert entry is not None
        record = entry["record"]
        # No invented facts: no rule was asked about what is not known.
        assert (record["candidates"], record["reason_codes"]) == (
            [],
            list(alert.withdrawal.reason_codes),
        )


def test_a_withdrawal_record_replays_unchanged_under_the_same_policy(embedded) -> None:
    for customer, change in (("C1", {"vulnerable": True}), ("C2", {"aml_flag": True})):
        _known(embedded, customer)
        grant_all(embedded.registry, customer, "rm")
        _raise(embedded, customer)
        _raise(embedded, customer, "term_deposit_offer")
        _known(embedded, customer, **change)
    choose(embedded.registry, "C1", "marketing", "rm", False)
    assert len([a for a in embedded.alert_inbox.alerts(RM, None, 10).alerts]) == 4
    records = [entry["record"] for entry in embedded.audit.export()]
    assert len(records) == 4
    report = replay(records, embedded.policy, embedded.catalog).as_dict()
    assert (report["replayed"], report["changed_decisions"]) == (4, 0)
    assert report["newly_suppressed_by_rule"] == report["newly_allowed_by_rule"] == {}


def test_the_rm_and_the_topic_see_the_notice_compliance_sees_the_reasons(embedded) -> None:
    _known(embedded, "C1")
    grant_all(embedded.registry, "C1", "rm")
    opened = _raise(embedded, "C1")
    published: list[Alert] = []
    embedded.alert_feed.send = published.extend
    _known(embedded, "C1", aml_flag=True)
    [withdrawn] = embedded.alert_inbox.alerts(RM, None, 10).alerts
    assert withdrawn.withdrawal is not None
    assert withdrawn.withdrawal.reason_codes == ("AML_FLAG",)
    assert withdrawn.withdrawal.text == "no longer allowed by the bank's rules"
    [rm_view] = shown_to("rm", [withdrawn])
    [on_topic] = published
    for seen in (rm_view, on_topic, *shown_to("admin", [withdrawn])):
        assert seen.withdrawal is not None and seen.withdrawal.reason_codes == ()
        assert "AML" not in seen.model_dump_json()
        assert (seen.talking_points, seen.reasons, seen.score) == ((), (), None)
    assert shown_to("compliance", [withdrawn]) == [withdrawn]
    # A queued alert withdrawn before it opened never reached the RM: not listed for them.
    never = withdrawn.model_copy(update=dict(alert_id="other", opened_at=None))
    assert shown_to("rm", [never]) == []
    assert opened.alert_id == withdrawn.alert_id


def test_a_withdrawal_that_cannot_be_logged_holds_the_alert_back_unchanged(embedded) -> None:
    _known(embedded, "C1")
    grant_all(embedded.registry, "C1", "rm")
    alert = _raise(embedded, "C1")
    choose(embedded.registry, "C1", "marketing", "rm", False)
    with embedded.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {audit_log.name} RENAME TO audit_away"))
    try:
        assert embedded.alert_inbox.alerts(RM, None, 10).unchecked == 1
        with pytest.raises(AuditUnavailable):
            embedded.alert_inbox.dispose(alert.alert_id, "contacted", "rm")
        assert _status(embedded, alert).status == "open"  # not withdrawn without its record
    finally:
        with embedded.engine.begin() as connection:
            connection.execute(text(f"ALTER TABLE audit_away RENAME TO {audit_log.name}"))
    assert _status(embedded, alert).status == "open"
    [now] = embedded.alert_inbox.alerts(RM, None, 10).alerts
    assert now.status == "withdrawn"


class CountingReads(GateReads):
    """The real reads, counted."""

    def __init__(self, reads: GateReads) -> None:
        super().__init__(reads.registry, reads.directory, reads.contacts)
        self.customers: list[str] = []

    def read(self, customer_id: str, now: datetime, days: int) -> GateRead:
        self.customers.append(customer_id)
        return super().read(customer_id, now, days)


def test_listing_reads_each_customer_once_however_many_alerts_they_have(embedded) -> None:
    for customer in ("C1", "C2", "C3"):
        _known(embedded, customer)
        grant_all(embedded.registry, customer, "rm")
        for action in ("mortgage_consultation", "term_deposit_offer", "pension_review"):
            _raise(embedded, customer, action)
    counting = CountingReads(embedded.gate_reads)
    embedded.alert_gate.reads = counting
    listed = embedded.alert_inbox.alerts(RM, "open", 100).alerts
    assert len(listed) == 9
    assert sorted(counting.customers) == ["C1", "C2", "C3"]


def test_a_rule_the_policy_does_not_have_stops_the_start(embedded) -> None:
    with pytest.raises(PolicyError, match=r"customer\.psychic"):
        AlertGate(
            embedded.gate_reads,
            embedded.policy,
            embedded.catalog,
            embedded.audit,
            ("consent.purpose_channel", "customer.psychic"),
        )


def test_an_expired_alert_is_not_asked_about_again(embedded) -> None:
    _known(embedded, "C1")
    grant_all(embedded.registry, "C1", "rm")
    alert = _raise(embedded, "C1")
    choose(embedded.registry, "C1", "marketing", "rm", False)
    later = datetime.now(UTC) + timedelta(hours=embedded.alert_policy.expire_hours + 1)
    embedded.alert_inbox.clock = lambda: later
    [expired] = embedded.alert_inbox.sweep()
    assert (expired.alert_id, expired.status) == (alert.alert_id, "expired")
    assert list(embedded.audit.export()) == []
