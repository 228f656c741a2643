"""Bounded waits on the real PostgreSQL: the bounds each connection asks of the server (and a
URL's own winning), and what the decision path does when the database stops answering without
closing anything (``tests.proxy``'s stall): it times out on the client, refuses at once while
the breaker is open, drops the connections stuck behind the stall, bounds the records waiting for
the audit log, and comes back by itself. The API's own bounds (decisions in flight, the decision's
deadline) are at the end; scenario 5 (``tests/hostile/test_stalled_database.py``) holds them
under load.

Timing bounds carry a margin for a shared, loaded machine: the client's bound is 1 s
(``DECISION_STATEMENT_TIMEOUT_S``); a wait is asserted under 2 s and a refusal under 0.25 s.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import OperationalError

from consent.rules.chain import Appended
from consent.stores.audit.failures import AuditWriteFailed
from consent.stores.audit.log import AuditLog
from consent.stores.bounds import (
    CLIENT_GRACE_S,
    DECISION_STATEMENT_TIMEOUT_S,
    STATEMENT_TIMEOUT_S,
    ServerNotAnswering,
    asyncpg_connect_args,
    client_bound,
)
from consent.stores.breaker import StoreNotAnswering
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory, KnownCustomer
from consent.stores.reads import PostgresGateReads
from consent.stores.registry import ConsentRegistry
from consent.stores.store import connect
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from tests.conftest import key_headers, make_settings
from tests.doubles import GOOD_STANDING, grant_all
from tests.integration.conftest import fresh_schema
from tests.integration.test_audit import record
from tests.proxy import TcpProxy

#: A stalled wait ends within this (the client's bound is 1 s).
STALLED_WAIT_S = 2.0
#: A refusal by the open breaker comes within this.
REFUSAL_S = 0.25


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    with fresh_schema(postgres_url) as engine:
        yield engine


@pytest.fixture
def proxied(pg: Engine, postgres_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy to the server, and the URL of ``pg``'s schema through it."""
    base = make_url(postgres_url)
    proxy = TcpProxy((base.host or "127.0.0.1", base.port or 5432))
    proxy.start()
    url = (
        base.set(port=proxy.port)
        .update_query_dict({"options": pg.url.query["options"]})
        .render_as_string(hide_password=False)
    )
    try:
        yield proxy, url
    finally:
        proxy.resume()
        proxy.cut()


def _show(engine: Engine, *names: str) -> list[str]:
    with engine.connect() as connection:
        return [str(connection.exec_driver_sql(f"show {n}").scalar()) for n in names]


def test_every_connection_asks_the_server_for_bounds_and_the_url_wins(pg: Engine) -> None:
    assert _show(
        pg, "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"
    ) == [
        "1min",
        "15s",
        "1min",
    ]
    with pg.connect() as connection:
        params = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    assert params["connect_timeout"] == "5"
    url = pg.url.render_as_string(hide_password=False)
    own = connect(f"{url}%20-c%20statement_timeout%3D2500&connect_timeout=3")
    try:
        assert _show(own, "statement_timeout", "search_path") == [
            "2500ms",
            _show(pg, "search_path")[0],
        ]
        with own.connect() as connection:
            params = connection.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
        assert params["connect_timeout"] == "3"
    finally:
        own.dispose()


def test_the_decision_paths_connections_have_tighter_bounds_and_the_url_wins(pg: Engine) -> None:
    async def show(engine: Engine) -> list[str]:
        args = asyncpg_connect_args(engine)
        connection = await asyncpg.connect(**args)
        try:
            return [
                str(await connection.fetchval(f"show {n}"))
                for n in ("statement_timeout", "lock_timeout", "search_path")
            ]
        finally:
            await connection.close()

    schema = _show(pg, "search_path")[0]
    assert asyncio.run(show(pg)) == ["1s", "1s", schema]
    assert asyncpg_connect_args(pg)["command_timeout"] == DECISION_STATEMENT_TIMEOUT_S
    url = pg.url.render_as_string(hide_password=False)
    own = connect(f"{url}%20-c%20statement_timeout%3D2500&connect_timeout=3")
    try:
        assert asyncio.run(show(own)) == ["2500ms", "1s", schema]
        assert asyncpg_connect_args(own)["timeout"] == 3.0
    finally:
        own.dispose()


@pytest.mark.parametrize(
    ("options", "bound"),
    [
        ("-csearch_path=x", STATEMENT_TIMEOUT_S + CLIENT_GRACE_S),
        ("-c statement_timeout=1000 -csearch_path=x", 1.0 + CLIENT_GRACE_S),
        ("-c statement_timeout=1000 -c statement_timeout=2min", 120.0 + CLIENT_GRACE_S),
        ("-c statement_timeout=1000 --statement_timeout=2500ms", 2.5 + CLIENT_GRACE_S),
        ("-c statement_timeout=1000 -cstatement_timeout=0", None),
    ],
)
def test_the_clients_bound_follows_the_servers_last_statement_timeout(
    options: str, bound: float | None
) -> None:
    assert client_bound(options) == bound


def test_a_stalled_psycopg_statement_ends_on_the_client_and_its_connection_is_dropped(
    proxied: tuple[TcpProxy, str],
) -> None:
    proxy, url = proxied
    # The client's bound: 1.5 s; the pool's ping finds the connection stuck, and a new one is
    # not made either (2 s, libpq's shortest).
    engine = connect(f"{url}%20-c%20statement_timeout%3D500&connect_timeout=2")
    try:
        with engine.connect() as connection:
            before = connection.exec_driver_sql("select pg_backend_pid()").scalar()
        proxy.stall()
        began = time.monotonic()
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.exec_driver_sql("select 1")  # the pooled connection, stuck
        assert time.monotonic() - began < 0.5 + CLIENT_GRACE_S + 2 + 1.0
        proxy.resume()
        with engine.connect() as connection:  # on a new connection: the stuck one was dropped
            assert connection.exec_driver_sql("select pg_backend_pid()").scalar() != before
    finally:
        proxy.resume()
        engine.dispose()


def test_a_stalled_gate_read_in_a_thread_is_bounded_too(
    pg: Engine, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, url = proxied
    reads = _reads(pg, url)
    now = datetime.now(UTC)
    try:
        reads.read("C1", now, 30)
        proxy.stall()
        began = time.monotonic()
        with pytest.raises(ServerNotAnswering):
            reads.read("C1", now, 30)
        # The decision path's bound (1 s on the server) and the client's grace, once: no retry.
        assert time.monotonic() - began < DECISION_STATEMENT_TIMEOUT_S + CLIENT_GRACE_S + 1.0
        with pytest.raises(StoreNotAnswering):
            reads.read("C1", now, 30)
    finally:
        proxy.resume()
        reads.close()


def _reads(engine: Engine, url: str) -> PostgresGateReads:
    return PostgresGateReads(
        ConsentRegistry(engine), CustomerDirectory(engine), ContactHistory(engine), url
    )


def test_a_stalled_gate_read_times_out_trips_the_breaker_and_recovers(
    pg: Engine, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, url = proxied
    reads = _reads(pg, url)
    now = datetime.now(UTC)

    async def scenario() -> None:
        await reads.read_async("C1", now, 30)  # a connection is kept
        pool = reads._pool()
        assert len(pool.idle) == 1
        proxy.stall()
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await reads.read_async("C1", now, 30)
        assert time.monotonic() - began < STALLED_WAIT_S
        assert not pool.idle  # the stuck connection is not kept
        began = time.monotonic()
        with pytest.raises(StoreNotAnswering):
            await reads.read_async("C1", now, 30)
        assert time.monotonic() - began < REFUSAL_S
        proxy.resume()
        deadline = time.monotonic() + 10
        while True:  # the first read after the cool-down probes, and it is answered
            try:
                await reads.read_async("C1", now, 30)
                break
            except StoreNotAnswering:
                assert time.monotonic() < deadline, "the reads did not come back"
                await asyncio.sleep(0.05)
        assert not reads.breaker.tripped
        await reads.close_async()

    try:
        asyncio.run(scenario())
    finally:
        reads.close()
        reads.engine.dispose()


def test_a_stalled_audit_append_fails_bounded_and_nothing_waits_behind_it(
    pg: Engine, proxied: tuple[TcpProxy, str]
) -> None:
    proxy, url = proxied
    engine = connect(url)
    log = AuditLog(engine)

    async def scenario() -> None:
        await log.append_async(record("C1"), customer_id="C1")
        writer = log.writer_on(asyncio.get_running_loop())
        assert writer is not None
        proxy.stall()
        began = time.monotonic()
        stuck = asyncio.create_task(log.append_async(record("C2"), customer_id="C2"))
        await asyncio.sleep(0.05)  # its group is on the wire
        behind = [
            asyncio.create_task(log.append_async(record(f"C{n}"), customer_id=f"C{n}"))
            for n in range(3, 8)
        ]
        gave_up = asyncio.create_task(log.append_async(record("C9"), customer_id="C9"))
        await asyncio.sleep(0.05)
        gave_up.cancel()  # its caller went away before a group took it
        outcomes = await asyncio.gather(stuck, *behind, return_exceptions=True)
        assert all(isinstance(o, AuditWriteFailed) for o in outcomes), outcomes
        assert time.monotonic() - began < STALLED_WAIT_S
        assert not writer.queue  # nothing left waiting
        began = time.monotonic()
        with pytest.raises(AuditWriteFailed):
            await log.append_async(record("C10"), customer_id="C10")
        assert time.monotonic() - began < REFUSAL_S
        proxy.resume()
        deadline = time.monotonic() + 10
        while True:
            try:
                await log.append_async(record("C11"), customer_id="C11")
                break
            except AuditWriteFailed:
                assert time.monotonic() < deadline, "the audit log did not come back"
                await asyncio.sleep(0.05)
        await log.close_async()

    try:
        asyncio.run(scenario())
        time.sleep(0.5)  # bytes held during the stall arrive now, if any were sent
        verified = AuditLog(pg).verify()
        assert verified.ok
        with pg.connect() as connection:
            customers = connection.execute(text("select count(*) from customer_keys")).scalar()
        # C1 and C11 are written; C2's group may have reached the server before the stall
        # (logged, never answered), the others never left the process.
        assert verified.records in (2, 3) and customers == verified.records
    finally:
        log.close()
        engine.dispose()


def test_a_connection_ended_under_an_audit_group_fails_it_and_the_next_group_is_not_refused(
    pg: Engine, proxied: tuple[TcpProxy, str]
) -> None:
    """The connection is reset while a group is on the wire (a restarted server, a firewall):
    that group fails, as its commit cannot be known, but the server may well answer a new
    connection, so the next group is tried on one at once rather than refused for a cool-down.
    (Ended by the server itself, the ending arrives as its message or as a closed socket, as
    the race goes; the proxy makes it the closed socket every time.)"""
    proxy, url = proxied
    engine = connect(url)
    log = AuditLog(engine)

    async def scenario() -> tuple[BaseException | Appended, Appended]:
        try:
            await log.append_async(record("C1"), customer_id="C1")
            proxy.stall()
            on_the_wire = asyncio.create_task(log.append_async(record("C2"), customer_id="C2"))
            await asyncio.sleep(0.05)
            proxy.drop()
            proxy.resume()
            failed = (await asyncio.gather(on_the_wire, return_exceptions=True))[0]
            return failed, await log.append_async(record("C3"), customer_id="C3")
        finally:
            await log.close_async()

    try:
        failed, after = asyncio.run(scenario())
        assert isinstance(failed, AuditWriteFailed)
        assert not isinstance(failed.__cause__, StoreNotAnswering)
        assert after.seq >= 2  # written, on a new connection
        time.sleep(0.5)  # C2's group may have reached the server before the reset
        verified = AuditLog(pg).verify()
        assert verified.ok and verified.records in (2, 3)
    finally:
        log.close()
        engine.dispose()


def test_a_stalled_audit_append_in_threads_is_bounded_and_fails_those_behind_it_at_once(
    pg: Engine, proxied: tuple[TcpProxy, str]
) -> None:
    """The threaded path (PostgreSQL with the SQLite online store, the stream's alerts): the
    group commit's leader writes with the decision path's bounds, and a group that finds the
    database not answering fails the groups queued behind it, and new callers, at once."""
    proxy, url = proxied
    engine = connect(url)
    log = AuditLog(engine)
    outcomes: dict[str, BaseException | None] = {}
    finished: dict[str, float] = {}

    def append(customer: str) -> None:
        try:
            log.append(record(customer), customer_id=customer)
            outcomes[customer] = None
        except BaseException as error:
            outcomes[customer] = error
        finished[customer] = time.monotonic()

    try:
        log.append(record("C1"), customer_id="C1")  # the leaders' connection is kept
        proxy.stall()
        began = time.monotonic()
        threads = [threading.Thread(target=append, args=("C2",))]
        threads[0].start()
        time.sleep(0.1)  # its group is on the wire; these queue behind it
        threads += [threading.Thread(target=append, args=(f"C{n}",)) for n in range(3, 8)]
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert all(isinstance(o, AuditWriteFailed) for o in outcomes.values()), outcomes
        assert len(outcomes) == 6
        # One wait for the server (its statement bound and the client's grace), not one per
        # group: the records behind it were refused as soon as it failed.
        bound = DECISION_STATEMENT_TIMEOUT_S + CLIENT_GRACE_S + 1.0
        assert max(finished.values()) - began < bound, finished
        began = time.monotonic()
        with pytest.raises(AuditWriteFailed):
            log.append(record("C10"), customer_id="C10")
        assert time.monotonic() - began < REFUSAL_S
        proxy.resume()
        deadline = time.monotonic() + 10
        while True:
            try:
                log.append(record("C11"), customer_id="C11")
                break
            except AuditWriteFailed:
                assert time.monotonic() < deadline, "the audit log did not come back"
                time.sleep(0.05)
        assert not log.breaker.tripped
        time.sleep(0.5)  # bytes held during the stall arrive now, if any were sent
        verified = AuditLog(pg).verify()
        # C1 and C11 are written; C2's group may have reached the server before the stall.
        assert verified.ok and verified.records in (2, 3), verified
    finally:
        log.close()
        engine.dispose()


def test_decisions_beyond_the_bound_in_flight_get_503_overloaded_at_once(
    pg: Engine, proxied: tuple[TcpProxy, str], redis_url: str, tmp_path: Path, unique: str
) -> None:
    proxy, url = proxied
    settings = make_settings(
        tmp_path / "home",
        database_url=url,
        online_store="redis",
        redis_url=redis_url,
        feast_project=f"t{unique}",
        max_decisions_in_flight="1",
    )
    container = Container(settings)
    assert container.decisions.asynchronous
    container.directory.upsert([KnownCustomer("C1", None, None, GOOD_STANDING)])
    grant_all(container.registry, "C1", "mobile_app")
    headers = key_headers(container, "channel")
    body = {"customer_id": "C1", "channel": "mobile_app"}
    try:
        with TestClient(create_app(container), raise_server_exceptions=False) as client:
            assert client.post("/v1/decisions", json=body, headers=headers).status_code == 200
            proxy.stall()
            answers: list[tuple[int, str, float]] = []

            def decide() -> None:
                began = time.monotonic()
                response = client.post("/v1/decisions", json=body, headers=headers)
                code = response.json()["error"]["code"]
                answers.append((response.status_code, code, time.monotonic() - began))

            waiting = threading.Thread(target=decide)
            waiting.start()
            time.sleep(0.3)  # it holds the only place, waiting for the database
            began = time.monotonic()
            over = client.post("/v1/decisions", json=body, headers=headers)
            assert time.monotonic() - began < REFUSAL_S
            assert over.status_code == 503 and over.headers["retry-after"] == "1"
            assert over.json()["error"]["code"] == "overloaded"
            waiting.join()
            # The one that waited is answered within the bound, without delivering anything.
            [(status, code, took)] = answers
            assert status == 503 and code == "consent_unavailable" and took < STALLED_WAIT_S
    finally:
        proxy.resume()
        container.close()
