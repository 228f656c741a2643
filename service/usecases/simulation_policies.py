"""How a simulated bank chooses whom to contact (``simulation.py``): each policy orders the same
opportunities (customers met on a channel) and names the actions it asks the decision service
to choose from.

- ``random``: any of them, any sales action the gate allows;
- ``propensity``: today's arbitration, the highest propensity × value first;
- ``oracle``: the highest true uplift first (the ceiling no real bank can reach).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from service.adapters.features.online_features import OnlineFeatures
from service.usecases.decision_consent import may_profile, may_read_features
from service.usecases.decision_messages import Seen
from service.usecases.simulation_stream import Elsewhere
from training.bank.spec import CHUNK_CUSTOMERS
from training.bank.world import World

if TYPE_CHECKING:
    from service.bootstrap import Container

log = logging.getLogger(__name__)

POLICIES = ("random", "propensity", "oracle")

#: Customers whose online features are read in one round trip.
READ_BATCH = 500


Chosen = tuple[str, str, frozenset[str] | None, Seen | Elsewhere | None]


def seen_in_bulk(
    container: Container, pool: Sequence[tuple[str, str]], at: datetime
) -> list[Seen | None]:
    """Each opportunity's customer as a decision would read her: her features and scores only
    as far as her consents allow (a policy ranks on nothing the gate would not let a decision
    use). Read in bulk: the gate's reads in a few queries, the features in a pipeline per
    ``READ_BATCH``. None where a store did not answer: she is ranked last, and her decision, if
    asked for, reads for itself and fails safe as any decision does."""
    decisions = container.decisions
    customers = sorted({c for c, _ in pool})
    try:
        reads = decisions.read_gates(customers, at)
    except Exception as error:  # ConsentUnavailable
        log.warning("not ranking %d customers: %s: %s", len(customers), type(error).__name__, error)
        return [None] * len(pool)
    wanted = sorted({c for c, channel in pool if may_read_features(reads[c], channel)})
    online: dict[str, OnlineFeatures | None] = {}
    for start in range(0, len(wanted), READ_BATCH):
        batch = wanted[start : start + READ_BATCH]
        try:
            online.update(zip(batch, container.features.read_many(batch), strict=True))
        except Exception as error:  # the online store timing out
            log.warning("not ranking %d customers: %s: %s", len(batch), type(error).__name__, error)
            online.update((c, None) for c in batch)
    # Each opportunity's features as the gate lets her decision read them (None: it may not).
    allowed = [may_read_features(reads[c], channel) for c, channel in pool]
    features = [online[c] if may else None for (c, _), may in zip(pool, allowed, strict=True)]
    profiled = [may_profile(reads[c].consents) for c, _ in pool]
    scored = decisions.score_many(features, at, profiled)
    return [
        None if may and online[c] is None else Seen(at, reads[c], s)  # None: not answered
        for (c, _), may, s in zip(pool, allowed, scored, strict=True)
    ]


def _scores(seen: Seen | Elsewhere) -> dict[str, float]:
    return seen.scores if isinstance(seen, Elsewhere) else seen.scored.scores


def world_of(worlds: list[World], customer_id: str) -> World:
    return worlds[(int(customer_id[1:]) - 1) // CHUNK_CUSTOMERS]


def choose(
    policy: str,
    container: Container,
    pool: Iterable[tuple[str, str]],
    worlds: list[World],
    at: datetime,
    rng: random.Random,
    see: Callable[[Sequence[tuple[str, str]], datetime], Sequence[Seen | Elsewhere | None]]
    | None = None,
) -> list[Chosen]:
    """The opportunities in the order ``policy`` takes them, each with the actions it asks the
    decision service to choose from (None: the catalog's, by today's arbitration). ``see``:
    how the opportunities are read and scored (``seen_in_bulk`` in this process by default;
    what it read in another process is ``Elsewhere`` until fetched)."""
    catalog = container.catalog
    sales = [a for a in catalog.actions.values() if a.kind == "sales" and a.enabled]
    pool = list(pool)
    if policy == "random":
        rng.shuffle(pool)
        out: list[Chosen] = []
        for customer_id, channel in pool:
            fitting = [a.id for a in sales if channel in a.channels]
            actions = frozenset({rng.choice(fitting)}) if fitting else frozenset()
            out.append((customer_id, channel, actions, None))
        return out
    if policy == "propensity":
        ranked = []
        for (customer_id, channel), seen in zip(
            pool,
            see(pool, at) if see is not None else seen_in_bulk(container, pool, at),
            strict=True,
        ):
            best = (
                max(
                    (
                        _scores(seen).get(a.need or "", 0.0) * a.value
                        for a in sales
                        if channel in a.channels
                    ),
                    default=0.0,
                )
                if seen is not None
                else -1.0
            )
            ranked.append((best, customer_id, channel, seen))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        return [(c, ch, None, seen) for _, c, ch, seen in ranked]
    if policy == "oracle":
        ranked_oracle = []
        for customer_id, channel in pool:
            world = world_of(worlds, customer_id)
            row = np.array([world.row(customer_id)])
            options = [
                (float(world.uplift(row, a.need, channel, at)[0]), a.id)
                for a in sales
                if channel in a.channels and a.need is not None
            ]
            if options:
                lift, action_id = max(options)
                ranked_oracle.append((lift, customer_id, channel, action_id))
        ranked_oracle.sort(key=lambda r: (-r[0], r[1]))
        return [(c, ch, frozenset({a}), None) for _, c, ch, a in ranked_oracle]
    raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
