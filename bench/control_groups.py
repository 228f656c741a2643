"""Benchmark: what control groups add to a decision's gate and arbitration, in process.

For customers who differ only in id (so each lands in her own buckets), every catalog action on
a channel goes through the whole packaged policy and the candidates through arbitration, as
``DecisionMaker.decide`` does between its reads and its record: once with the packaged policy and
``arbitrate_with_control`` (ours), once with the same policy without its two control rules and
plain ``arbitrate`` (the naive way: before control groups). The two alternate, block by block,
so the machine's noise falls on both; medians per decision and their ratio are reported.

    python -m bench.control_groups [--decisions 20000] [--blocks 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import emit
from consent.rules.arbitration import arbitrate
from consent.rules.catalog import Catalog
from consent.rules.control_checks import CONTROL_RULES
from consent.rules.experiment import arbitrate_with_control
from consent.rules.model import ConsentGiven, CustomerFacts
from consent.rules.policy import Policy
from consent.rules.subject import Subject
from service.usecases.decision_candidates import as_candidate

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
CHANNEL = "mobile_app"
FACTS = CustomerFacts(
    age=40,
    income=80_000,
    timezone="Europe/London",
    kyc_status="complete",
    debt_to_income=0.2,
    risk_level=4,
    risk_assessed_at=NOW - timedelta(days=30),
)


def _consents() -> dict[tuple[str, str], ConsentGiven]:
    def given(purpose: str, channel: str) -> ConsentGiven:
        return ConsentGiven(
            customer_id="C",
            purpose=purpose,  # type: ignore[arg-type]
            channel=channel,  # type: ignore[arg-type]
            granted=True,
            recorded_at=NOW - timedelta(days=1),
            source="bench",
            notice_version="1",
        )

    return {
        ("marketing", CHANNEL): given("marketing", CHANNEL),
        ("service", CHANNEL): given("service", CHANNEL),
        ("profiling", "any"): given("profiling", "any"),
    }


def _decide(policy: Policy, catalog: Catalog, customer_id: str, with_control: bool) -> list[str]:
    consents = _consents_cache
    memo: dict[Any, Any] = {}
    candidates = []
    for action in catalog.actions.values():
        if not action.enabled or CHANNEL not in action.channels:
            continue
        score = 0.3 if action.need else None
        outcomes = policy.evaluate(
            Subject(
                action=action,
                channel=CHANNEL,
                score=score,
                consents=consents,
                now=NOW,
                facts=FACTS,
                customer_id=customer_id,
                memo=memo,
            )
        )
        candidates.append(as_candidate(action, score, outcomes, None))
    if with_control:
        return arbitrate_with_control(candidates, 3, policy, customer_id).delivered
    return arbitrate(candidates, 3)


_consents_cache = _consents()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--blocks", type=int, default=10)
    args = parser.parse_args()
    catalog = Catalog.load()
    packaged = Policy.load()
    before = Policy(tuple(r for r in packaged.rules if r.id not in CONTROL_RULES), "before")
    per_block = args.decisions // args.blocks
    times: dict[str, list[float]] = {"ours": [], "naive": []}
    for block in range(args.blocks):
        ids = [f"C{block:02d}{n:07d}" for n in range(per_block)]
        for name, policy, control in (("naive", before, False), ("ours", packaged, True)):
            began = time.perf_counter()
            for customer_id in ids:
                _decide(policy, catalog, customer_id, control)
            times[name].append((time.perf_counter() - began) / per_block * 1e6)
    ours, naive = statistics.median(times["ours"]), statistics.median(times["naive"])
    emit(
        {
            "benchmark": "control_groups",
            "decisions": per_block * args.blocks,
            "blocks": args.blocks,
            "channel": CHANNEL,
            "candidates": sum(
                1 for a in catalog.actions.values() if a.enabled and CHANNEL in a.channels
            ),
            "ours_us_per_decision": {
                "median": round(ours, 2),
                "blocks": [round(t, 2) for t in times["ours"]],
            },
            "naive_us_per_decision": {
                "median": round(naive, 2),
                "blocks": [round(t, 2) for t in times["naive"]],
            },
            "ours_over_naive": round(ours / naive, 3),
            "added_us_per_decision": round(ours - naive, 2),
        }
    )


if __name__ == "__main__":
    main()
