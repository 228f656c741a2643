"""The gate's checks on the evidence behind a personal choice: a model served for the need,
a score above the action's threshold, and fresh features underneath it."""

from __future__ import annotations

from consent.rules.params import NoParams
from consent.rules.subject import Subject, Verdict


def served(subject: Subject, _: NoParams) -> Verdict:
    need = subject.action.need
    if need is None:
        return True, "not chosen by a personal model"
    if subject.models_served is None:
        return True, "which models were served was not recorded; the score rule judges"
    if need in subject.models_served:
        return True, f"a {need} model is served"
    return False, (
        f"no {need} model is served: none is registered, or the registered one is below the "
        "quality floor (a model no better than chance is not used)"
    )


def min_score(subject: Subject, _: NoParams) -> Verdict:
    if subject.action.need is None:
        return True, "not a scored action"
    if subject.score is None:
        return False, f"no {subject.action.need} score (no consent, features or model to score)"
    threshold = subject.action.min_score
    passed = subject.score >= threshold
    return passed, f"score {subject.score:.3f} {'>=' if passed else '<'} threshold {threshold:.3f}"


def fresh(subject: Subject, _: NoParams) -> Verdict:
    stale = sorted(subject.depends_on & subject.stale)
    if not subject.depends_on:
        return True, "depends on no personal features"
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        return False, f"depends on features older than allowed: {shown}"
    return True, "every feature it depends on is fresh"
