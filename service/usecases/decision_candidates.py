"""The candidates of a decision: every action offered to the customer on this channel, each
through every rule of the gate, with its priority for arbitration; and what the gate saw
besides consents and scores (``GateInputs``), which the record keeps so it can be replayed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consent.rules.catalog import Catalog
from consent.rules.model import Action, Candidate, RuleOutcome
from consent.rules.policy import Policy
from consent.rules.record import GateInputs
from consent.rules.subject import Subject
from consent.rules.vocabulary import NEEDS
from consent.stores.reads import GateRead
from service.usecases.decision_messages import DecideForCustomer, Scored


@dataclass(frozen=True)
class Gated:
    """The candidates, none delivered yet, and the gate's inputs as the record keeps them."""

    candidates: list[Candidate]
    inputs: GateInputs


def offered(action: Action, command: DecideForCustomer, raw: dict[str, Any]) -> bool:
    """Whether ``action`` is a candidate at all: enabled, on this channel, asked for, and its
    trigger holding. A trigger is judged on what is stored; if that is stale, the gate says so."""
    if not action.enabled or command.channel not in action.channels:
        return False
    if command.actions is not None and action.id not in command.actions:
        return False
    return action.applies(raw)


def gate_candidates(
    command: DecideForCustomer,
    now: datetime,
    read: GateRead,
    scored: Scored,
    raw: dict[str, Any],
    *,
    catalog: Catalog,
    policy: Policy,
) -> Gated:
    """Each action ``offered`` on the stored features ``raw``, judged by ``policy`` with the
    scores and fresh values of ``scored``."""
    values, stale, models = scored.values, scored.stale, scored.models
    in_flight = frozenset(n for n in NEEDS if (values.get(f"in_flight_{n}") or 0) > 0)
    facts = read.known.facts if read.known else None
    page = command.context.get("page")
    served = frozenset(models)
    candidates = []
    memo: dict[Any, Any] = {}  # what the rules work out once per decision
    depended: dict[str, frozenset[str]] = {}  # kept for replays (``GateInputs``)
    relevant_stale: set[str] = set()
    for action in catalog.actions.values():
        if not offered(action, command, raw):
            continue
        score = scored.scores.get(action.need) if action.need else None
        if action.need is not None and action.need in models:
            depends_on = depended[action.need] = models[action.need].depends_on
        else:
            depends_on = action.conditioned_on
        relevant_stale.update(depends_on & stale)
        outcomes = policy.evaluate(
            Subject(
                action=action,
                channel=command.channel,
                score=score,
                consents=read.consents,
                now=now,
                facts=facts,
                contacts=read.contacts,
                in_flight=in_flight,
                stale=stale,
                depends_on=depends_on,
                models_served=served,
                customer_id=command.customer_id,
                memo=memo,
            )
        )
        candidates.append(as_candidate(action, score, outcomes, page))
    inputs = GateInputs(
        facts=facts,
        contacts=read.contacts,
        in_flight=tuple(sorted(in_flight)),
        limit=command.limit,
        models_served=tuple(sorted(served)),
        depends_on={need: tuple(sorted(names)) for need, names in depended.items()},
        stale=tuple(sorted(relevant_stale)),
    )
    return Gated(candidates, inputs)


def as_candidate(
    action: Action, score: float | None, outcomes: tuple[RuleOutcome, ...], page: Any
) -> Candidate:
    """``action`` as a candidate, undelivered, its priority the product of its terms."""
    propensity = 1.0 if score is None else score
    context_weight = action.context.get(page, 1.0) if page else 1.0
    return Candidate.model_construct(  # built from the catalog and the gate: valid as is
        action_id=action.id,
        need=action.need,
        kind=action.kind,
        score=score,
        value=action.value,
        priority=round(propensity * action.value * context_weight * action.lever, 6),
        rules=outcomes,
        delivered=False,
        propensity=round(propensity, 6),
        context_weight=context_weight,
        lever=action.lever,
    )
