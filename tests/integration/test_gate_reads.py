"""The gate's one-statement read on PostgreSQL against the stores' own reads (the contract)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from consent.rules.model import ConsentGiven, ContactKind, CustomerFacts
from consent.rules.vocabulary import ConsentChannel, Purpose
from consent.stores.contacts import ContactHistory, ContactMade
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.reads import GateReads, PostgresGateReads, gate_reads
from consent.stores.registry import ConsentRegistry
from tests.integration.conftest import fresh_schema

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def consent(
    purpose: Purpose, channel: ConsentChannel, granted: bool, at: datetime, who: str = "C1"
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
    who: str, household: str | None, days_ago: float, kind: ContactKind = "impression"
) -> ContactMade:
    return ContactMade(
        customer_id=who,
        household_id=household,
        occurred_at=NOW - timedelta(days=days_ago),
        channel="rm",
        kind=kind,
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
    customers = ("C1", "C2", "C3", "nobody")
    for customer in customers:
        theirs = plain.read(customer, NOW, 30)
        ours = pipelined.read(customer, NOW, 30)
        assert ours == theirs, customer

    async def on_a_loop() -> list[Any]:  # the API's read (asyncpg), several at once
        try:
            return await asyncio.gather(*(pipelined.read_async(c, NOW, 30) for c in customers * 3))
        finally:
            await pipelined.close_async()

    assert asyncio.run(on_a_loop()) == [plain.read(c, NOW, 30) for c in customers * 3]
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


def test_the_event_loops_dead_connection_is_replaced_not_reported(stores) -> None:
    """The server ends the kept connection (a restart, an administrator): the next read
    retries on a new one and succeeds."""
    registry, _, _, pipelined = stores
    registry.record([consent("profiling", "any", True, NOW)])

    async def read_twice() -> tuple[Any, Any, int, int]:
        try:
            first = await pipelined.read_async("C1", NOW, 30)
            (kept,) = pipelined._pool().idle
            pid = kept.get_server_pid()
            with pipelined.engine.connect() as admin:
                ended = admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                assert ended.scalar() is True
            second = await pipelined.read_async("C1", NOW, 30)
            (now_kept,) = pipelined._pool().idle
            return first, second, pid, now_kept.get_server_pid()
        finally:
            await pipelined.close_async()

    first, second, old_pid, new_pid = asyncio.run(read_twice())
    assert first == second and second.consents[("profiling", "any")].granted
    assert new_pid != old_pid


def test_reads_in_bulk_are_each_customers_own_read(operational_engine) -> None:
    """Ranking a day's opportunities reads the gate's inputs of thousands of customers in a
    few queries: each customer's must be exactly her own read (latest choice per purpose and
    channel, ties by write order; her household's contacts, in order, inside the lookback)."""
    registry, directory, contacts = (
        ConsentRegistry(operational_engine),
        CustomerDirectory(operational_engine),
        ContactHistory(operational_engine),
    )
    rng = random.Random(11)
    people = [f"C{i}" for i in range(60)]
    households = {c: rng.choice([None, "H1", "H2", "H3", "H4"]) for c in people}
    directory.upsert(
        [
            KnownCustomer(c, h, f"RM{rng.randrange(3)}", CustomerFacts())
            for c, h in households.items()
        ]
    )
    pairs: list[tuple[Purpose, ConsentChannel]] = [
        ("marketing", "rm"),
        ("marketing", "email"),
        ("profiling", "any"),
    ]
    registry.record(
        [
            consent(
                *rng.choice(pairs), rng.random() < 0.6, NOW - timedelta(days=rng.randrange(5)), c
            )
            for c in rng.choices([*people, "unknown"], k=400)
        ]
    )
    contacts.record(
        [
            contact(
                c,
                households.get(c, "H1"),
                rng.uniform(0, 45),
                rng.choice(["impression", "decline"]),
            )
            for c in rng.choices([*people, "C99"], k=500)
        ]
    )
    plain = GateReads(registry, directory, contacts)
    asked = [*people, "unknown", "nobody"]
    bulk = plain.read_many(asked, NOW, 30)
    assert sorted(bulk) == sorted(asked)
    assert {c: plain.read(c, NOW, 30) for c in asked} == bulk
    assert sum(len(r.contacts) for r in bulk.values()) > 100
    assert any(c.household for r in bulk.values() for c in r.contacts)
    assert plain.read_many([], NOW, 30) == {}
