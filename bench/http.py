"""A lean HTTP/1.1 keep-alive client for load generation on the same machine as the server.

The load generator shares the two cores with the API it measures, so every microsecond it
spends is taken from the server. A general client (httpx, and aiohttp to a lesser degree)
spends enough CPU per request to become the bottleneck of the load it generates. This client
sends requests whose bytes are built once, on a pool of persistent connections,
and reads only what a benchmark needs from the answer: the status, the headers it asks for
and the body. Responses must carry ``Content-Length`` (no chunked bodies): that is what our
API sends. It is a measuring instrument, not a general client.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A connection idle for longer is closed rather than used again. uvicorn closes one idle for
#: 5 s (its ``timeout_keep_alive``), and a request written in that instant is reset by the
#: server or never answered: an HTTP client keeps its idle limit below the server's.
IDLE_LIMIT_S = 4.0


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names, only those asked for
    body: bytes


class _Connection(asyncio.Protocol):
    def __init__(self, wanted: frozenset[bytes]) -> None:
        self.wanted = wanted
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0  # the event loop's time when it was last handed back

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def _complete(self) -> None:
        if self.waiter is None or self.waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).split(b"\r\n")
        length, headers = 0, {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.reusable = False
            elif name in self.wanted:
                headers[name.decode()] = value.strip().decode()
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.waiter.set_result(Answer(int(head[0].split(b" ", 2)[1]), headers, body))

    async def exchange(self, request: bytes) -> Answer:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class Client:
    """Up to ``connections`` persistent connections to ``host:port``; a request waits for a
    free one. ``wanted``: the response headers to keep."""

    def __init__(
        self, host: str, port: int, connections: int, wanted: tuple[str, ...] = ()
    ) -> None:
        self.host, self.port = host, port
        self.wanted = frozenset(w.lower().encode() for w in wanted)
        self._free: deque[_Connection] = deque()
        self._slots = asyncio.Semaphore(connections)
        self._all: list[_Connection] = []

    @staticmethod
    def post_json(path: str, host: str, payload: Any, headers: dict[str, str]) -> bytes:
        """The bytes of a POST with a JSON body (build them once, send them many times)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _connection(self) -> _Connection:
        loop = asyncio.get_running_loop()
        while self._free:
            connection = self._free.pop()
            if connection.closed or connection.transport is None:
                continue
            if connection.transport.is_closing():
                continue
            if loop.time() - connection.idle_since > IDLE_LIMIT_S:
                connection.transport.close()
                continue
            return connection
        _, connection = await loop.create_connection(
            lambda: _Connection(self.wanted), self.host, self.port
        )
        self._all.append(connection)
        return connection

    async def send(
        self, request: bytes, timeout: float, on_wire: Callable[[], None] | None = None
    ) -> Answer:
        """Send ``request`` on a free connection (``on_wire`` is called as it is written)."""
        async with self._slots:
            connection = await self._connection()
            if on_wire is not None:
                on_wire()
            try:
                answer = await asyncio.wait_for(connection.exchange(request), timeout)
            except BaseException:
                if connection.transport is not None:
                    connection.transport.close()  # its answer may still come: never reuse it
                raise
            if connection.reusable and not connection.closed:
                connection.idle_since = asyncio.get_running_loop().time()
                self._free.append(connection)
            elif connection.transport is not None:
                connection.transport.close()
            return answer

    def close(self) -> None:
        for connection in self._all:
            if connection.transport is not None:
                connection.transport.close()
