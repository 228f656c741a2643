"""The gate's one-statement read on PostgreSQL against the stores' own reads (the contract)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consent.contacts import ContactHistory, ContactMade
from consent.customers import CustomerDirectory, KnownCustomer
from consent.model import ConsentGiven, CustomerFacts
from consent.reads import GateReads, PostgresGateReads, gate_reads
from consent.registry import ConsentRegistry
from tests.integration.conftest import fresh_schema

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def consent(
    purpose: str, channel: str, granted: bool, at: datetime, who: str = "C1"
) -> ConsentGiven:
    return ConsentGiven(
        customer_id=who,
        purpose=purpose,
        channel=channel,
        granted=granted,
        recorded_at=at,
        source="test",
        notice_version="2026-01",
    )


def contact(
    who: str, household: str | None, days_ago: float, kind: str = "impression"
) -> ContactMade:
    return ContactMade(
        customer_id=who,
        household_id=household,
        occurred_at=NOW - timedelta(days=days_ago),
        channel="rm",
        kind=kind,  # type: ignore[arg-type]
        action_id="mortgage_consultation",
        need="mortgage",
    )


@pytest.fixture
def stores(postgres_url):
    with fresh_schema(postgres_url) as engine:
        registry, directory, contacts = (
            ConsentRegistry(engine),
            CustomerDirectory(engine),
            ContactHistory(engine),
        )
        url = engine.url.render_as_string(hide_password=False)
        pipelined = gate_reads(registry, directory, contacts, url)
        assert isinstance(pipelined, PostgresGateReads)
        yield registry, directory, contacts, pipelined
        pipelined.close()


def test_one_statement_reads_what_the_stores_read(stores) -> None:
    registry, directory, contacts, pipelined = stores
    registry.record(
        [
            consent("marketing", "rm", True, NOW - timedelta(days=9)),
            consent("marketing", "rm", False, NOW - timedelta(days=2)),
            # An old choice that arrives late must not win over the newer one.
            consent("marketing", "rm", True, NOW - timedelta(days=5)),
            consent("profiling", "any", True, NOW - timedelta(days=30)),
            consent("service", "mobile_app", True, NOW - timedelta(days=1)),
            consent("marketing", "rm", True, NOW, who="C2"),  # someone else's
        ]
    )
    directory.upsert(
        [
            KnownCustomer("C1", "H1", "RM7", CustomerFacts(age=41, kyc_status="complete")),
            KnownCustomer("C2", "H1", "RM7", CustomerFacts(age=39)),
            KnownCustomer("C3", None, None, CustomerFacts()),
        ]
    )
    contacts.record(
        [
            contact("C1", "H1", 3, "decline"),
            contact("C2", "H1", 1),  # household
            contact("C1", "H1", 0.5),
            contact("C1", "H1", 40),  # beyond the lookback
            contact("C9", "H2", 1),  # another household
        ]
    )
    plain = GateReads(registry, directory, contacts)
    for customer in ("C1", "C2", "C3", "nobody"):
        theirs = plain.read(customer, NOW, 30)
        ours = pipelined.read(customer, NOW, 30)
        assert ours == theirs, customer
    c1 = pipelined.read("C1", NOW, 30)
    assert not c1.consents[("marketing", "rm")].granted
    assert [(c.kind, c.household) for c in c1.contacts] == [
        ("decline", False),
        ("impression", True),
        ("impression", False),
    ]
    assert c1.known is not None and c1.known.rm_id == "RM7"
    assert pipelined.read("nobody", NOW, 30).known is None


def test_a_dead_connection_is_replaced_not_reported(stores) -> None:
    registry, _, _, pipelined = stores
    registry.record([consent("profiling", "any", True, NOW)])
    assert pipelined.read("C1", NOW, 30).consents
    # Kill the pooled connection under the reader: the next read retries on a new one.
    fairy = pipelined.engine.raw_connection()
    fairy.driver_connection.close()
    fairy.close()
    assert pipelined.read("C1", NOW, 30).consents[("profiling", "any")].granted
