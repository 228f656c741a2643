"""The bank's words that cross every boundary, declared once: purposes of consent, channels,
and the needs models score.

The event contract (``feature_repo.events``), the consent model and gate
(``consent.rules``), the synthetic bank (``training.bank``) and the service all import them
from here. This module imports nothing of ours, so any layer may depend on it.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Why a customer agreed to be contacted or profiled.
Purpose = Literal["marketing", "profiling", "service"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)

#: Where the bank can reach a customer (and where a consent is given for).
ContactChannel = Literal["mobile_app", "web", "email", "sms", "phone", "rm", "branch"]
CONTACT_CHANNELS: tuple[ContactChannel, ...] = get_args(ContactChannel)

#: What a consent is recorded for: a contact channel, or every channel (profiling is not tied
#: to one).
ANY_CHANNEL: Literal["any"] = "any"
ConsentChannel = Literal[ContactChannel, "any"]

#: Where an event comes from: every contact channel, and the core banking system (payments,
#: products opened and closed), which is no channel to contact anyone on.
Channel = Literal[ContactChannel, "core_banking"]
CHANNELS: tuple[Channel, ...] = (*CONTACT_CHANNELS, "core_banking")

#: The needs the models score, in a fixed order (used for codes and feature names).
Need = Literal[
    "mortgage",
    "investment",
    "protection",
    "credit_card",
    "personal_loan",
    "term_deposit",
    "pension",
]
NEEDS: tuple[Need, ...] = get_args(Need)
