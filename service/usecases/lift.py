"""What the recommendations caused, measured against the control groups the decisions kept
(``consent/rules/experiment.py``), and what they cost in annoyance.

- **Per action**: the customers for whom the action was chosen, at their first such decision
  in the period. Treated: it was delivered. Control: it was held out, or she is in the
  universal control group (either way she did not get it, by a draw that knew nothing of her).
  A conversion is an application or a product opened for the action's need, or an RM's
  "converted", within the action's attribution window after that decision. Only decisions
  whose window has closed count (a window still open would count fewer conversions).
- **The programme**: every customer decided for in the period, treatment group against the
  universal control group, converting on any need within ``window_days``.
- **Harm**: declines, complaints and opt-outs per 1,000 sales contacts (complaints and
  opt-outs within ``harm_days`` of a contact), and complaints and opt-outs per 1,000 customers
  in each group of the programme, so the excess the contacts provoked shows.

Customers are joined by their audit pseudonym: an erased customer drops out of the report."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from consent.rules.catalog import Catalog
from service.usecases.lift_stats import Arm, Lift, lift

#: Outcome kinds that are conversions; the others are harm.
CONVERSIONS = frozenset({"application", "product_opened", "rm_converted"})
HARM = ("complaint", "opt_out")
CONTROL_ASSIGNMENTS = frozenset({"held_out", "universal_control"})


@dataclass(frozen=True)
class Exposure:
    ref: str
    action_id: str
    channel: str
    at: datetime
    assignment: str


@dataclass(frozen=True)
class Decided:
    """One decision record, as far as the report reads it."""

    ref: str
    at: datetime
    channel: str
    group: str
    #: action id -> assignment (treatment, held_out, universal_control)
    actions: Mapping[str, str]


@dataclass(frozen=True)
class Happened:
    ref: str
    at: datetime
    kind: str
    need: str | None


@dataclass
class ActionLift:
    action_id: str
    need: str | None
    window_days: int
    lift: Lift
    by_channel: dict[str, Lift] = field(default_factory=dict)
    #: By the week of the first decision (its Monday, ISO date).
    by_week: dict[str, Lift] = field(default_factory=dict)
    #: Decisions in the period whose attribution window had not closed yet.
    open_windows: int = 0


@dataclass
class LiftReport:
    since: datetime
    until: datetime
    observed_until: datetime
    decisions: int
    actions: list[ActionLift]
    programme: Lift
    window_days: int
    #: Declines, complaints and opt-outs per 1,000 sales contacts.
    contacts: int
    per_1000_contacts: dict[str, float]
    #: Complaints and opt-outs per 1,000 customers, by group of the programme.
    harm_by_group: dict[str, dict[str, float]]
    harm_days: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "observed_until": self.observed_until.isoformat(),
            "decisions": self.decisions,
            "window_days": self.window_days,
            "programme": lift_dict(self.programme),
            "actions": [
                {
                    "action_id": a.action_id,
                    "need": a.need,
                    "window_days": a.window_days,
                    "open_windows": a.open_windows,
                    **lift_dict(a.lift),
                    "by_channel": {k: lift_dict(v) for k, v in a.by_channel.items()},
                    "by_week": {k: lift_dict(v) for k, v in a.by_week.items()},
                }
                for a in self.actions
            ],
            "harm": {
                "contacts": self.contacts,
                "harm_days": self.harm_days,
                "per_1000_contacts": self.per_1000_contacts,
                "per_1000_customers_by_group": self.harm_by_group,
            },
        }


def lift_dict(measured: Lift) -> dict[str, Any]:
    low, high = measured.incremental_interval
    return {
        "treated": {
            "customers": measured.treated.customers,
            "converted": measured.treated.converted,
        },
        "control": {
            "customers": measured.control.customers,
            "converted": measured.control.converted,
        },
        "treated_rate": round(measured.treated.rate, 6),
        "control_rate": round(measured.control.rate, 6),
        "difference": round(measured.difference, 6),
        "interval": [round(measured.low, 6), round(measured.high, 6)],
        "confidence": measured.confidence,
        "incremental_conversions": round(measured.incremental, 2),
        "incremental_interval": [round(low, 2), round(high, 2)],
        "measured": measured.measured,
    }


class Timeline:
    """A customer's outcomes by kind, in time order, for window lookups."""

    def __init__(self) -> None:
        self._times: dict[tuple[str, str | None], list[datetime]] = defaultdict(list)

    def add(self, happened: Happened) -> None:
        bisect.insort(self._times[(happened.kind, happened.need)], happened.at)
        if happened.kind in CONVERSIONS:
            bisect.insort(self._times[("conversion", happened.need)], happened.at)
            bisect.insort(self._times[("conversion", None)], happened.at)

    def any_in(self, kind: str, need: str | None, after: datetime, until: datetime) -> bool:
        """Whether one happened in ``(after, until]``."""
        times = self._times.get((kind, need), [])
        i = bisect.bisect_right(times, after)
        return i < len(times) and times[i] <= until

    def times(self, kind: str) -> list[datetime]:
        return self._times.get((kind, None), [])

    def count_in(self, kind: str, after: datetime, until: datetime) -> int:
        times = self._times.get((kind, None), [])
        return bisect.bisect_right(times, until) - bisect.bisect_right(times, after)


def report(
    decided: Iterable[Decided],
    happened: Iterable[Happened],
    declines: int,
    catalog: Catalog,
    *,
    since: datetime,
    until: datetime,
    observed_until: datetime,
    action: str | None = None,
    window_days: int = 30,
    harm_days: int = 7,
) -> LiftReport:
    """The report over the decisions made in ``[since, until)``, with outcomes observed up to
    ``observed_until``; ``declines`` is the number of sales offers declined or dismissed."""
    timelines: dict[str, Timeline] = defaultdict(Timeline)
    for h in happened:
        timelines[h.ref].add(Happened(h.ref, h.at, h.kind, None) if h.kind in HARM else h)
    seen = _Seen.of(decided, since, until, action)
    programme, harm_by_group = _programme(
        seen.programme, timelines, timedelta(days=window_days), observed_until
    )
    after = _after_contacts(seen.contacts, timelines, harm_days)
    return LiftReport(
        since=since,
        until=until,
        observed_until=observed_until,
        decisions=seen.decisions,
        actions=_by_action(seen.first, timelines, catalog, observed_until),
        programme=programme,
        window_days=window_days,
        contacts=len(seen.contacts),
        per_1000_contacts={
            "declines": _per_1000(declines, len(seen.contacts)),
            **{k: _per_1000(v, len(seen.contacts)) for k, v in after.items()},
        },
        harm_by_group=harm_by_group,
        harm_days=harm_days,
    )


@dataclass
class _Seen:
    """The decisions of the period: each customer's first exposure to each action, her first
    decision (with her group), and every sales contact."""

    decisions: int = 0
    first: dict[tuple[str, str], Exposure] = field(default_factory=dict)
    programme: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    contacts: list[tuple[str, datetime]] = field(default_factory=list)

    @classmethod
    def of(
        cls, decided: Iterable[Decided], since: datetime, until: datetime, action: str | None
    ) -> _Seen:
        seen = cls()
        for d in decided:
            if since <= d.at < until:
                seen.add(d, action)
        return seen

    def add(self, d: Decided, action: str | None) -> None:
        self.decisions += 1
        if d.ref not in self.programme or d.at < self.programme[d.ref][0]:
            self.programme[d.ref] = (d.at, d.group)
        for action_id, assignment in d.actions.items():
            if assignment == "treatment":
                self.contacts.append((d.ref, d.at))
            if action is not None and action_id != action:
                continue
            key = (d.ref, action_id)
            if key not in self.first or d.at < self.first[key].at:
                self.first[key] = Exposure(d.ref, action_id, d.channel, d.at, assignment)


def _programme(
    programme: Mapping[str, tuple[datetime, str]],
    timelines: Mapping[str, Timeline],
    window: timedelta,
    observed_until: datetime,
) -> tuple[Lift, dict[str, dict[str, float]]]:
    """Treatment group against control: conversion on any need, and harm per 1,000 customers."""
    arms: dict[str, list[int]] = {"treatment": [0, 0], "control": [0, 0]}
    harm: dict[str, dict[str, int]] = {g: dict.fromkeys(HARM, 0) for g in arms}
    for ref, (at, group) in programme.items():
        if at + window > observed_until:
            continue
        timeline = timelines.get(ref) or Timeline()
        arms[group][0] += 1
        arms[group][1] += timeline.any_in("conversion", None, at, at + window)
        for kind in HARM:
            harm[group][kind] += timeline.count_in(kind, at, at + window)
    per_customer = {
        group: {k: _per_1000(v, arms[group][0]) for k, v in counts.items()}
        for group, counts in harm.items()
    }
    return lift(Arm(*arms["treatment"]), Arm(*arms["control"])), per_customer


def _by_action(
    first: Mapping[tuple[str, str], Exposure],
    timelines: Mapping[str, Timeline],
    catalog: Catalog,
    observed_until: datetime,
) -> list[ActionLift]:
    counts: dict[str, dict[tuple[str, str], list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    open_windows: dict[str, int] = defaultdict(int)
    for (ref, action_id), exposure in first.items():
        known = catalog.actions.get(action_id)
        need = known.need if known is not None else None
        days = known.attribution_days if known is not None else 30
        end = exposure.at + timedelta(days=days)
        if end > observed_until:
            open_windows[action_id] += 1
            continue
        timeline = timelines.get(ref)
        converted = timeline is not None and timeline.any_in("conversion", need, exposure.at, end)
        arm = "control" if exposure.assignment in CONTROL_ASSIGNMENTS else "treated"
        week = (exposure.at.date() - timedelta(days=exposure.at.weekday())).isoformat()
        for part in ("all", f"channel:{exposure.channel}", f"week:{week}"):
            cell = counts[action_id][(part, arm)]
            cell[0] += 1
            cell[1] += converted
    out = []
    for action_id in sorted(set(counts) | set(open_windows)):
        known = catalog.actions.get(action_id)
        cells = counts.get(action_id, {})
        parts = sorted({part for part, _ in cells})

        def measured(part: str, cells: Mapping[tuple[str, str], list[int]] = cells) -> Lift:
            return lift(
                Arm(*cells.get((part, "treated"), [0, 0])),
                Arm(*cells.get((part, "control"), [0, 0])),
            )

        out.append(
            ActionLift(
                action_id=action_id,
                need=known.need if known is not None else None,
                window_days=known.attribution_days if known is not None else 30,
                lift=measured("all"),
                by_channel={
                    p.split(":", 1)[1]: measured(p) for p in parts if p.startswith("channel:")
                },
                by_week={p.split(":", 1)[1]: measured(p) for p in parts if p.startswith("week:")},
                open_windows=open_windows.get(action_id, 0),
            )
        )
    return out


def _after_contacts(
    contacts: list[tuple[str, datetime]], timelines: Mapping[str, Timeline], harm_days: int
) -> dict[str, int]:
    """Complaints and opt-outs within ``harm_days`` after a sales contact, each counted once."""
    span = timedelta(days=harm_days)
    by_ref: dict[str, list[datetime]] = defaultdict(list)
    for ref, at in contacts:
        by_ref[ref].append(at)
    counted = dict.fromkeys(HARM, 0)
    for ref, times in by_ref.items():
        timeline = timelines.get(ref)
        if timeline is None:
            continue
        times.sort()
        for kind in HARM:
            for moment in timeline.times(kind):
                i = bisect.bisect_left(times, moment) - 1
                if i >= 0 and moment - times[i] <= span:
                    counted[kind] += 1
    return counted


def _per_1000(count: int, of: int) -> float:
    return round(1000 * count / of, 3) if of else 0.0
