"""Alerts published to ``nextbest.alerts.v1`` are not lost silently: a send the transport does
not acknowledge (here the local event log, unwritable) is logged, counted, and published with
the next publication or sweep once the transport takes records again."""

from __future__ import annotations

import json

from prometheus_client import REGISTRY

from service.adapters.alert_publisher import alerts_publisher
from service.adapters.metrics import send_failures
from service.adapters.transport import ALERTS_TOPIC
from tests.integration.test_alerts import (  # noqa: F401
    EVERYTHING,
    _consent,
    _customer,
    _origin,
    inbox,
    setup,
)


def test_an_alert_the_transport_refused_is_published_at_the_next_sweep(setup, inbox) -> None:  # noqa: F811
    alerter, features, container = setup
    topic = container.settings.topic(ALERTS_TOPIC)
    alerter.feed.send = alerts_publisher(container.producer(), topic)
    log_file = container.local_log.path(topic)
    log_file.mkdir(parents=True)  # the transport cannot write the topic
    send_failures()  # registered

    def failed() -> float:
        value = REGISTRY.get_sample_value("nextbest_send_failures_total", {"what": "alert"})
        return value or 0.0

    failed_before = failed()

    _customer(container, "C1")
    _consent(container, "C1", *EVERYTHING)
    features.set("C1", mortgage_calculator_views_7d=5)
    [alert] = alerter.process({"C1": _origin(1)})
    assert failed() == failed_before + 1
    assert not log_file.is_file()

    log_file.rmdir()  # the transport is back
    inbox.sweep()
    published = [json.loads(r.value or b"") for r in container.consumer(ALERTS_TOPIC).poll(10)]
    assert [a["alert_id"] for a in published] == [alert.alert_id]
    inbox.sweep()  # published once: nothing is waiting any more
    assert len(container.consumer(ALERTS_TOPIC).poll(10)) == 1
