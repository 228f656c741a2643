"""The alerter's thread beside the stream worker: scores kept ready, RM alerts raised, and the
worker's customers scored again after the served models change.

The worker tells the runner which customers' features it just wrote (``touched``, on the
worker's path, so it only notes them). Events of one customer within ``debounce_seconds`` cost
one rescoring: the runner hands the customers first touched that long ago to the ``Alerter``,
and sweeps the ``AlertInbox`` every second (expiry, queued alerts opened). ``stop`` processes
what is pending, debounced or not, then ends the thread.

Customers go to the alerter a page at a time, those touched by an event first: at midnight the
timers touch every customer whose day counts tick, and an alert that an event just made due
must not wait behind them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from service.usecases.alert_inbox import AlertInbox
from service.usecases.alerter import Alerter
from service.usecases.origin import Origin, TimerOrigin
from service.usecases.score_keeping import Rescoring

log = logging.getLogger(__name__)

#: How long the thread sleeps when nothing wakes it: the debounce's resolution.
TICK_S = 0.05
SWEEP_EVERY_S = 1.0
#: Customers handed to the alerter at a time: an event's alert waits for one page at most.
PAGE = 256


class AlertRunner:
    def __init__(
        self, alerter: Alerter, inbox: AlertInbox, debounce_seconds: float, page: int = PAGE
    ) -> None:
        self.alerter = alerter
        self.inbox = inbox
        self.debounce_seconds = debounce_seconds
        self.page = page
        self._pending: dict[str, tuple[float, Origin | TimerOrigin | None]] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        #: Scores the worker's customers again after the served models change (set with the
        #: worker, which knows its partitions: ``Container.worker``).
        self.rescoring: Rescoring | None = None

    def stats(self) -> dict[str, Any]:
        """The alerter's counters, and the alerts the sweeps withdrew."""
        return {**self.alerter.stats.as_dict(), "withdrawn": self.inbox.withdrawn}

    def touched(self, origins: Mapping[str, Origin | TimerOrigin | None]) -> None:
        """These customers' features were just written (cheap: called on the worker's path).
        An event pending for a customer stays her origin when a timer touches her again."""
        now = time.monotonic()
        with self._mutex:
            for customer, origin in origins.items():
                first = self._pending.get(customer)
                if first is None:
                    self._pending[customer] = (now, origin)
                elif isinstance(origin, TimerOrigin) and not isinstance(first[1], TimerOrigin):
                    continue
                else:
                    self._pending[customer] = (first[0], origin)
        self._wake.set()

    def due(self, now: float | None = None) -> dict[str, Origin | TimerOrigin | None]:
        """At most a page of the customers first touched at least ``debounce_seconds`` ago,
        those touched by an event first (taken off the list)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.debounce_seconds
        with self._mutex:
            ready = [(c, o) for c, (t, o) in self._pending.items() if t <= cutoff]
            if len(ready) > self.page:  # events first; otherwise in the order they came
                ready.sort(key=lambda item: isinstance(item[1], TimerOrigin))
                ready = ready[: self.page]
            for customer, _origin in ready:
                del self._pending[customer]
        return dict(ready)

    @property
    def waiting(self) -> int:
        """Customers touched and not yet handed to the alerter."""
        with self._mutex:
            return len(self._pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alerter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Process what is pending (debounce or not), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        try:  # the models, before the first customer is due (the worker is not waiting)
            self.alerter.prepare()
        except Exception as error:  # tried again when a customer is due
            log.error("alerts: the decision service could not be built yet: %s", error)
        while True:
            stopping = self._stopping.is_set()
            self._wake.wait(TICK_S)
            self._wake.clear()
            ready = self.due(float("inf") if stopping else None)
            try:
                if ready:
                    self.alerter.process(ready)
                    if len(ready) == self.page or stopping:
                        self._wake.set()  # more may be due: the next page without a tick
                if time.monotonic() - self._last_sweep >= SWEEP_EVERY_S:
                    self._last_sweep = time.monotonic()
                    self.inbox.sweep()
                # A page of rescoring when nothing else waits: alerts first.
                rescoring = self.rescoring
                if rescoring is not None and not ready and not stopping and rescoring.round():
                    self._wake.set()
            except Exception as error:  # never let one bad batch stop alerting
                log.exception("alerts: a batch of %d customer(s) failed: %s", len(ready), error)
            if stopping and not self.waiting:
                return
