"""``nextbest simulate``: the synthetic bank run forward day by day in a closed loop through the
real parts. Its customers' events go through the stream worker into the features; the models
trained on its history score them; a targeting policy picks whom to contact; every contact is
decided by the decision service (the gate, arbitration, control groups, the audit log) exactly
as the API decides; the customers answer (``training/bank/world.py``), their answers come back
as feedback and their complaints, opt-outs and applications as events. Each day reports
contacts, conversions, the conversions the contacts caused (against the world without them,
which only a simulation knows), opt-outs and complaints.

Policies (``simulation_policies.py``) pick from the same opportunities each slot (customers
met on a channel: those who logged in, and outbound email and RM contact) under the same
contact budget. The models retrain on what the loop logged (the stream's offline features, the
outcomes it kept) on a schedule, through the retraining job.

The history before the simulated days is loaded as a bank moving onto NextBest loads its
archive: its offline features backfilled and the stream's state seeded where the archive ends
(``pipeline.seed_stream``); ``history="stream"`` publishes it through the worker instead.
"""

from __future__ import annotations

import gc
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from consent.rules.model import ContactKind
from consent.rules.vocabulary import NEEDS
from consent.stores.outcomes import OutcomeEvents
from service.errors import AuditUnavailable, ConsentUnavailable
from service.usecases import pipeline, retrain
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.feedback import RecordFeedback, record_feedback
from service.usecases.simulation_policies import choose, world_of
from service.usecases.simulation_stream import SimulatedStream
from training.bank.chunks import outcomes_table
from training.bank.spec import BankSpec, lively
from training.bank.world import Answer, Delivery, World

if TYPE_CHECKING:
    from service.bootstrap import Container

log = logging.getLogger(__name__)

#: Training starts this far into the history: enough for the windows that matter most, while
#: a 120-day history keeps snapshots to learn from.
WARM_UP_DAYS = 14

#: Opportunities looked at per contact the budget allows (a policy ranks them), and decisions
#: asked for at most per contact (most are refused by the gate: scores below the catalog's
#: thresholds, consent, suitability), which bounds a slot's time whatever the policy.
OPPORTUNITIES_PER_CONTACT = 40
ATTEMPTS_PER_CONTACT = 4
OUTBOUND = ("email", "rm")
INBOUND = ("mobile_app", "web")


@dataclass(frozen=True)
class Plan:
    customers: int = 2_000
    days: int = 10
    history_days: int = 120
    seed: int = 7
    policy: str = "propensity"
    #: Sales contacts per day; default 1% of the customers.
    contacts_per_day: int | None = None
    #: Hours (UTC) at which the bank decides each day.
    slots: tuple[int, ...] = (1, 9, 13)
    #: How the history reaches the stream: seeded from the archive, or published through it.
    history: Literal["seed", "stream"] = "seed"
    #: Days between retrainings on what the loop logged (None: the first models serve on).
    retrain_every_days: int | None = 30

    @property
    def budget(self) -> int:
        return self.contacts_per_day or max(1, self.customers // 100)


@dataclass
class DayReport:
    day: str
    contacts: int = 0
    seen: int = 0
    accepts: int = 0
    declines: int = 0
    conversions: int = 0
    conversions_without_contact: int = 0
    opt_outs: int = 0
    complaints: int = 0
    decisions: int = 0
    #: Decisions refused because the consent store or the audit log did not answer.
    unavailable: int = 0
    seconds: float = 0.0

    @property
    def incremental(self) -> int:
        return self.conversions - self.conversions_without_contact

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "incremental": self.incremental}


@dataclass
class Simulation:
    container: Container
    plan: Plan
    folder: Path
    worlds: list[World] = field(default_factory=list)
    days: list[DayReport] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Each retraining: the day, and per need whether the challenger was promoted and why.
    retrainings: list[dict[str, Any]] = field(default_factory=list)

    # --- set up ---------------------------------------------------------------------------
    @cached_property
    def spec(self) -> BankSpec:
        """The bank, ending at today's midnight: the simulated days pass the stream's bounds on
        event times (no later than now)."""
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return BankSpec(
            seed=self.plan.seed,
            customers=self.plan.customers,
            days=self.plan.history_days + self.plan.days,
            end=end,
            situations=lively(),
        )

    def set_up(self) -> None:
        """The bank's history: its customers and consents loaded, its events seeded into the
        stream (or streamed), and a model per need trained on it and served."""
        started = time.perf_counter()
        spec = self.spec
        self.worlds = [World(spec, i, self.plan.days) for i in range(spec.chunks)]
        self.start = spec.start + timedelta(days=self.plan.history_days)
        self.timings["world"] = time.perf_counter() - started
        customers = pd.concat([w.customers for w in self.worlds], ignore_index=True)
        consents = pd.concat([w.consents for w in self.worlds], ignore_index=True)
        pipeline.record_consents(self.container, consents)
        pipeline.write_profiles(self.container, customers, spec.start)
        self._write_history(customers, consents)
        self.now = self.start
        self.container.decisions.clock = lambda: self.now
        loaded = time.perf_counter()
        if self.plan.history == "seed":
            pipeline.backfill(self.container, self.folder, step_days=7)
            pipeline.seed_stream(self.container, self.folder)
        self.stream = SimulatedStream(self.container, lambda: round(self.now.timestamp() * 1e6))
        if self.plan.history == "stream":
            self._stream(spec.start, self.start)
        self.timings["history"] = time.perf_counter() - loaded
        trained = time.perf_counter()
        self.trained = pipeline.train_from_bank(
            self.container, self.folder, NEEDS, step_days=7, warm_up_days=WARM_UP_DAYS
        )
        self.container.models.refresh()
        self.timings["train"] = time.perf_counter() - trained

    def _write_history(self, customers: pd.DataFrame, consents: pd.DataFrame) -> None:
        """The history as a bank's archive: its customers, consents, events (one file per
        chunk), outcomes and span, and the oracle's propensities training compares with."""
        events = self.folder / "events"
        events.mkdir(parents=True, exist_ok=True)
        customers.to_parquet(self.folder / "customers.parquet")
        consents.to_parquet(self.folder / "consents.parquet")
        cut = pa.scalar(self.start, pa.timestamp("us", tz="UTC"))
        outcomes = []
        for w in self.worlds:
            before = w.events.filter(pa.compute.less(w.events["occurred_at"], cut))
            pq.write_table(before, events / f"chunk-{w.index:04d}.parquet")
            outcomes.append(outcomes_table(before))
        self.history_outcomes = pa.concat_tables(outcomes).to_pandas()
        self.history_outcomes.to_parquet(self.folder / "outcomes.parquet")
        history = replace(self.spec, days=self.plan.history_days, end=self.start)
        truth = pa.concat_tables([w.history_truth(history) for w in self.worlds])
        truth.to_pandas().to_parquet(self.folder / "truth.parquet")
        (self.folder / "bank.json").write_text(json.dumps({"spec": history.as_dict()}))

    def _retrain(self, until: datetime) -> None:
        """The retraining job on what the loop logged up to ``until``: the offline features the
        stream wrote, and the outcomes it kept (the history's, then the simulated days')."""
        started = time.perf_counter()
        logged = [
            o
            for o in OutcomeEvents(self.container.engine).between(self.start, until)
            if o.kind in ("application", "product_opened") and o.need is not None
        ]
        since = pd.DataFrame(
            {
                "customer_id": [o.customer_id for o in logged],
                "need": [o.need for o in logged],
                "type": [o.kind for o in logged],
                "occurred_at": pd.to_datetime([o.occurred_at for o in logged], utc=True),
                "event_id": [o.event_id for o in logged],
            }
        )
        outcomes = pd.concat([self.history_outcomes, since], ignore_index=True)
        outcomes.to_parquet(self.folder / "outcomes.parquet")
        span = replace(self.spec, days=(until - self.spec.start).days, end=until)
        (self.folder / "bank.json").write_text(json.dumps({"spec": span.as_dict()}))
        verdicts = retrain.retrain(
            self.container, self.folder, step_days=7, warm_up_days=WARM_UP_DAYS
        )
        self.container.models.refresh()
        self.stream.refresh_models()
        self.retrainings.append(
            {
                "day": until.date().isoformat(),
                "seconds": round(time.perf_counter() - started, 1),
                "verdicts": {
                    v.need: {"promoted": v.promoted, "reason": v.reason} for v in verdicts
                },
            }
        )

    def _stream(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Publish what happened in ``[since, until)`` and process it, the clock at ``until``;
        returns the events."""
        events: list[dict[str, Any]] = []
        for world in self.worlds:
            events += world.events_between(since, until)
        events.sort(key=lambda e: e["occurred_at"])
        pipeline.publish_events(self.container, events)
        self.now = until
        self.stream.drain()
        self.container.features.pipeline.refresh()  # type: ignore[union-attr]
        return events

    def summary(self) -> dict[str, Any]:
        """The plan, each day, the totals and the rates per 1,000 contacts, and timings."""
        total = DayReport("total")
        for day in self.days:
            for counted in fields(DayReport)[1:]:  # every count, and the seconds
                name = counted.name
                setattr(total, name, getattr(total, name) + getattr(day, name))
        per = 1000 / total.contacts if total.contacts else 0.0
        return {
            "plan": asdict(self.plan),
            "days": [d.as_dict() for d in self.days],
            "totals": {
                **total.as_dict(),
                "incremental_per_1000_contacts": round(total.incremental * per, 2),
                "opt_outs_per_1000_contacts": round(total.opt_outs * per, 2),
                "complaints_per_1000_contacts": round(total.complaints * per, 2),
            },
            "retrainings": self.retrainings,
            "seconds": {k: round(v, 2) for k, v in self.timings.items()},
        }

    def world_of(self, customer_id: str) -> World:
        return world_of(self.worlds, customer_id)

    # --- the loop -------------------------------------------------------------------------
    def run(self, on_day: Callable[[DayReport], None] | None = None) -> list[DayReport]:
        # The world, the history and the models, built once, live to the end: kept out of the
        # cyclic collector, whose full collections would otherwise walk all of them again and
        # again as the days allocate.
        gc.freeze()
        try:
            return self._run(on_day)
        finally:
            gc.unfreeze()
            self.stream.close()

    def _run(self, on_day: Callable[[DayReport], None] | None) -> list[DayReport]:
        for offset in range(self.plan.days):
            started = time.perf_counter()
            day = self.start + timedelta(days=offset)
            report = DayReport(day.date().isoformat())
            moment = day
            for slot, hour in enumerate(self.plan.slots):
                at = day + timedelta(hours=hour)
                logged_in = _logins(self._stream(moment, at))
                moment = at
                self._contacts(report, offset, slot, at, logged_in)
            midnight = day + timedelta(days=1)
            for world in self.worlds:
                drawn = world.end_day(world.day_of(day))
                report.conversions += drawn.applied
                report.conversions_without_contact += drawn.applied_without
            self._stream(moment, midnight)
            every = self.plan.retrain_every_days
            if every and (offset + 1) % every == 0 and offset + 1 < self.plan.days:
                self.stream.drain()  # the offline rows durable before training reads them
                self._retrain(midnight)
            report.seconds = round(time.perf_counter() - started, 3)
            self.days.append(report)
            if on_day is not None:
                on_day(report)
        return self.days

    def _contacts(
        self, report: DayReport, day: int, slot: int, at: datetime, logged_in: list[tuple[str, str]]
    ) -> None:
        budget = self.plan.budget // len(self.plan.slots) + (
            slot < self.plan.budget % len(self.plan.slots)
        )
        # The same opportunities whatever the policy: policies differ in what they choose.
        rng = random.Random(f"{self.plan.seed}:{day}:{slot}")
        count = budget * OPPORTUNITIES_PER_CONTACT
        inbound = rng.sample(logged_in, min(len(logged_in), count // 2))
        everyone = [c for w in self.worlds for c in w.ids]
        outbound = rng.sample(everyone, min(len(everyone), count - len(inbound)))
        pool = inbound + [(c, rng.choice(OUTBOUND)) for c in outbound]
        chosen = choose(
            self.plan.policy, self.container, pool, self.worlds, at, rng, see=self.stream.see
        )[: budget * ATTEMPTS_PER_CONTACT]
        # What another process read is brought here only for the opportunities decided.
        seen_all = self.stream.fetch([seen for *_, seen in chosen])
        delivered: list[Delivery] = []
        for (customer_id, channel, actions, _), seen in zip(chosen, seen_all, strict=True):
            if len(delivered) >= budget:
                break
            command = DecideForCustomer(
                customer_id,
                channel,
                1,
                trigger={"kind": "simulation", "policy": self.plan.policy},
                actions=actions,
            )
            report.decisions += 1
            try:
                made = self.container.decisions.decide(command, seen)
            except (ConsentUnavailable, AuditUnavailable) as refused:  # nothing delivered
                log.warning("decision for %s refused: %s", customer_id, refused.code)
                report.unavailable += 1
                continue
            for action_id in made.record.delivered:
                action = self.container.catalog.actions[action_id]
                if action.kind == "sales" and action.need is not None:
                    delivered.append(
                        Delivery(
                            customer_id,
                            action_id,
                            action.need,
                            channel,
                            at,
                            made.record.decision_id,
                        )
                    )
        answers = [a for d in delivered for a in self.world_of(d.customer_id).respond([d])]
        self._feedback(answers, at)
        self.deliveries += delivered
        report.contacts += len(delivered)
        report.seen += sum(a.seen for a in answers)
        report.accepts += sum(a.reply == "accept" for a in answers)
        report.declines += sum(a.reply == "decline" for a in answers)
        report.complaints += sum(a.complained for a in answers)
        report.opt_outs += sum(a.opted_out for a in answers)

    def _feedback(self, answers: Sequence[Answer], at: datetime) -> None:
        c = self.container
        for answer in answers:
            if not answer.seen:
                continue
            d = answer.delivery
            kinds: list[tuple[ContactKind, datetime]] = [("impression", at)]
            if answer.reply is not None:
                kinds.append((answer.reply, at + timedelta(minutes=5)))
            for kind, when in kinds:
                record_feedback(
                    RecordFeedback(
                        d.customer_id, d.action_id, d.channel, kind, d.decision_id, when
                    ),
                    "simulation",
                    c.catalog,
                    c.directory,
                    c.contacts,
                    c.settings.time_bounds,
                    at + timedelta(minutes=10),
                )


def _logins(events: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """Customers met on an inbound channel: those who logged in."""
    met = {
        (e["customer_id"], e["channel"])
        for e in events
        if e["type"] == "login" and e["channel"] in INBOUND
    }
    return sorted(met)
