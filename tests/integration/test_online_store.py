"""The Feast online store adapter against SQLite and real Redis."""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
import uvloop

from feature_repo.activity import FEATURE_NAMES, VALID_UNTIL
from feature_repo.definitions import ACTIVITY_VIEW, PROFILE_VIEW
from feature_repo.profile import PROFILE_FEATURE_NAMES, profile_rows
from feature_repo.store import StoreLocation, open_store, redis_connection_string
from service.adapters.features.breaker import READ_TIMEOUT_S, Breaker
from service.adapters.features.feast_features import FeastFeatures
from service.adapters.features.layout import FeastLayout
from service.adapters.features.online_features import OnlineFeatures
from service.adapters.features.redis_reads import RedisOnlineReads
from training.bank.in_memory import generate
from training.bank.spec import BankSpec


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


def _snapshot(features: FeastFeatures) -> dict[bytes | str, Any]:
    """Everything the online store holds for this project, as raw bytes."""
    import sqlite3

    import redis

    if features.where.online == "redis":
        client = redis.Redis.from_url(features.where.redis_url)
        project = features.where.project.encode()
        return {k: client.hgetall(k) for k in client.keys(b"*") if project in k}  # type: ignore[union-attr]  # sync reply typed as Awaitable
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
        keys = [k for k in client.keys(b"*") if project in k]  # type: ignore[union-attr]  # sync reply typed as Awaitable
        if keys:
            client.delete(*keys)
    else:
        connection = sqlite3.connect(features.where.home / "online_store.db")
        connection.execute(f'delete from "{features.where.project}_customer_activity"')
        connection.commit()


def test_the_fast_writer_stores_exactly_what_feasts_own_write_stores(features) -> None:
    import numpy as np

    from service.adapters.features.writers import SdkOnlineWriter

    rng = np.random.default_rng(3)
    matrix = rng.random((4, len(FEATURE_NAMES))) * 10_000
    matrix[0, :5] = [0.0, -1.5, 1e-9, 123456789.25, 91.0]
    # Nulls (stored as the empty message) and infinities, in one row and scattered.
    matrix[1, :] = np.nan
    matrix[2, [0, 7, len(FEATURE_NAMES) - 1]] = np.nan
    matrix[3, [1, 2]] = [np.inf, -np.inf]
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
    # The scores kept ready, the other view the writer writes.
    from feature_repo.scores import SCORE_FIELDS

    scores = rng.random((4, len(SCORE_FIELDS)))
    scores[2, 0] = np.nan
    _clear(features)
    SdkOnlineWriter(features.store).write_scores(customers, as_of, scores)
    expected = _snapshot(features)
    _clear(features)
    features.online.write_scores(customers, as_of, scores)
    assert _snapshot(features) == expected


def test_the_direct_read_equals_feasts_own_read(features: FeastFeatures) -> None:
    """Decisions read Feast's layout directly; the SDK must see exactly the same, whether Feast
    itself wrote the rows or the stream's writer did."""
    bank = generate(BankSpec(seed=6, customers=30, days=5))
    features.write_profiles(profile_rows(bank.customers, datetime(2026, 1, 1, tzinfo=UTC)))
    as_of = datetime(2026, 11, 28, 9, 30, 15, tzinfo=UTC)
    rng = np.random.default_rng(3)
    ids = bank.customers["customer_id"].tolist()
    active = pd.DataFrame(rng.gamma(1.0, 50.0, (20, len(FEATURE_NAMES))), columns=FEATURE_NAMES)
    active.insert(0, "event_timestamp", as_of)
    active.insert(0, "customer_id", ids[:20])
    # Until when each row holds: the next midnight, until the next event, or not said (null).
    tomorrow = datetime(2026, 11, 29, tzinfo=UTC).timestamp()
    active[VALID_UNTIL] = [tomorrow, math.inf, math.nan, tomorrow, math.nan] * 4
    features.store.write_to_online_store(ACTIVITY_VIEW, active.iloc[:10])  # Feast's own write
    features.write(active.iloc[10:])
    customers = [*ids[5:25], "C-nobody"]
    for customer in customers:
        direct, sdk = features.read(customer), features.read_through_sdk(customer)
        assert direct.values == sdk.values, customer
        assert direct.valid_until == sdk.valid_until, customer
        for view, moment in sdk.as_of_by_view.items():
            mine = direct.as_of_by_view[view]
            if moment is None:
                assert mine is None
            else:  # the SDK reports whole seconds
                assert mine is not None and abs((mine - moment).total_seconds()) < 1
    # Batch work (ranking a day's opportunities) reads many in one round trip: the same reads.
    assert features.read_many(customers) == [features.read(c) for c in customers]
    if features.asynchronous:  # Redis: the API's read on its event loop is the same read

        async def read_async(customers: list[str]) -> list[OnlineFeatures]:
            try:
                return [await features.read_async(c) for c in customers]
            finally:
                await features.close_async()

        assert asyncio.run(read_async(customers)) == [features.read(c) for c in customers]


@pytest.fixture
def redis_features(tmp_path, redis_url) -> tuple[FeastFeatures, list[str]]:
    """Redis with 30 customers' profiles: the API's event-loop reads."""
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
def test_concurrent_reads_share_one_pipelined_link_and_each_get_their_own_row(
    redis_features: tuple[FeastFeatures, list[str]], redis_url, loop: str
) -> None:
    import redis

    features, ids = redis_features
    customers = [*ids, "C-nobody"] * 3
    before = redis.Redis.from_url(redis_url).info("stats")["total_connections_received"]  # type: ignore[index]  # sync reply typed as Awaitable

    async def read_all() -> list[OnlineFeatures]:
        try:
            return await asyncio.gather(*(features.read_async(c) for c in customers))
        finally:
            await features.close_async()

    reads = LOOPS[loop](read_all())
    opened = redis.Redis.from_url(redis_url).info("stats")["total_connections_received"]  # type: ignore[index]  # sync reply typed as Awaitable
    assert opened - before == 2  # the loop's link, and this test's own client
    assert [r.customer_id for r in reads] == customers
    assert reads == [features.read(c) for c in customers]
    assert len({r.values["age"] for r in reads}) > 5  # each their own row


def stored_hash(client: Any, key: bytes) -> dict[bytes, bytes]:
    """A hash as redis-py reads it (its fields and values as bytes)."""
    return cast(dict[bytes, bytes], client.hgetall(key))


def test_the_links_replies_are_redis_pys_byte_for_byte(redis_features, redis_url) -> None:
    """The event loop's hand-written link (docs/feast-storage.md) held to redis-py: for keys
    Feast wrote, a missing key and a key of another type, the link's HGETALL gets exactly the
    fields and values redis-py gets, and the same error."""
    import redis

    from service.adapters.features.redis_link import RedisLink, pack

    features, ids = redis_features
    layout = FeastLayout(features.store)
    client = redis.Redis.from_url(redis_url)
    other = f"{features.where.project}:a-string".encode()
    client.set(other, b"not a hash", ex=60)
    keys = [*(layout.redis_key(c) for c in ids[:5]), layout.redis_key("C-nobody"), other]
    where = client.connection_pool.connection_kwargs

    async def through_the_link() -> list[Any]:
        link = await RedisLink.open({"host": where["host"], "port": where["port"]}, 1.0)
        try:
            return [await link.call(pack(b"HGETALL", key), 1.0) for key in keys]
        finally:
            await link.aclose()

    replies = asyncio.run(through_the_link())
    for key, reply in zip(keys[:-1], replies[:-1], strict=True):
        assert dict(zip(reply[::2], reply[1::2], strict=True)) == stored_hash(client, key)
    assert len(replies[0]) > 2 and replies[-2] == []
    with pytest.raises(redis.ResponseError) as refused:
        stored_hash(client, other)
    assert isinstance(replies[-1], Exception) and str(replies[-1]) == str(refused.value)


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_reply_late_because_the_process_was_busy_fails_only_its_own_read(
    redis_features, redis_url, loop: str
) -> None:
    """The loop is blocked while three reads are on the wire (a process saturated for a
    moment): the one with the shortest wait gives up, the others get their own replies, the
    link stays open and the next read on it gets its own reply, not the abandoned one."""
    import time

    import redis

    from service.adapters.features.redis_link import ReadLate, RedisLink, pack

    features, ids = redis_features
    layout = FeastLayout(features.store)
    client = redis.Redis.from_url(redis_url)
    where = client.connection_pool.connection_kwargs
    keys = [layout.redis_key(c) for c in ids[:4]]
    expected = [stored_hash(client, k) for k in keys]
    assert len({tuple(sorted(e.items())) for e in expected}) == 4  # each customer's own values

    def stored(reply: list[bytes]) -> dict[bytes, bytes]:
        return dict(zip(reply[::2], reply[1::2], strict=True))

    async def busy() -> tuple[list[Any], Any, bool]:
        link = await RedisLink.open({"host": where["host"], "port": where["port"]}, 1.0)
        try:
            calls = [
                asyncio.ensure_future(link.call(pack(b"HGETALL", key), wait))
                for key, wait in zip(keys[:3], (1.0, 0.02, 1.0), strict=True)
            ]
            await asyncio.sleep(0)  # all three written
            time.sleep(0.1)  # the loop is busy; Redis answers meanwhile
            first = await asyncio.gather(*calls, return_exceptions=True)
            after = await link.call(pack(b"HGETALL", keys[3]), 1.0)
            return first, after, link.closed
        finally:
            await link.aclose()

    first, after, closed = LOOPS[loop](busy())
    assert stored(first[0]) == expected[0] and stored(first[2]) == expected[2]
    assert isinstance(first[1], ReadLate)
    assert stored(after) == expected[3] and not closed


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_a_connection_the_server_closed_is_replaced(redis_features, redis_url, loop: str) -> None:
    """Redis drops the loop's connection (a restart, CLIENT KILL): the next read opens a new
    one and reads."""
    import psutil
    import redis

    features, ids = redis_features
    admin = redis.Redis.from_url(redis_url)

    async def around_a_kill() -> tuple[OnlineFeatures, OnlineFeatures, int]:
        try:
            first = await features.read_async(ids[0])
            # Only this process's connections: the server is shared with other test runs.
            port = admin.connection_pool.connection_kwargs["port"]
            mine = {
                f"{c.laddr.ip}:{c.laddr.port}"
                for c in psutil.Process().net_connections("tcp")
                if c.raddr and c.raddr.port == port
            }
            ours = [c for c in admin.client_list() if c["addr"] in mine and c["cmd"] == "hgetall"]  # type: ignore[union-attr]  # sync reply typed as Awaitable
            for client in ours:
                admin.client_kill_filter(_id=client["id"])
            await asyncio.sleep(0.05)  # the loop sees the connections end
            return first, await features.read_async(ids[0]), len(ours)
        finally:
            await features.close_async()

    first, second, killed = LOOPS[loop](around_a_kill())
    assert killed >= 1
    assert first == second


def test_reads_use_the_connection_strings_user_password_and_database(tmp_path, redis_url) -> None:
    """Both reads, on a thread and on the event loop, connect as Feast's connection string
    says (user, password, database), and a wrong password fails them."""
    import redis
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    from feature_repo.store import repo_config

    admin = redis.Redis.from_url(redis_url)
    user, secret = f"nb-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(user, enabled=True, passwords=[f"+{secret}"], keys=["*"], commands=["+@all"])
    where = StoreLocation(tmp_path, f"t{uuid.uuid4().hex[:10]}", "redis", redis_url)
    open_store(where)  # the registry, applied with the plain connection

    host = admin.connection_pool.connection_kwargs

    def features_as(password: str) -> FeastFeatures:
        config: dict[str, Any] = repo_config(where)
        connection = f"{host['host']}:{host['port']},db=3,username={user},password={password}"
        config["online_store"] = {"type": "redis", "connection_string": connection}
        return FeastFeatures(
            FeatureStore(config=RepoConfig(repo_path=where.registry_dir, **config)), where
        )

    async def read_async(features: FeastFeatures, customer: str) -> OnlineFeatures:
        try:
            return await features.read_async(customer)
        finally:
            await features.close_async()

    three = redis.Redis(host=host["host"], port=host["port"], db=3)
    try:
        features = features_as(secret)
        bank = generate(BankSpec(seed=9, customers=3, days=5))
        features.write_profiles(profile_rows(bank.customers, datetime(2026, 1, 1, tzinfo=UTC)))
        customer = bank.customers["customer_id"].iloc[0]
        read = features.read(customer)
        assert read.values["age"] == float(bank.customers["age"].iloc[0])
        assert asyncio.run(read_async(features, customer)) == read
        assert [k for k in three.keys(b"*") if where.project.encode() in k]  # type: ignore[union-attr]  # in database 3; sync reply typed as Awaitable
        with pytest.raises(redis.AuthenticationError):
            features_as("wrong").read(customer)
        with pytest.raises(Exception, match="WRONGPASS"):  # the server's error reply, raised
            asyncio.run(read_async(features_as("wrong"), customer))
    finally:
        for key in [k for k in three.keys(b"*") if where.project.encode() in k]:  # type: ignore[union-attr]  # sync reply typed as Awaitable
            three.delete(key)
        admin.acl_deluser(user)


def test_a_read_that_redis_does_not_answer_in_time_fails_and_the_next_one_works(
    redis_features, redis_url
) -> None:
    """Redis paused (CLIENT PAUSE): the read gives up after the read timeout rather than
    waiting, and once Redis answers again the next read works."""
    import time

    import redis

    features, ids = redis_features
    # No cool-down, so the read after the pause is tried rather than refused by the breaker.
    reads = RedisOnlineReads(features.store, FeastLayout(features.store), Breaker(0.0))
    admin = redis.Redis.from_url(redis_url)

    async def paused() -> tuple[float, OnlineFeatures]:
        try:
            await reads.read_async(ids[0])
            admin.client_pause(300)
            started = time.monotonic()
            with pytest.raises(
                TimeoutError, match=f"did not answer within {READ_TIMEOUT_S * 1000:.0f} ms"
            ):
                await reads.read_async(ids[0])
            waited = time.monotonic() - started
            await asyncio.sleep(0.4)  # the pause ends
            return waited, await reads.read_async(ids[0])
        finally:
            await reads.close_async()

    waited, after = asyncio.run(paused())
    assert READ_TIMEOUT_S <= waited < 0.25
    assert after == features.read(ids[0])


def test_the_breaker_refuses_reads_for_its_cool_down_after_a_failure(
    redis_features, redis_url
) -> None:
    """After a read that failed, reads are refused at once (no wait for a store that is down)
    until the cool-down ends; the first read after it tries the store again."""
    import redis

    from service.adapters.features.breaker import OnlineStoreUnavailable

    features, ids = redis_features
    reads = RedisOnlineReads(features.store, FeastLayout(features.store), Breaker(0.5))
    admin = redis.Redis.from_url(redis_url)

    async def around_a_pause() -> OnlineFeatures:
        try:
            admin.client_pause(150)
            with pytest.raises(TimeoutError):
                await reads.read_async(ids[0])
            await asyncio.sleep(0.2)  # Redis answers again, the breaker is still open
            with pytest.raises(OnlineStoreUnavailable):
                await reads.read_async(ids[0])
            with pytest.raises(OnlineStoreUnavailable):
                reads.read(ids[0])
            await asyncio.sleep(0.35)  # the cool-down ends
            return await reads.read_async(ids[0])
        finally:
            await reads.close_async()

    assert asyncio.run(around_a_pause()) == features.read(ids[0])


def test_sync_only_reads_say_so_and_refuse_the_event_loop(tmp_path) -> None:
    """The SQLite store and the SDK declare they have no asynchronous read, and refuse one."""
    where = StoreLocation(tmp_path, f"t{uuid.uuid4().hex[:10]}")
    features = FeastFeatures(open_store(where), where)
    assert not features.asynchronous
    for reads in (features.reads, features.sdk):
        assert reads.asynchronous is False
        with pytest.raises(NotImplementedError):
            asyncio.run(reads.read_async("C1"))
        asyncio.run(reads.close_async())
