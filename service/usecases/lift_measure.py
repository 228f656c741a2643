"""``nextbest report lift``: the lift report (``lift.py``) over what the stores hold: decisions
from the audit log, outcomes from the stream (``outcome_events``), RM dispositions and
feedback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from consent.stores.audit.reads import export
from consent.stores.outcomes import OutcomeEvents, declines, pseudonyms, rm_conversions
from service.usecases.lift import Decided, Happened, LiftReport, report

if TYPE_CHECKING:
    from service.bootstrap import Container


def measure_lift(
    container: Container,
    since: datetime,
    until: datetime,
    *,
    action: str | None = None,
    observed_until: datetime | None = None,
    window_days: int = 30,
    harm_days: int = 7,
) -> LiftReport:
    """The lift of the decisions made in ``[since, until)``, with outcomes up to
    ``observed_until`` (now, unless a simulation's clock says otherwise)."""
    engine = container.engine
    observed_until = observed_until or datetime.now(UTC)
    outcomes = list(OutcomeEvents(engine).between(since, observed_until))
    outcomes += rm_conversions(engine, since, observed_until)
    refs = pseudonyms(engine, sorted({o.customer_id for o in outcomes}))
    happened = [
        Happened(refs[o.customer_id], o.occurred_at, o.kind, o.need)
        for o in outcomes
        if o.customer_id in refs
    ]
    sales = [a.id for a in container.catalog.actions.values() if a.kind == "sales"]
    return report(
        _decided(container, since),
        happened,
        declines(engine, since, until, sales),
        container.catalog,
        since=since,
        until=until,
        observed_until=observed_until,
        action=action,
        window_days=window_days,
        harm_days=harm_days,
    )


def _decided(container: Container, since: datetime) -> Iterator[Decided]:
    # A record is logged at or after its decision: those decided since ``since`` were logged
    # since then too (with a margin for two processes' clocks), and a simulation's long after.
    for entry in export(container.engine, since=since - timedelta(minutes=5), with_body=False):
        record = entry["record"]
        control = record.get("control")
        if control is None or record.get("delivery_status") == "withheld":
            continue
        yield Decided(
            ref=entry["customer_ref"],
            at=datetime.fromisoformat(record["decided_at"]),
            channel=record["channel"],
            group=control["group"],
            actions={a: v["assignment"] for a, v in control["actions"].items()},
        )
