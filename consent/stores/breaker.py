"""Failing fast while the operational store does not answer.

A database that stalls (a network that drops packets, a server that stops answering without
closing its connections) costs each caller its whole timeout. The decision path asks first: after
a timeout or a lost connection, callers are refused at once for a cool-down; then one caller
probes, the others are still refused until it is answered, and its success closes the breaker.
So at most one caller per cool-down waits for a database that is not answering, and the first
answer after it comes back lets everyone through: recovery needs no restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg

#: How long callers are refused after a failure before one of them tries again.
COOL_DOWN_S = 0.5


class StoreNotAnswering(ConnectionError):
    """Refused without trying: the store failed recently (a ``ConnectionError``, so callers
    treat it as the lost connection it stands for)."""


class Breaker:
    """One per dependency and process (the event loop's callers share it: no lock needed)."""

    def __init__(
        self,
        what: str,
        cool_down_s: float = COOL_DOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.cool_down_s = cool_down_s
        self._clock = clock
        self._tripped = False
        self._open_until = 0.0

    @property
    def tripped(self) -> bool:
        return self._tripped

    def admit(self) -> None:
        """Raise ``StoreNotAnswering`` unless this caller may try. While tripped, the first
        caller after each cool-down is let through as the probe."""
        if not self._tripped:
            return
        now = self._clock()
        if now < self._open_until:
            raise StoreNotAnswering(f"{self.what} failed recently; not trying yet")
        self._open_until = now + self.cool_down_s  # this caller probes; the others wait

    def failed(self) -> None:
        self._tripped = True
        self._open_until = self._clock() + self.cool_down_s

    def succeeded(self) -> None:
        self._tripped = False


async def close_or_drop(connection: asyncpg.Connection) -> None:
    """Close ``connection`` politely, or drop it if the goodbye is not answered in time (its
    ``command_timeout``): a process must be able to stop while its database is stalled."""
    try:
        await connection.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):  # TimeoutError among them
        connection.terminate()
