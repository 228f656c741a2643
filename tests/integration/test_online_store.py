"""The Feast online store adapter against SQLite and real Redis."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
import uvloop

from feature_repo.activity import FEATURE_NAMES
from feature_repo.definitions import PROFILE_VIEW
from feature_repo.profile import PROFILE_FEATURE_NAMES, profile_rows
from feature_repo.store import StoreLocation, open_store, redis_connection_string
from service.adapters.features import FeastFeatures, OnlineFeatures
from training.bank import BankSpec, generate


@pytest.fixture(params=["sqlite", "redis"])
def features(request, tmp_path) -> FeastFeatures:
    project = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        where = StoreLocation(tmp_path, project, "redis", request.getfixturevalue("redis_url"))
    else:
        where = StoreLocation(tmp_path, project)
    return FeastFeatures(open_store(where), where)


def test_written_rows_are_read_back_with_their_event_time(features: FeastFeatures) -> None:
    as_of = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    rows = pd.DataFrame(
        [
            {"customer_id": "C1", "event_timestamp": as_of, **{n: 1.5 for n in FEATURE_NAMES}},
            {"customer_id": "C2", "event_timestamp": as_of, **{n: 2.0 for n in FEATURE_NAMES}},
        ]
    )
    features.write(rows)
    one = features.read("C1")
    assert one.as_of == as_of
    assert {k: one.values[k] for k in FEATURE_NAMES} == dict.fromkeys(FEATURE_NAMES, 1.5)
    assert {k: one.values[k] for k in PROFILE_FEATURE_NAMES} == dict.fromkeys(PROFILE_FEATURE_NAMES)
    unknown = features.read("C-nobody")
    assert unknown.as_of is None and set(unknown.values.values()) == {None}
    # A later row replaces the online value; both stay in the offline store.
    later = rows.iloc[:1].assign(event_timestamp=as_of + timedelta(hours=1), inflow_7d=9.0)
    features.write(later)
    assert features.read("C1").values["inflow_7d"] == 9.0
    offline = pd.read_parquet(features.where.offline_dir / "customer_activity")
    assert len(offline) == 3


def test_profiles_are_served_online_and_kept_offline(features: FeastFeatures) -> None:
    customers = generate(BankSpec(seed=5, customers=20, days=5)).customers
    extract = datetime(2026, 1, 1, tzinfo=UTC)
    rows = profile_rows(customers, extract)
    features.write_profiles(rows)
    first = customers.iloc[0]
    read = features.read(first["customer_id"])
    assert read.values["age"] == float(first["age"])
    assert read.values["holds_mortgage"] == float(first["holds_mortgage"])
    assert read.as_of is None  # no activity yet: profile alone does not make features fresh
    offline = pd.read_parquet(features.where.offline_dir / PROFILE_VIEW)
    assert len(offline) == len(customers)
    assert "gender" not in offline.columns


def test_redis_urls_become_feast_connection_strings() -> None:
    assert redis_connection_string("redis://127.0.0.1:16379/2") == "127.0.0.1:16379,db=2"
    assert redis_connection_string("rediss://:pw@h:1/0") == "h:1,db=0,password=pw,ssl=true"
    with pytest.raises(ValueError):
        redis_connection_string("http://h:1")


def _snapshot(features: FeastFeatures) -> dict:
    """Everything the online store holds for this project, as raw bytes."""
    import sqlite3

    import redis

    if features.where.online == "redis":
        client = redis.Redis.from_url(features.where.redis_url)
        project = features.where.project.encode()
        return {k: client.hgetall(k) for k in client.keys(b"*") if project in k}
    connection = sqlite3.connect(features.where.home / "online_store.db")
    table = f"{features.where.project}_customer_activity"
    rows = connection.execute(f'select * from "{table}" order by entity_key, feature_name')
    return {"rows": rows.fetchall()}


def _clear(features: FeastFeatures) -> None:
    import sqlite3

    import redis

    if features.where.online == "redis":
        client = redis.Redis.from_url(features.where.redis_url)
        project = features.where.project.encode()
        keys = [k for k in client.keys(b"*") if project in k]
        if keys:
            client.delete(*keys)
    else:
        connection = sqlite3.connect(features.where.home / "online_store.db")
        connection.execute(f'delete from "{features.where.project}_customer_activity"')
        connection.commit()


def test_the_fast_writer_stores_exactly_what_feasts_own_write_stores(features) -> None:
    import numpy as np

    from service.adapters.features import SdkOnlineWriter

    rng = np.random.default_rng(3)
    matrix = rng.random((4, len(FEATURE_NAMES))) * 10_000
    matrix[0, :5] = [0.0, -1.5, 1e-9, 123456789.25, 91.0]
    as_of = np.array([1795931509123456, 1795931509000000, 1, 1795931510500000])
    customers = ["A", "B", "C", "D"]
    SdkOnlineWriter(features.store).write(customers, as_of, matrix)
    expected = _snapshot(features)
    _clear(features)
    features.online.write(customers, as_of, matrix)
    assert type(features.online).__name__ != "SdkOnlineWriter"
    assert _snapshot(features) == expected
    read = features.read("A")
    assert {k: read.values[k] for k in FEATURE_NAMES} == dict(
        zip(FEATURE_NAMES, matrix[0].tolist(), strict=True)
    )


def test_the_direct_read_equals_feasts_own_read(features: FeastFeatures) -> None:
    """Decisions read Feast's layout directly; the SDK must see exactly the same."""
    bank = generate(BankSpec(seed=6, customers=30, days=5))
    features.write_profiles(profile_rows(bank.customers, datetime(2026, 1, 1, tzinfo=UTC)))
    as_of = datetime(2026, 11, 28, 9, 30, 15, tzinfo=UTC)
    rng = np.random.default_rng(3)
    ids = bank.customers["customer_id"].tolist()
    active = pd.DataFrame(rng.gamma(1.0, 50.0, (20, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
    active.insert(0, "event_timestamp", as_of)
    active.insert(0, "customer_id", ids[:20])
    features.write(active)
    for customer in [*ids[18:25], "C-nobody"]:
        direct, sdk = features.read(customer), features.read_through_sdk(customer)
        assert direct.values == sdk.values, customer
        for view, moment in sdk.as_of_by_view.items():
            mine = direct.as_of_by_view[view]
            if moment is None:
                assert mine is None
            else:  # the SDK reports whole seconds
                assert mine is not None and abs((mine - moment).total_seconds()) < 1
    if features.asynchronous:  # Redis: the API's read on its event loop is the same read

        async def read_async(customers: list[str]) -> list[OnlineFeatures]:
            try:
                return [await features.read_async(c) for c in customers]
            finally:
                await features.close_async()

        customers = [*ids[18:25], "C-nobody"]
        assert asyncio.run(read_async(customers)) == [features.read(c) for c in customers]


@pytest.fixture
def redis_features(tmp_path, redis_url) -> tuple[FeastFeatures, list[str]]:
    """Redis with 30 customers' profiles: the API's event-loop reads (``_RedisLink``)."""
    where = StoreLocation(tmp_path, f"t{uuid.uuid4().hex[:10]}", "redis", redis_url)
    features = FeastFeatures(open_store(where), where)
    bank = generate(BankSpec(seed=8, customers=30, days=5))
    features.write_profiles(profile_rows(bank.customers, datetime(2026, 1, 1, tzinfo=UTC)))
    assert features.asynchronous
    return features, bank.customers["customer_id"].tolist()


#: The API runs on uvloop (uvicorn's choice when it is installed); tests elsewhere on asyncio's
#: own loop. Their transports differ (uvloop's are not asyncio.Transport subclasses).
LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_concurrent_reads_share_one_pipelined_link_and_each_gets_its_own_row(
    redis_features, redis_url, loop: str
) -> None:
    import redis

    features, ids = redis_features
    customers = [*ids, "C-nobody"] * 3
    connections = redis.Redis.from_url(redis_url).info("stats")["total_connections_received"]

    async def read_all() -> tuple[list[OnlineFeatures], int]:
        try:
            reads = await asyncio.gather(*(features.read_async(c) for c in customers))
            return reads, len(features.online._async_links)
        finally:
            await features.close_async()

    reads, links = LOOPS[loop](read_all())
    opened = redis.Redis.from_url(redis_url).info("stats")["total_connections_received"]
    assert links == 1 and opened - connections == 2  # the link, and this test's own client
    assert [r.customer_id for r in reads] == customers
    assert reads == [features.read(c) for c in customers]
    assert len({r.values["age"] for r in reads}) > 5  # each their own row


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_link_the_server_closed_is_replaced(redis_features, redis_url, loop: str) -> None:
    """Redis drops the link's connection (a restart, CLIENT KILL): the callers waiting on it
    fail at once, and the next read opens a new link."""
    import redis

    features, ids = redis_features
    admin = redis.Redis.from_url(redis_url)

    async def around_a_kill() -> tuple[OnlineFeatures, OnlineFeatures, int, int]:
        try:
            first = await features.read_async(ids[0])
            ours = admin.client_list()  # the link is the client that ran HMGET last
            killed = max((c for c in ours if c.get("cmd") == "hmget"), key=lambda c: int(c["id"]))
            admin.client_kill_filter(_id=killed["id"])
            await asyncio.sleep(0.05)  # the loop sees the connection end
            (link,) = features.online._async_links.values()
            assert link.closed
            second = await features.read_async(ids[0])
            (new,) = features.online._async_links.values()
            assert new is not link and not new.closed
            return first, second, int(killed["id"]), len(admin.client_list())
        finally:
            await features.close_async()

    first, second, _, _ = LOOPS[loop](around_a_kill())
    assert first == second


def test_a_link_authenticates_and_selects_the_database(redis_url) -> None:
    import redis

    from service.adapters.features import _RedisLink

    admin = redis.Redis.from_url(redis_url)
    user, secret = f"nb-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], keys=["*"], commands=["+@all"])
    where = admin.connection_pool.connection_kwargs
    three = redis.Redis(host=where["host"], port=where["port"], db=3)
    three.set(f"{user}:k", b"in three")
    base = {"host": where["host"], "port": where["port"], "username": user}

    async def talk() -> tuple[Any, Exception | None]:
        loop = asyncio.get_running_loop()
        link = await _RedisLink.open(loop, {**base, "password": secret, "db": 3}, 1.0)
        try:
            value = await link.call(
                b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(f"{user}:k"), f"{user}:k".encode()), 1.0
            )
        finally:
            await link.aclose()
        try:
            await _RedisLink.open(loop, {**base, "password": "wrong"}, 1.0)
        except Exception as error:  # the server's error reply, raised
            return value, error
        return value, None

    try:
        value, refused = asyncio.run(talk())
    finally:
        admin.acl_deluser(user)
        three.delete(f"{user}:k")
    assert value == b"in three"
    assert refused is not None and "WRONGPASS" in str(refused)


def test_a_read_that_redis_does_not_answer_in_time_fails_and_the_next_one_works(
    redis_features, redis_url
) -> None:
    """Redis paused (CLIENT PAUSE): the read gives up after the read timeout rather than
    waiting, and once Redis answers again a new link reads."""
    import time

    import redis

    from service.adapters.features import READ_TIMEOUT_S

    features, ids = redis_features
    admin = redis.Redis.from_url(redis_url)

    async def paused() -> tuple[type[BaseException], float, OnlineFeatures]:
        try:
            await features.read_async(ids[0])
            admin.client_pause(300)
            started = time.monotonic()
            try:
                await features.online._hmget_async(features.online._key(ids[0]))
            except TimeoutError as error:
                failed, waited = type(error), time.monotonic() - started
                assert f"did not answer within {READ_TIMEOUT_S * 1000:.0f} ms" in str(error)
            else:
                raise AssertionError("a paused Redis answered")
            await asyncio.sleep(0.4)  # the pause ends
            return failed, waited, await features.read_async(ids[0])
        finally:
            await features.close_async()

    failed, waited, after = asyncio.run(paused())
    assert failed is TimeoutError
    assert READ_TIMEOUT_S <= waited < 0.25
    assert after == features.read(ids[0])
