"""A synthetic bank that answers back: one chunk of customers, stepped a day at a time through
the simulated period, whose applications respond to what the bank delivers
(``response.py``), deterministic from the seed whatever the bank does.

The history before the simulated period is made as ``chunks.build_chunk`` makes a bank (the
same people, situations and hazards). What does not depend on the bank (logins, payments,
browsing) is drawn once for the whole span and released day by day. Applications in the
simulated period are drawn each day from uniforms drawn up front, ``U < h·F``, where ``h`` is
the customer's hazard and ``F`` what the bank's contacts did to it. The same uniforms against
``h`` alone give the world in which the bank never made contact: the oracle's counterfactual,
exact per customer, at no extra cost. Browsing follows the situations as they would have ended
without the bank (a simplification: a contact that brings an application forward does not
end the browsing earlier).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consent.rules.vocabulary import NEEDS
from training.bank import activity, life, profiles, response
from training.bank.chunks import events_table, truth_table
from training.bank.contract import contract_events
from training.bank.spec import CHUNK_CUSTOMERS, BankSpec

#: Substreams of a chunk's seed: the history is drawn from the chunk's own stream, as a static
#: bank's; these keep the simulated period's draws apart from it and from each other.
TRAITS, UNIFORMS, RESPONSES, OUTCOMES = 1, 2, 3, 4
NEED_INDEX: dict[str, int] = {need: k for k, need in enumerate(NEEDS)}
APPLY_CHANNELS = ("mobile_app", "web", "branch", "rm")
APPLY_CHANNEL_P = (0.55, 0.25, 0.12, 0.08)


@dataclass(frozen=True)
class Delivery:
    """An action the bank delivered: to whom, for which need, on which channel, when."""

    customer_id: str
    action_id: str
    need: str
    channel: str
    at: datetime
    decision_id: str


Reply = Literal["accept", "decline", "dismiss"]


@dataclass(frozen=True)
class Answer:
    """What the customer did with a delivery: seen or not, accepted, declined or dismissed,
    and whether she complained or withdrew her marketing consent on the channel."""

    delivery: Delivery
    seen: bool
    reply: Reply | None  # None: not seen
    complained: bool
    opted_out: bool


@dataclass
class Day:
    """Applications drawn for one simulated day, with and without the bank's contacts."""

    applied: int = 0
    applied_without: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)


class World:
    def __init__(self, spec: BankSpec, index: int, simulated_days: int) -> None:
        if not 0 < simulated_days < spec.days:
            raise ValueError("the simulated days must be fewer than the bank's days")
        self.spec, self.index = spec, index
        self.history = spec.days - simulated_days
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, index]))
        first = index * CHUNK_CUSTOMERS
        n = min(CHUNK_CUSTOMERS, spec.customers - first)
        who = profiles.people(rng, spec, first, n)
        self.ids = who.profile["customer_id"].to_numpy()
        self.customers = who.profile
        consents = profiles.consents(rng, spec, who)
        self.consents = consents[consents["recorded_at"] < self.start_of(self.history)]
        situations = life.situations(rng, spec, who)
        self._who, self._situations = who, situations
        h = life.hazards(spec, who, situations)
        base = np.array([life.BASE_MONTHLY[need] / 30 for need in NEEDS])
        traits = self._rng(TRAITS)
        in_situation = h[:, :, self.history :].max(axis=2) > 2 * base[None, :]
        self.types = response.types(traits, in_situation)
        h[self.types == response.LOST_CAUSE] *= response.LOST_CAUSE_FACTOR
        self.fit = response.channel_fit(who.age, who.segment, who.login_rate)
        self.tz = np.array([profiles.TIMEZONES[i] for i in who.tz])
        past = life.applications(rng, spec, h[:, :, : self.history])
        self.outcomes_before = past
        em = activity.Emitter(rng, spec, who, profiles.day_offsets(spec.start, spec.days))
        activity.everyday(em)
        activity.situational(em, life.resolved(spec, situations, past))
        activity.outcome_events(em, past)
        events = events_table(spec, index, who, em).sort_by("occurred_at")
        self.events = events
        self._event_us = pc.cast(events["occurred_at"], pa.int64()).to_numpy()
        self.h = h.astype(np.float32)
        self.uniforms = self._rng(UNIFORMS).random((n, len(NEEDS), simulated_days), np.float32)
        available = np.zeros((n, len(NEEDS)), dtype=np.int64)
        np.maximum.at(available, (past.customer, past.need), past.day + spec.cooldown_days + 1)
        self.available = available
        self.available_without = available.copy()
        self.factor = np.ones((n, len(NEEDS)), dtype=np.float32)
        self.factor_until = np.zeros((n, len(NEEDS)), dtype=np.int64)
        self.seen_days: dict[int, list[int]] = defaultdict(list)
        #: Days of each (customer, need)'s applications, with the contacts and without.
        self.applied: dict[tuple[int, int], list[int]] = defaultdict(list)
        self.applied_without: dict[tuple[int, int], list[int]] = defaultdict(list)
        #: Events the bank's contacts caused, not yet released: (time in µs, serial, event).
        self._pending: list[tuple[int, int, dict[str, Any]]] = []
        self._serial = 0

    def history_truth(self, history: BankSpec) -> pa.Table:
        """The oracle's propensities over the history (``history``: the bank up to the
        simulated period), as a static bank's ``truth.parquet`` holds them."""
        h = self.h[:, :, : self.history].astype(np.float64)
        past = self.outcomes_before
        propensity, clairvoyant, label = life.truth(history, self._who, self._situations, h, past)
        return truth_table(history, self.ids, propensity, clairvoyant, label)

    # --- time -------------------------------------------------------------------------------
    def start_of(self, day: int) -> datetime:
        return self.spec.start + timedelta(days=day)

    def day_of(self, moment: datetime) -> int:
        return int((moment - self.spec.start).total_seconds() // 86_400)

    def _rng(self, stream: int, *more: int) -> np.random.Generator:
        return np.random.default_rng(
            np.random.SeedSequence([self.spec.seed, self.index, stream, *more])
        )

    def local_hour(self, rows: np.ndarray, at: datetime) -> np.ndarray:
        # ZoneInfo keeps one instance per zone: no cache of ours.
        return np.array([at.astimezone(ZoneInfo(self.tz[r])).hour for r in rows])

    # --- what happens regardless of the bank ---------------------------------------------
    def events_between(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """The events that do not depend on the bank, in ``[since, until)``, as contract
        events, and those the bank's contacts caused that are due by ``until`` and were not
        released before. An application is drawn at the end of its day with a time during
        the day, so it can be due before ``since``: it arrives late, as real ones do."""
        lo, hi = (int(m.timestamp() * 1_000_000) for m in (since, until))
        i, j = np.searchsorted(self._event_us, [lo, hi], side="left")
        out = list(contract_events(self.events.slice(i, j - i)))
        while self._pending and self._pending[0][0] < hi:
            out.append(heapq.heappop(self._pending)[2])
        return sorted(out, key=lambda e: e["occurred_at"])

    # --- the bank's contacts --------------------------------------------------------------
    def respond(self, deliveries: list[Delivery]) -> list[Answer]:
        """How each customer answers what was delivered to her; a seen contact changes her
        hazard for the need from now on (``factor``)."""
        answers = []
        for delivery in deliveries:
            row = self.row(delivery.customer_id)
            k = NEED_INDEX[delivery.need]
            day = self.day_of(delivery.at)
            draw = self._rng(RESPONSES, row, day, k, response.CHANNEL[delivery.channel]).random(5)
            seen = draw[0] < response.SEEN[delivery.channel]
            if not seen:
                answers.append(Answer(delivery, False, None, False, False))
                continue
            recent = self.recent(row, day)
            hour = response.hour_fit(
                delivery.channel, self.local_hour(np.array([row]), delivery.at)
            )
            kind = self.types[row, k]
            fit = self.fit[row, response.CHANNEL[delivery.channel]]
            factor = float(response.multiplier(np.array([kind]), fit, hour, np.array([recent]))[0])
            self.factor[row, k] = factor
            self.factor_until[row, k] = day + response.EFFECT_DAYS
            self.seen_days[row].append(day)
            harm = float(response.harm_factor(hour, np.array([recent]))[0])
            complained = bool(draw[1] < response.COMPLAIN[kind] * harm)
            opted_out = bool(draw[2] < response.OPT_OUT[kind] * harm)
            reply: Reply = "dismiss"
            if draw[3] < response.ACCEPT[kind] * fit:
                reply = "accept"
            elif draw[3] < response.ACCEPT[kind] * fit + response.DECLINE[kind]:
                reply = "decline"
            answers.append(Answer(delivery, True, reply, complained, opted_out))
            self._after(delivery, complained, opted_out)
        return answers

    def recent(self, row: int, day: int) -> int:
        return sum(1 for d in self.seen_days.get(row, ()) if day - d < response.FATIGUE_DAYS)

    def _after(self, delivery: Delivery, complained: bool, opted_out: bool) -> None:
        """A complaint an hour after the contact, an opt-out two hours after."""
        base = {"customer_id": delivery.customer_id, "schema_version": 1}
        if complained:
            at = delivery.at + timedelta(hours=1)
            self._queue(
                at,
                {
                    **base,
                    "channel": delivery.channel,
                    "type": "contact",
                    "payload": {"reason": "complaint", "channel": delivery.channel},
                },
            )
        if opted_out:
            at = delivery.at + timedelta(hours=2)
            channel = delivery.channel
            self._queue(
                at,
                {
                    **base,
                    "channel": "web",
                    "type": "consent_changed",
                    "payload": {
                        "purpose": "marketing",
                        "channel": channel,
                        "granted": False,
                        "source": "preference_centre",
                        "notice_version": "v1",
                    },
                },
            )

    def _queue(self, at: datetime, event: dict[str, Any]) -> None:
        self._serial += 1
        event = {
            "event_id": f"E{self.spec.seed}-{self.index}-s{self._serial}",
            "occurred_at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **event,
        }
        heapq.heappush(self._pending, (int(at.timestamp()) * 1_000_000, self._serial, event))

    # --- the day's applications -----------------------------------------------------------
    def end_day(self, day: int) -> Day:
        """Draw the applications of ``day`` (with the contacts made so far, and without any),
        and queue their events: the application during the day, the bank's answer and the
        product's opening days later."""
        t = day - self.history
        u = self.uniforms[:, :, t]
        h = self.h[:, :, day]
        factor = np.where(self.factor_until >= day, self.factor, 1.0)
        fires = (u < h * factor) & (day >= self.available)
        fires_without = (u < h) & (day >= self.available_without)
        self.available[fires] = day + self.spec.cooldown_days + 1
        self.available_without[fires_without] = day + self.spec.cooldown_days + 1
        rows, needs = np.nonzero(fires)
        for r, k in zip(rows, needs, strict=True):
            self.applied[(int(r), int(k))].append(day)
            self._application(int(r), int(k), day)
        for r, k in zip(*np.nonzero(fires_without), strict=True):
            self.applied_without[(int(r), int(k))].append(day)
        return Day(len(rows), int(fires_without.sum()))

    def _drawn(self, row: int, k: int, day: int) -> tuple[np.random.Generator, str, datetime]:
        """An application's channel and time, drawn from its own stream: the same whether or
        not the bank's contacts made it happen."""
        rng = self._rng(OUTCOMES, row, k, day)
        channel = APPLY_CHANNELS[int(rng.choice(len(APPLY_CHANNELS), p=APPLY_CHANNEL_P))]
        applied_at = self.start_of(day) + timedelta(seconds=int(rng.integers(8 * 3600, 22 * 3600)))
        return rng, channel, applied_at

    def applied_at(self, row: int, k: int, day: int) -> datetime:
        """When the application of ``day`` is (or would be) made, in either world."""
        return self._drawn(row, k, day)[2]

    def _application(self, row: int, k: int, day: int) -> None:
        rng, channel, applied_at = self._drawn(row, k, day)
        need = NEEDS[k]
        base = {"customer_id": self.ids[row], "schema_version": 1}
        self._queue(
            applied_at,
            {
                **base,
                "channel": channel,
                "type": "application",
                "payload": {"product": need, "status": "submitted"},
            },
        )
        approved = rng.random() < activity.APPROVAL.get(need, activity.DEFAULT_APPROVAL)
        decided = applied_at + timedelta(days=int(rng.integers(1, 10)))
        self._queue(
            decided,
            {
                **base,
                "channel": "core_banking",
                "type": "application",
                "payload": {"product": need, "status": "approved" if approved else "declined"},
            },
        )
        if approved:
            opened = applied_at + timedelta(days=int(rng.integers(3, 21)))
            self._queue(
                opened,
                {
                    **base,
                    "channel": "core_banking",
                    "type": "product_opened",
                    "payload": {"product": need},
                },
            )

    # --- the oracle -----------------------------------------------------------------------
    def row(self, customer_id: str) -> int:
        return int(customer_id[1:]) - 1 - self.index * CHUNK_CUSTOMERS

    def uplift(
        self, rows: np.ndarray, need: str, channel: str, at: datetime, days: int = 30
    ) -> np.ndarray:
        """The true change in each customer's chance of applying for ``need`` within ``days``
        that one contact on ``channel`` at ``at`` makes (what no real bank can know)."""
        k, day = NEED_INDEX[need], self.day_of(at)
        end = min(day + days, self.spec.days)
        h = self.h[rows, k, day:end].astype(np.float64)
        h = np.where(day >= self.available[rows, k], 1.0, 0.0)[:, None] * h
        kind = self.types[rows, k]
        recent = np.array([self.recent(int(r), day) for r in rows])
        hour = response.hour_fit(channel, self.local_hour(rows, at))
        factor = response.multiplier(kind, self.fit[rows, response.CHANNEL[channel]], hour, recent)
        span = np.arange(end - day) < response.EFFECT_DAYS
        boosted = h * np.where(span[None, :], factor[:, None], 1.0)
        p0 = 1 - np.prod(1 - np.clip(h, 0, 1), axis=1)
        p1 = 1 - np.prod(1 - np.clip(boosted, 0, 1), axis=1)
        uplift: np.ndarray = response.SEEN[channel] * (p1 - p0)
        return uplift

    def incremental(self, row: int, need: str, since: int, until: int) -> int:
        """Applications for ``need`` in days ``[since, until)`` with the bank's contacts, minus
        those without: what the contacts caused for this customer (-1, 0 or 1 mostly)."""
        key = (row, NEED_INDEX[need])
        with_ = sum(since <= d < until for d in self.applied.get(key, ()))
        without = sum(since <= d < until for d in self.applied_without.get(key, ()))
        return with_ - without
