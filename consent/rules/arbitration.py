"""Arbitration: which of the candidates that passed every rule are delivered."""

from __future__ import annotations

from collections.abc import Iterable

from consent.rules.model import Candidate


def arbitrate(
    candidates: Iterable[Candidate], limit: int, holding: frozenset[str] = frozenset()
) -> list[str]:
    """Highest priority first (ties by action id, so a replay gives the same answer), at most
    one action per need, at most ``limit`` in all. Service and regulatory actions compete on
    the same priority as sales ones. A candidate whose only failing rules are in ``holding``
    is chosen too (it holds its place; the caller does not deliver it)."""
    chosen: list[str] = []
    needs: set[str] = set()
    for candidate in sorted(candidates, key=lambda c: (-c.priority, c.action_id)):
        if len(chosen) >= limit:
            break
        if any(not r.passed and r.rule_id not in holding for r in candidate.rules):
            continue
        if candidate.need is not None and candidate.need in needs:
            continue
        chosen.append(candidate.action_id)
        if candidate.need is not None:
            needs.add(candidate.need)
    return chosen
