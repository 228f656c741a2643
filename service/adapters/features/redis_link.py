"""One pipelined connection to Redis per event loop, for the decision path's one read of a
customer's hash.

Commands are written as soon as they are asked, and Redis answers in order, so each reply
settles the oldest caller still waiting: concurrent decisions share one connection and never
wait for each other's round trips. Replies are parsed by hiredis (redis-py's own parser).
redis.asyncio does the same read with a pooled connection per concurrent caller and spends
several times the CPU per read on its pool, retries and observability hooks; why this matters
for the decision path, and the contract test that holds the link to redis-py, are in
docs/feast-storage.md.

A caller that gives up (its timeout, a cancellation) leaves its place in the queue: its reply
still comes, in order, and is dropped. If Redis answered anything while it waited, the link is
alive and only that caller fails (``ReadLate``): under load the reply is often already on its way,
late because this process was busy, and aborting would fail every caller queued behind it. If
Redis answered nothing for the whole wait, the server or the network has stalled: the link is
aborted, every caller still waiting fails at once, and the next read opens a new link.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import hiredis


def pack(*parts: bytes) -> bytes:
    """A Redis command in the protocol's own form (an array of bulk strings)."""
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class ReadLate(TimeoutError):
    """A reply that did not come in time on a link that is still answering."""


class RedisLink(asyncio.Protocol):
    """A connection of the running event loop (see the module's docstring)."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self._lost = asyncio.get_running_loop().create_future()
        self._replies = 0  # replies parsed so far: whether Redis answered during a wait
        self.closed = False

    @classmethod
    async def open(cls, settings: Mapping[str, Any], timeout: float) -> RedisLink:
        """Connected, authenticated and on the database ``settings`` name (host, port, db,
        username, password: redis-py's names)."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(
                cls, settings.get("host", "localhost"), settings.get("port", 6379)
            )
        hello = []
        if settings.get("password"):
            who = [settings["username"]] if settings.get("username") else []
            hello.append(pack(b"AUTH", *(str(p).encode() for p in [*who, settings["password"]])))
        if settings.get("db"):
            hello.append(pack(b"SELECT", str(settings["db"]).encode()))
        for command in hello:
            reply = await link.call(command, timeout)
            if isinstance(reply, Exception):
                await link.aclose()
                raise reply
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                self._replies += 1
                waiter = self._waiting.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
        except hiredis.ProtocolError:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        if not self._lost.done():
            self._lost.set_result(None)
        error = ConnectionError(f"the Redis connection was lost: {exc or 'closed by the server'}")
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def call(self, command: bytes, timeout: float) -> Any:
        """The reply to ``command`` (a Redis error reply is returned, not raised)."""
        if self._transport is None:
            raise ConnectionError("the Redis connection is closed")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._transport.write(command)
        answered = self._replies
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            # The waiter is cancelled, so its reply, when it comes, is dropped in order.
            if self._replies != answered:
                raise ReadLate(
                    f"Redis did not answer within {timeout * 1000:.0f} ms (the link is answering)"
                ) from None
            self.close()
            raise TimeoutError(f"Redis did not answer within {timeout * 1000:.0f} ms") from None

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails whoever still waits

    async def aclose(self) -> None:
        """``close``, returning once the socket is closed (or a second has gone by)."""
        self.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), 1.0)


class LoopLinks:
    """Each event loop's link, opened once for every read that finds none: they all wait for
    the same opening, and all fail at once if it fails (the next read tries again)."""

    def __init__(self, settings: Mapping[str, Any], timeout: float) -> None:
        self._settings = dict(settings)
        self._timeout = timeout
        self._links: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisLink] = (
            weakref.WeakKeyDictionary()
        )
        self._openings: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[RedisLink]
        ] = weakref.WeakKeyDictionary()

    async def link(self) -> RedisLink:
        loop = asyncio.get_running_loop()
        link = self._links.get(loop)
        if link is not None and not link.closed:
            return link
        opening = self._openings.get(loop)
        if opening is None:
            opening = loop.create_task(RedisLink.open(self._settings, self._timeout))
            self._openings[loop] = opening

            def opened(task: asyncio.Task[RedisLink]) -> None:
                self._openings.pop(loop, None)
                if not task.cancelled() and task.exception() is None:
                    self._links[loop] = task.result()

            opening.add_done_callback(opened)
        return await asyncio.shield(opening)

    async def close(self) -> None:
        """Close the running loop's link."""
        link = self._links.pop(asyncio.get_running_loop(), None)
        if link is not None:
            await link.aclose()
