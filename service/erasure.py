"""Right to erasure: forget a customer everywhere NextBest keeps them.

In one transaction of the operational store: the audit pseudonym key (after which the audit
records can no longer be tied to the person, and the chain still verifies), the consent history,
the contact history and the directory entry. Then the online features of every view and the
stream's window state. Erasing twice is harmless, so a failure half way is fixed by running it
again. The offline feature history (training data) is not rewritten here: see docs/decisions.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consent.audit import erase_customer_key
from consent.contacts import ContactHistory
from consent.customers import CustomerDirectory
from consent.registry import ConsentRegistry
from service.alerts import AlertStore

if TYPE_CHECKING:
    from service.bootstrap import Container

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CustomerErased:
    """What was deleted (counts only: the report names no one)."""

    audit_key: bool
    consent_entries: int
    contact_entries: int
    directory_entry: bool
    online_features: bool
    stream_state: bool


def erase_customer(container: Container, customer_id: str) -> CustomerErased:
    with container.engine.begin() as connection:
        key = erase_customer_key(connection, customer_id)
        consents = ConsentRegistry.erase(connection, customer_id)
        contacts = ContactHistory.erase(connection, customer_id)
        directory = CustomerDirectory.erase(connection, customer_id) > 0
        alerts = AlertStore.erase(connection, customer_id)
    container.features.erase(customer_id)
    for states in (container.state_store(), container.alert_memory()):
        try:
            states.delete(customer_id)
        finally:
            states.close()
    log.info(
        "customer erased (%d consent, %d contact entries, %d alerts)", consents, contacts, alerts
    )
    return CustomerErased(key, consents, contacts, directory, True, True)
