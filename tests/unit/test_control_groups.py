"""Control groups: who is held back is stable, nested and of the share the policy sets; a
customer in the universal control group gets no sales action, a held-out action keeps its place,
and the record says what happened to each chosen sales action and with what probability."""

import dataclasses
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consent.rules.control_checks import (
    BUCKETS,
    HOLDOUT_RULE,
    UNIVERSAL_RULE,
    bucket,
    held_out,
    in_share,
    in_universal_control,
)
from consent.rules.experiment import arbitrate_with_control
from consent.rules.model import ActionKind, Candidate, RuleOutcome
from consent.rules.params import HoldoutParams, UniversalControlParams
from consent.rules.policy import Policy
from consent.rules.vocabulary import NEEDS

POLICY = Policy.load()


def packaged(rule_id: str) -> Any:
    rule = POLICY.rule(rule_id)
    assert rule is not None, f"the packaged policy has {rule_id}"
    return rule.params


UNIVERSAL: UniversalControlParams = packaged(UNIVERSAL_RULE)
#: The packaged policy holds out no action until the bank says so: these tests hold out 10%.
HOLDOUT = HoldoutParams(generation="2026-12", default_share=0.1)
HOLDING = Policy(
    tuple(
        dataclasses.replace(rule, params=HOLDOUT) if rule.id == HOLDOUT_RULE else rule
        for rule in POLICY.rules
    ),
    POLICY.version,
)
IDS = [f"C{n:06d}" for n in range(40_000)]

generations = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
shares = st.floats(min_value=0.0, max_value=0.5, allow_nan=False)
customer_ids = st.text(min_size=1, max_size=40)


@given(generations, shares, shares, customer_ids)
def test_raising_a_share_keeps_every_member(
    generation: str, low: float, high: float, customer_id: str
) -> None:
    low, high = sorted((low, high))
    if in_share(generation, low, "universal", customer_id):
        assert in_share(generation, high, "universal", customer_id)


@given(generations, customer_ids)
def test_a_customer_s_bucket_is_stable_and_in_range(generation: str, customer_id: str) -> None:
    first = bucket(generation, "universal", customer_id)
    assert first == bucket(generation, "universal", customer_id)
    assert 0 <= first < BUCKETS
    assert not in_share(generation, 0.0, "universal", customer_id)


def test_the_share_held_back_is_the_share_set() -> None:
    # 40,000 customers: the standard error of a 5% share is 0.11 points; 4 of them is the bound.
    for share in (0.02, 0.05, 0.2):
        params = UniversalControlParams(generation="g1", share=share)
        observed = sum(in_universal_control(params, c) for c in IDS) / len(IDS)
        assert abs(observed - share) < 4 * (share * (1 - share) / len(IDS)) ** 0.5


def test_assignments_are_independent_of_each_other_and_of_the_generation() -> None:
    universal = UniversalControlParams(generation="g1", share=0.2)
    holdout = HoldoutParams(generation="g1", default_share=0.2)
    control = {c for c in IDS if in_universal_control(universal, c)}
    mortgage = {c for c in IDS if held_out(holdout, "mortgage_consultation", c)}
    loan = {c for c in IDS if held_out(holdout, "personal_loan_offer", c)}
    reshuffled = {
        c
        for c in IDS
        if in_universal_control(UniversalControlParams(generation="g2", share=0.2), c)
    }
    expected = 0.04 * len(IDS)  # 20% of 20% when independent
    bound = 4 * (len(IDS) * 0.04 * 0.96) ** 0.5
    for a, b in ((control, mortgage), (mortgage, loan), (control, reshuffled)):
        assert abs(len(a & b) - expected) < bound


def test_a_share_per_action_overrides_the_default() -> None:
    holdout = HoldoutParams(
        generation="g1", default_share=0.0, shares={"mortgage_consultation": 0.3}
    )
    assert not any(held_out(holdout, "personal_loan_offer", c) for c in IDS[:5_000])
    held = sum(held_out(holdout, "mortgage_consultation", c) for c in IDS) / len(IDS)
    assert abs(held - 0.3) < 0.01


# --- arbitration under control groups ---------------------------------------------------------

KINDS: tuple[ActionKind, ...] = ("sales", "service", "regulatory")


def _outcome(rule_id: str, passed: bool) -> RuleOutcome:
    code = {UNIVERSAL_RULE: "UNIVERSAL_CONTROL", HOLDOUT_RULE: "HELD_OUT"}.get(rule_id, "OTHER")
    return RuleOutcome(rule_id=rule_id, passed=passed, reason_code=None if passed else code)


@st.composite
def candidate_sets(draw: Any) -> tuple[list[Candidate], int, str]:
    customer_id = draw(customer_ids)
    n = draw(st.integers(min_value=0, max_value=10))
    candidates = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        action_id = f"action_{i}"
        sales = kind == "sales"
        in_control = in_universal_control(UNIVERSAL, customer_id)
        held = held_out(HOLDOUT, action_id, customer_id)
        rules = (
            _outcome("other.rule", draw(st.booleans())),
            _outcome(UNIVERSAL_RULE, not (sales and in_control)),
            _outcome(HOLDOUT_RULE, not (sales and held)),
        )
        candidates.append(
            Candidate(
                action_id=action_id,
                need=draw(st.sampled_from((None, *NEEDS))),
                kind=kind,
                score=None,
                value=1.0,
                priority=draw(st.floats(min_value=0, max_value=10, allow_nan=False)),
                rules=rules,
                delivered=False,
            )
        )
    return candidates, draw(st.integers(min_value=1, max_value=4)), customer_id


@settings(max_examples=300)
@given(candidate_sets())
def test_no_sales_action_reaches_the_control_group_and_a_held_out_one_keeps_its_place(
    drawn: tuple[list[Candidate], int, str],
) -> None:
    candidates, limit, customer_id = drawn
    by_id = {c.action_id: c for c in candidates}
    result = arbitrate_with_control(candidates, limit, HOLDING, customer_id)
    control = result.control
    assert control is not None
    assert len(result.delivered) <= limit
    delivered_kinds = {by_id[a].kind for a in result.delivered}
    if control.group == "control":
        assert "sales" not in delivered_kinds
        assert all(a.assignment == "universal_control" for a in control.actions.values())
    for action_id in result.delivered:
        assert all(r.passed for r in by_id[action_id].rules)
    held = [a for a, v in control.actions.items() if v.assignment == "held_out"]
    treated = [a for a, v in control.actions.items() if v.assignment == "treatment"]
    assert set(treated) == {a for a in result.delivered if by_id[a].kind == "sales"}
    if control.group == "treatment":
        # A held-out action took a place: with it, no more than the limit were chosen.
        assert len(result.delivered) + len(held) <= limit
    for assigned in control.actions.values():
        assert 0.0 <= assigned.probability <= 1.0


def test_the_probabilities_follow_the_shares() -> None:
    share, held = UNIVERSAL.share, HOLDOUT.default_share
    seen: dict[str, float] = {}
    for customer_id in IDS[:3_000]:
        [candidate] = candidate_for(customer_id)
        result = arbitrate_with_control([candidate], 1, HOLDING, customer_id)
        assert result.control is not None
        for assigned in result.control.actions.values():
            seen[assigned.assignment] = assigned.probability
    assert seen == {
        "treatment": round((1 - share) * (1 - held), 6),
        "held_out": round((1 - share) * held, 6),
        "universal_control": share,
    }


def candidate_for(customer_id: str) -> list[Candidate]:
    control = in_universal_control(UNIVERSAL, customer_id)
    held = held_out(HOLDOUT, "mortgage_consultation", customer_id)
    return [
        Candidate(
            action_id="mortgage_consultation",
            need="mortgage",
            kind="sales",
            score=0.5,
            value=1.0,
            priority=0.5,
            rules=(_outcome(UNIVERSAL_RULE, not control), _outcome(HOLDOUT_RULE, not held)),
            delivered=False,
        )
    ]
