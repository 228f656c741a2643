"""The alerter's thread beside the stream worker.

The worker tells the runner which customers' features it just wrote (``touched``, on the
worker's path, so it only notes them). Events of one customer within ``debounce_seconds`` cost
one rescoring: the runner hands the customers first touched that long ago to the ``Alerter``,
and sweeps the ``AlertInbox`` every second (expiry, queued alerts opened). ``stop`` processes
what is pending, debounced or not, then ends the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from service.usecases.alert_inbox import AlertInbox
from service.usecases.alerter import Alerter
from service.usecases.origin import Origin

log = logging.getLogger(__name__)

#: How long the thread sleeps when nothing wakes it: the debounce's resolution.
TICK_S = 0.05
SWEEP_EVERY_S = 1.0


class AlertRunner:
    def __init__(self, alerter: Alerter, inbox: AlertInbox, debounce_seconds: float) -> None:
        self.alerter = alerter
        self.inbox = inbox
        self.debounce_seconds = debounce_seconds
        self._pending: dict[str, tuple[float, Origin | None]] = {}
        self._mutex = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0

    def stats(self) -> dict[str, Any]:
        """The alerter's counters, and the alerts the sweeps withdrew."""
        return {**self.alerter.stats.as_dict(), "withdrawn": self.inbox.withdrawn}

    def touched(self, origins: Mapping[str, Origin | None]) -> None:
        """These customers' features were just written (cheap: called on the worker's path)."""
        now = time.monotonic()
        with self._mutex:
            for customer, origin in origins.items():
                first = self._pending.get(customer)
                self._pending[customer] = (first[0] if first else now, origin)
        self._wake.set()

    def due(self, now: float | None = None) -> dict[str, Origin | None]:
        """Customers first touched at least ``debounce_seconds`` ago (taken off the list)."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.debounce_seconds
        with self._mutex:
            ready = {c: o for c, (t, o) in self._pending.items() if t <= cutoff}
            for customer in ready:
                del self._pending[customer]
        return ready

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
                if time.monotonic() - self._last_sweep >= SWEEP_EVERY_S:
                    self._last_sweep = time.monotonic()
                    self.inbox.sweep()
            except Exception as error:  # never let one bad batch stop alerting
                log.exception("alerts: a batch of %d customer(s) failed: %s", len(ready), error)
            if stopping:
                return
