"""A customer's online features read from Feast's Redis store: one ``HGETALL`` of the hash that
holds every view's values and row times, with redis-py on a thread or on the running event
loop's link.

``HGETALL`` rather than Feast's own ``HMGET`` of each field: a customer's hash (194 fields) is
below Redis's default ``hash-max-listpack-entries`` (512), so Redis keeps it as a listpack, where
each field ``HMGET`` asks for is a scan of the list. Asking for every field that way cost the
server several times what one pass over the whole list costs (docs/feast-storage.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from redis.backoff import NoBackoff
from redis.retry import Retry

from feature_repo.definitions import SCORING_FEATURES
from feature_repo.scores import SCORES_VIEW, fingerprint_of
from service.adapters.features.breaker import READ_TIMEOUT_S, Breaker
from service.adapters.features.layout import (
    READ_FIELDS,
    FeastLayout,
    as_values,
    decode_array,
    decode_time,
    decode_value,
)
from service.adapters.features.online_features import OnlineFeatures
from service.adapters.features.redis_link import LoopLinks, pack


class RedisOnlineReads:
    """Reads on connections of their own to the server Feast writes to, bounded for the
    decision path: a short timeout and no retries (the breaker decides when to try again),
    where Feast's own client waits as long as the operating system does and retries with
    backoff."""

    def __init__(
        self, store: FeatureStore, layout: FeastLayout, breaker: Breaker | None = None
    ) -> None:
        settings = store.config.online_store
        online = store._get_provider().online_store
        assert isinstance(online, RedisOnlineStore)
        self._layout = layout
        self._breaker = breaker or Breaker()
        # Feast keeps every view of an entity in one hash: one HGETALL reads values and times.
        self._fields = [
            *(layout.redis_field(view, n) for view, names in READ_FIELDS.items() for n in names),
            *(layout.redis_time_field(view) for view in READ_FIELDS),
        ]
        self._count = len(self._fields) - len(READ_FIELDS)
        self._client: Any
        connection: dict[str, Any] = {}
        if settings.redis_type == RedisType.redis:
            connection = _connection(settings.connection_string)
            self._client = redis.Redis(
                **connection,
                socket_timeout=READ_TIMEOUT_S,
                socket_connect_timeout=READ_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
        else:  # a cluster or a sentinel: Feast's own client knows where each key lives
            self._client = online._get_client(settings)
        #: Whether ``read_async`` reads on the event loop: a single server without TLS (the
        #: link speaks plain TCP). Any other Redis is read on a thread.
        self.asynchronous = bool(connection) and not connection.get("ssl")
        self._links = LoopLinks(connection, READ_TIMEOUT_S)

    def read(self, customer_id: str) -> OnlineFeatures:
        with self._breaker:
            stored = self._client.hgetall(self._layout.redis_key(customer_id))
        return self._decoded(customer_id, [stored.get(f) for f in self._fields])

    def read_many(self, customer_ids: Sequence[str]) -> list[OnlineFeatures]:
        """``read`` of each of ``customer_ids``, in one pipeline (batch work: one round trip,
        not one per customer)."""
        with self._breaker:
            pipe = self._client.pipeline(transaction=False)
            for customer_id in customer_ids:
                pipe.hgetall(self._layout.redis_key(customer_id))
            replies = pipe.execute()
        return [
            self._decoded(c, [stored.get(f) for f in self._fields])
            for c, stored in zip(customer_ids, replies, strict=True)
        ]

    async def read_async(self, customer_id: str) -> OnlineFeatures:
        """``read`` on the running event loop, with the same timeout and breaker."""
        if not self.asynchronous:
            raise NotImplementedError("this Redis is read on a thread (see asynchronous)")
        command = pack(b"HGETALL", self._layout.redis_key(customer_id))
        with self._breaker:
            reply = await (await self._links.link()).call(command, READ_TIMEOUT_S)
            if isinstance(reply, Exception):  # a Redis error reply
                raise reply
        pairs = iter(reply)  # field, value, field, value...
        stored = dict(zip(pairs, pairs, strict=True))
        return self._decoded(customer_id, [stored.get(f) for f in self._fields])

    async def close_async(self) -> None:
        """Close the running event loop's link."""
        await self._links.close()

    def _decoded(self, customer_id: str, raw: list[bytes | None]) -> OnlineFeatures:
        stamps = {
            view: decode_time(blob)
            for view, blob in zip(READ_FIELDS, raw[self._count :], strict=True)
        }
        laid = decode_array(raw[: self._count])
        mark: float | None = None
        if laid is not None:
            decoded = as_values(laid)
            if stamps.get(SCORES_VIEW) is not None:
                # Scores are kept: their fit is judged by the fingerprint of the values read,
                # taken from the array at hand (from the values it would be laid out again).
                mark = fingerprint_of(laid[_SCORED_AT])
        else:
            decoded = [decode_value(r) for r in raw[: self._count]]
        values = dict(zip(_NAMES, decoded, strict=True))
        return OnlineFeatures.of_views(customer_id, values, stamps, mark)


#: Every field a read gets, in order, and where the scoring features are among them.
_NAMES = tuple(name for names in READ_FIELDS.values() for name in names)
_SCORED_AT = np.array([_NAMES.index(name) for name in SCORING_FEATURES], np.int64)


def _connection(connection_string: str) -> dict[str, Any]:
    """A single server's connection settings from Feast's connection string, parsed as Feast
    parses it for its own clients."""
    nodes, settings = RedisOnlineStore._parse_connection_string(connection_string)
    return {"host": nodes[0]["host"], "port": int(nodes[0].get("port", 6379)), **settings}
