"""Running a process's decisions within its bounds: how many it takes on, how many run at once,
and how long each may take in all."""

from __future__ import annotations

import asyncio
import weakref

from anyio import CapacityLimiter, to_thread

from service.errors import Overloaded
from service.usecases.decision_messages import DecideForCustomer, DecisionMade
from service.usecases.decisions import DecisionService

#: Decisions a process runs at once: on the event loop (PostgreSQL and Redis, see
#: ``DecisionService.decide_async``) or in as many worker threads (the other stores). Requests
#: beyond this wait their turn in the event loop. The gate's read pool keeps as many
#: connections. Under the GIL more threads add no CPU, only waiting, so fewer or more than
#: this serve no faster.
DECISION_THREADS = 16
#: How long a decision may take in all, its wait for a turn (or a thread) included: the gate's
#: read and the audit append have bounds of their own (``consent.stores.bounds``), this is the
#: whole, so a client is answered (503 ``overloaded``) within about two seconds whatever stalls.
DECISION_DEADLINE_S = 1.5


class DecisionRunner:
    """Takes on at most ``max_in_flight`` decisions (running or waiting for a turn); one more
    is refused at once with 503 ``overloaded``, so a stalled database cannot make requests
    pile up. Of those, ``DECISION_THREADS`` run at once, each within ``DECISION_DEADLINE_S``."""

    def __init__(self, max_in_flight: int, deadline_s: float | None = DECISION_DEADLINE_S) -> None:
        self.max_in_flight = max_in_flight
        #: ``None`` where nothing can stall on a network (the embedded store): see ``for_store``.
        self.deadline_s = deadline_s
        #: Decisions taken on and not yet answered (a process serves from one event loop).
        self.in_flight = 0
        # One limiter per event loop: tests run several.
        self._limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def for_store(cls, max_in_flight: int, operational_url: str) -> DecisionRunner:
        """The runner for an operational store at ``operational_url``. The deadline bounds
        waits for a server that stops answering. The embedded store is a local file that has
        no network to stall on (its lock waits have their own bound): there a decision takes
        the time its work takes, and a slow machine answers late, not 503."""
        deadline = None if operational_url.startswith("sqlite") else DECISION_DEADLINE_S
        return cls(max_in_flight, deadline)

    def _limiter(self) -> CapacityLimiter:
        loop = asyncio.get_running_loop()
        limiter = self._limiters.get(loop)
        if limiter is None:
            limiter = self._limiters[loop] = CapacityLimiter(DECISION_THREADS)
        return limiter

    async def decide(self, decisions: DecisionService, command: DecideForCustomer) -> DecisionMade:
        """``decisions`` decides ``command``, within the bounds above."""
        if self.in_flight >= self.max_in_flight:
            raise Overloaded()
        self.in_flight += 1
        try:
            async with asyncio.timeout(self.deadline_s):
                if decisions.asynchronous:  # PostgreSQL and Redis: on the event loop
                    async with self._limiter():
                        return await decisions.decide_async(command)
                # A thread can't be interrupted: past the deadline the client is answered and
                # the thread left to finish within its stores' own bounds, its outcome logged
                # and not delivered (as on the event loop when the deadline falls after the
                # audit append). The limiter still counts it until then.
                return await to_thread.run_sync(
                    decisions.decide, command, limiter=self._limiter(), abandon_on_cancel=True
                )
        except TimeoutError:  # the deadline's: the stages' own become ConsentUnavailable etc.
            raise Overloaded("the decision did not finish in time; nothing was delivered") from None
        finally:
            self.in_flight -= 1
