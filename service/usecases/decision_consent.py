"""What a customer's consents let a decision do: read their features, run the models on them,
and which consent records the decision's audit record keeps as relied on."""

from __future__ import annotations

from collections.abc import Mapping

from consent.rules.model import ConsentGiven
from consent.rules.vocabulary import ANY_CHANNEL
from consent.stores.reads import GateRead


def granted(consents: Mapping[tuple[str, str], ConsentGiven], purpose: str, channel: str) -> bool:
    """Whether ``purpose`` on ``channel`` is granted; a consent never given is not."""
    entry = consents.get((purpose, channel))
    return entry is not None and entry.granted


def may_profile(consents: Mapping[tuple[str, str], ConsentGiven]) -> bool:
    """Whether the models may run on the customer's features (profiling, on any channel)."""
    return granted(consents, "profiling", ANY_CHANNEL)


def may_read_features(read: GateRead, channel: str) -> bool:
    """Features are read only for a known customer and a purpose they agreed to: profiling,
    or service on this channel (for service actions' triggers)."""
    return read.known is not None and (
        may_profile(read.consents) or granted(read.consents, "service", channel)
    )


def relied_on(
    consents: Mapping[tuple[str, str], ConsentGiven], channel: str
) -> tuple[ConsentGiven, ...]:
    """The consent records a decision on ``channel`` relies on, as its record keeps them."""
    keys = [(p, channel) for p in ("marketing", "service")] + [("profiling", ANY_CHANNEL)]
    return tuple(consents[k] for k in keys if k in consents)
