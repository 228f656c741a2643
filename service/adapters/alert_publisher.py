"""New and changed RM alerts published to ``nextbest.alerts.v1``, through Kafka or the local
event log (whichever ``Producer`` the composition root gives), keyed by customer.

The alerts are stored before they are published: the inbox and the API show them whatever the
topic does, so the topic is a feed. A publication that fails is logged and counted, and its
alerts are published with the next one (``AlertFeed``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from service.adapters.metrics import send_failures
from service.adapters.transport import Producer
from service.usecases.alert_model import Alert

log = logging.getLogger(__name__)

#: Alerts whose publication failed wait in memory for the next one (the sweep tries every
#: second); beyond this many the oldest are given up, logged and counted. Their state is in
#: the store either way.
UNPUBLISHED_LIMIT = 10_000

Send = Callable[[Sequence[Alert]], None]


def alerts_publisher(producer: Producer, topic: str) -> Send:
    """Send alerts to ``topic``, each keyed by its customer, and wait for the transport."""

    def publish(alerts: Sequence[Alert]) -> None:
        for alert in alerts:
            producer.send(topic, alert.customer_id, alert.model_dump_json().encode())
        producer.flush()

    return publish


class AlertFeed:
    """What is published of alerts, and what waits because its publication failed.

    ``send`` is None where alerts are not published (a benchmark of the alerter alone)."""

    def __init__(self, send: Send | None = None, limit: int = UNPUBLISHED_LIMIT) -> None:
        self.send = send
        self.limit = limit
        self._unpublished: list[Alert] = []
        self._lock = threading.Lock()

    @property
    def behind(self) -> bool:
        """Whether alerts wait from a publication that failed."""
        return bool(self._unpublished)

    def publish(self, alerts: Sequence[Alert]) -> None:
        """Publish ``alerts`` after those whose publication failed before; if this fails too,
        keep them all (up to ``limit``) for the next try."""
        if self.send is None:
            return
        with self._lock:
            # the topic's readers are not compliance: no rules' reasons
            batch = [*self._unpublished, *(a.redacted() for a in alerts)]
            try:
                self.send(batch)
                self._unpublished = []
            except Exception as error:  # stored already: the inbox has them; the topic lags
                send_failures().labels("alert").inc(len(alerts))
                log.error("alerts: publishing %d alert(s) failed: %s", len(batch), error)
                self._unpublished = batch[-self.limit :]
                if len(batch) > self.limit:
                    given_up = len(batch) - self.limit
                    send_failures().labels("alert_given_up").inc(given_up)
                    log.error("alerts: %d unpublished alert(s) given up", given_up)
