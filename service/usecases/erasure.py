"""Right to erasure: forget a customer everywhere NextBest keeps them.

In one transaction of the operational store: the audit pseudonym key (after which the audit
records can no longer be tied to the person, and the chain still verifies), the consent history,
the contact history, the directory entry and the alerts are deleted, the customer is entered in
the erasure register (``consent/stores/erasure.py``: what keeps a replay, a load or a backfill from
bringing them back) and the erasure is appended to the audit log without the identity (an
operation record, ``erasure``: a random id, the register's reference, who erased, the
counts). Then the online features of every view, the stream's window state, the offline
feature history, the dead letters and, on the local event log, the customer's raw events
(``service/adapters/erasure_purge.py``). Erasing twice is harmless, so a failure half way is fixed
by running it again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from consent.rules.record import OperationRecord
from consent.stores.audit.writes import append_operation_in, erase_customer_key
from consent.stores.contacts import ContactHistory
from consent.stores.customers import CustomerDirectory
from consent.stores.erasure import record_erasure
from consent.stores.outcomes import OutcomeEvents
from consent.stores.registry import ConsentRegistry
from service import __version__ as CODE_VERSION
from service.adapters.alert_store import AlertStore
from service.adapters.erasure_purge import (
    naming,
    purge_kafka_topic,
    purge_offline,
    redact_local_log,
)
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC

if TYPE_CHECKING:
    from service.bootstrap import Container

log = logging.getLogger(__name__)


#: ``OperationRecord.operation`` of an erasure's audit record.
ERASURE = "erasure"


@dataclass(frozen=True)
class CustomerErased:
    """What was deleted (counts only: the report names no one)."""

    erasure_id: str
    audit_key: bool
    consent_entries: int
    contact_entries: int
    directory_entry: bool
    alerts: int
    online_features: bool
    stream_state: bool
    offline_rows: int
    dead_letters: int
    #: Raw events overwritten in the local event log (Kafka's topic keeps them until retention).
    raw_events: int
    #: Outcomes kept for the lift report (applications, complaints, opt-outs).
    outcome_events: int = 0


def erase_customer(container: Container, customer_id: str, principal: str) -> CustomerErased:
    """Erase the customer; ``principal`` (who asked: a key's role and name, or the CLI's user)
    is written to the audit record."""
    erasure_id = f"erasure-{uuid.uuid4().hex}"
    with container.engine.begin() as connection:
        key = erase_customer_key(connection, customer_id)  # first: it takes the chain's lock
        ref = record_erasure(connection, customer_id)
        consents = ConsentRegistry.erase(connection, customer_id)
        contacts = ContactHistory.erase(connection, customer_id)
        directory = CustomerDirectory.erase(connection, customer_id) > 0
        alerts = AlertStore.erase(connection, customer_id)
        outcomes = OutcomeEvents.erase(connection, customer_id)
        counts = {
            "audit_key": key,
            "consent_entries": consents,
            "contact_entries": contacts,
            "directory_entry": directory,
            "alerts": alerts,
            "outcome_events": outcomes,
        }
        record = OperationRecord(
            operation_id=erasure_id,
            operation=ERASURE,
            performed_at=datetime.now(UTC),
            code_version=CODE_VERSION,
            details={"register_ref": ref, "principal": principal, "counts": counts},
        )
        append_operation_in(connection, record)
    container.audit.written(1)
    # From here on the register keeps the stream from writing the customer again.
    container.features.erase(customer_id)
    for states in (container.state_store(), container.alert_memory()):
        try:
            states.delete(customer_id)
        finally:
            states.close()
    timers = container.timer_index()
    try:
        timers.delete(customer_id)
    finally:
        timers.close()
    offline = purge_offline(container.store_location, customer_id)
    letters = purge_dead_letters(container, customer_id)
    raw = 0
    if container.settings.event_transport == "local":
        events = container.settings.topic(EVENTS_TOPIC)
        raw = sum(
            redact_local_log(path, naming(customer_id))
            for path in container.local_log.paths(events)
        )
    log.info(
        "customer erased (%s: %d consent, %d contact entries, %d alerts, %d offline rows, "
        "%d dead letters, %d raw events)",
        erasure_id,
        consents,
        contacts,
        alerts,
        offline,
        letters,
        raw,
    )
    return CustomerErased(
        erasure_id,
        key,
        consents,
        contacts,
        directory,
        alerts,
        True,
        True,
        offline,
        letters,
        raw,
        outcome_events=outcomes,
    )


def purge_dead_letters(container: Container, customer_id: str) -> int:
    """Remove (Kafka) or overwrite (local log) the dead letters naming the customer."""
    settings = container.settings
    topic = settings.topic(DLQ_TOPIC)
    matches = naming(customer_id)
    if settings.event_transport == "kafka":
        return purge_kafka_topic(settings.kafka_bootstrap_servers, topic, matches)
    return sum(redact_local_log(path, matches) for path in container.local_log.paths(topic))
