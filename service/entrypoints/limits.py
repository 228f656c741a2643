"""Limits that keep one client from exhausting a process: requests per API key, bytes per body.

Both are per process: with N replicas behind a load balancer a key may make up to N times the
configured rate in all. That is the trade for a check that costs next to nothing and needs no
shared store on the hot path; a gateway in front enforces a global quota where one is needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import HTTP_STATUS_CODES, error_document


class RateLimiter:
    """A token bucket per API key name: ``burst`` requests at once, refilled at ``rate`` per
    second. The buckets are keyed by the names in the key file, so they cannot grow without
    bound however many wrong keys are tried (those are refused before this is asked)."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        # name -> [tokens, when they were counted]; a list so the update needs no new object.
        self._buckets: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        """Take a token for ``name``: 0.0 when there was one, otherwise the seconds until one
        will be there (nothing is taken then, so a client that waits that long gets through)."""
        with self._lock:
            # Read under the lock: a time read before it could be older than the bucket's.
            now = self._clock()
            bucket = self._buckets.get(name)
            if bucket is None:
                self._buckets[name] = [self.burst - 1.0, now]
                return 0.0
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return 0.0
            bucket[0] = tokens
            return (1.0 - tokens) / self.rate


class BodyTooLarge(HTTPException):
    """Raised while a body is being received. An ``HTTPException`` on purpose: FastAPI passes
    those through its body reader unchanged (any other error becomes a 400 there)."""

    def __init__(self) -> None:
        super().__init__(status_code=413)


def _too_large() -> JSONResponse:
    code, message = HTTP_STATUS_CODES[413]
    return JSONResponse(error_document(code, message), status_code=413)


class BodyLimit:
    """Pure ASGI middleware refusing request bodies over ``max_bytes`` with 413.

    A declared ``Content-Length`` over the limit is refused before anything is read. A body
    without one (chunked) is counted as it arrives and refused at the first chunk past the
    limit, so at most ``max_bytes`` plus one chunk is ever held."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large()(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            # The app's own handler normally answers; this covers a read outside a route.
            if started:
                raise
            await _too_large()(scope, receive, send)
