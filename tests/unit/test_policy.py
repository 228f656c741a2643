"""The compliance gate: every rule allows and suppresses, unknowns take the safe side, and a
policy that is not exactly right does not load."""

import dataclasses
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from consent.rules.catalog import Catalog
from consent.rules.control_checks import held_out, in_universal_control
from consent.rules.documents import PolicyError, content_hash
from consent.rules.model import (
    MAX_COOLOFF_DAYS,
    Action,
    ConsentGiven,
    ContactKind,
    ContactRecord,
    CustomerFacts,
    RuleOutcome,
)
from consent.rules.params import HoldoutParams, QuietHoursParams, UniversalControlParams
from consent.rules.policy import Policy
from consent.rules.subject import Subject
from consent.rules.vocabulary import ConsentChannel, ContactChannel, Purpose

PACKAGED = Path(__file__).parents[2] / "consent" / "policy.yaml"
# 10:00 in London, 18:00 in Shanghai (the packaged default zone): outside quiet hours in both.
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
CHANNELS: tuple[ContactChannel, ...] = (
    "mobile_app",
    "web",
    "email",
    "sms",
    "phone",
    "rm",
    "branch",
)

CATALOG = Catalog.load()
POLICY = Policy.load()

GOOD = CustomerFacts(
    age=40,
    income=80_000,
    timezone="Europe/London",
    kyc_status="complete",
    debt_to_income=0.2,
    risk_level=4,
    risk_assessed_at=NOW - timedelta(days=30),
)


def packaged_params(rule_id: str) -> Any:
    rule = POLICY.rule(rule_id)
    assert rule is not None, f"the packaged policy has {rule_id}"
    return rule.params


UNIVERSAL: UniversalControlParams = packaged_params("control.universal")
#: The packaged policy holds out no action (a bank switches holdouts on per action); the cases
#: hold out with the policy's own rule at a share that does.
HOLDOUT = HoldoutParams(generation="2026-12", default_share=0.1)
HOLDING = Policy(
    tuple(
        dataclasses.replace(rule, params=HOLDOUT) if rule.id == "control.action_holdout" else rule
        for rule in POLICY.rules
    ),
    POLICY.version,
)
SALES_IDS = [a.id for a in CATALOG.actions.values() if a.kind == "sales"]


def first_customer(universal: bool, held_from: tuple[str, ...] = ()) -> str:
    """The first customer id in (or out of) the universal control group, held out of exactly
    the sales actions ``held_from``: found by the policy's own assignment, not assumed."""
    for n in range(100_000):
        customer_id = f"C{n}"
        if in_universal_control(UNIVERSAL, customer_id) != universal:
            continue
        held = tuple(a for a in SALES_IDS if held_out(HOLDOUT, a, customer_id))
        if held == held_from:
            return customer_id
    raise AssertionError("no such customer among the first 100,000 ids")


#: A customer in no control group: every rule allows her what the other facts allow.
TREATED = first_customer(universal=False)
IN_CONTROL = first_customer(universal=True)
HELD_FROM_MORTGAGE = first_customer(universal=False, held_from=("mortgage_consultation",))


def consent(purpose: Purpose, channel: ConsentChannel, granted: bool = True) -> ConsentGiven:
    return ConsentGiven(
        customer_id="C1",
        purpose=purpose,
        channel=channel,
        granted=granted,
        recorded_at=NOW - timedelta(days=1),
        source="test",
        notice_version="1",
    )


CONTACT_PURPOSES: tuple[Purpose, ...] = ("marketing", "service")
ALL_CONSENTS: dict[tuple[Purpose, ConsentChannel], ConsentGiven] = {
    **{(p, c): consent(p, c) for p in CONTACT_PURPOSES for c in CHANNELS},
    ("profiling", "any"): consent("profiling", "any"),
}


def contact(kind: ContactKind = "impression", days_ago: float = 1, **fields: Any) -> ContactRecord:
    fields.setdefault("channel", "rm")
    return ContactRecord(occurred_at=NOW - timedelta(days=days_ago), kind=kind, **fields)


def action(action_id: str, **changes: Any) -> Action:
    return Action(**{**CATALOG.actions[action_id].model_dump(), **changes})


def subject(target: str | Action = "mortgage_consultation", **changes: Any) -> Subject:
    """A customer every rule allows, with ``changes``; ``facts`` takes a dict of fact changes
    (or None: customer unknown to the store)."""
    chosen = target if isinstance(target, Action) else CATALOG.actions[target]
    facts = changes.pop("facts", {})
    values: dict[str, Any] = {
        "action": chosen,
        "channel": "rm" if "rm" in chosen.channels else chosen.channels[0],
        "score": 0.9 if chosen.need else None,
        "consents": ALL_CONSENTS,
        "now": NOW,
        "facts": None if facts is None else CustomerFacts(**{**GOOD.model_dump(), **facts}),
        "customer_id": TREATED,
    }
    return Subject(**{**values, **changes})


def suppressed(outcomes: tuple[RuleOutcome, ...]) -> set[str]:
    return {o.reason_code for o in outcomes if not o.passed and o.reason_code}


def check(s: Subject, expected: set[str], policy: Policy = POLICY) -> tuple[RuleOutcome, ...]:
    outcomes = policy.evaluate(s)
    # Whatever the verdict, every rule answered, once, in the policy's order, and said why.
    assert [(o.rule_id, o.rule_version) for o in outcomes] == [
        (r.id, r.version) for r in policy.rules
    ]
    assert all(o.detail for o in outcomes)
    assert suppressed(outcomes) == expected
    return outcomes


def case(name: str, target: str | Action, expected: str | None, **changes: Any) -> Any:
    return pytest.param(target, changes, {expected} if expected else set(), id=name)


MORTGAGE = "mortgage_consultation"
INVEST = "investment_review"
SERVICE = "overdraft_warning"
NOTICE = "terms_update_notice"
ONLY_SERVICE = {k: v for k, v in ALL_CONSENTS.items() if k[0] == "service"}
NO_RM_MARKETING = {**ALL_CONSENTS, ("marketing", "rm"): consent("marketing", "rm", False)}
NO_PROFILING = {k: v for k, v in ALL_CONSENTS.items() if k[0] != "profiling"}
MARKETING_NOTICE = action(NOTICE, purpose="marketing")
DECLINE = "DECLINED_RECENTLY"
CAP = "CONTACT_CAP_REACHED"
NIGHT = datetime(2026, 11, 29, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai, 14:30 in London
EARLY = datetime(2026, 11, 29, 23, 30, tzinfo=UTC)  # 07:30 in Shanghai
EIGHT = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # 08:00 in Shanghai: quiet hours are over
SHANGHAI = {"timezone": "Asia/Shanghai"}

# fmt: off
CASES = [
    case("clean sales action", MORTGAGE, None),
    case("universal control group", MORTGAGE, "UNIVERSAL_CONTROL", customer_id=IN_CONTROL),
    case("control gets service actions", SERVICE, None, customer_id=IN_CONTROL),
    case("control gets regulatory notices", NOTICE, None, customer_id=IN_CONTROL),
    case("clean service action", SERVICE, None, channel="email"),
    case("clean regulatory notice", NOTICE, None, channel="email"),
    # consent.purpose_channel
    case("marketing withdrawn", MORTGAGE, "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
         consents=NO_RM_MARKETING),
    case("marketing only elsewhere", MORTGAGE, "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
         consents={k: v for k, v in ALL_CONSENTS.items() if k != ("marketing", "rm")}),
    case("sales on service consent", MORTGAGE, "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
         consents={**ONLY_SERVICE, ("profiling", "any"): consent("profiling", "any")}),
    case("service needs service consent", SERVICE, "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
         channel="email", consents={k: v for k, v in ALL_CONSENTS.items() if k[0] != "service"}),
    case("service on service consent alone", SERVICE, None, channel="email",
         consents=ONLY_SERVICE),
    case("regulatory notice needs no consent", NOTICE, None, channel="email", consents={}),
    case("marketing notice needs marketing", MARKETING_NOTICE,
         "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL", channel="email", consents=ONLY_SERVICE),
    # features.fresh
    case("scored on stale features", MORTGAGE, "FEATURES_STALE",
         stale=frozenset({"property_views_7d"}), depends_on=frozenset({"property_views_7d"})),
    case("stale features it does not use", MORTGAGE, None,
         stale=frozenset({"logins_1d"}), depends_on=frozenset({"property_views_7d"})),
    case("trigger on stale features", SERVICE, "FEATURES_STALE", channel="email",
         stale=frozenset({"net_flow_30d"}), depends_on=frozenset({"net_flow_30d"})),
    case("no personal features: nothing to be stale", NOTICE, None, channel="email",
         stale=frozenset({"net_flow_30d"})),
    # consent.profiling
    case("scored without profiling", MORTGAGE, "NO_PROFILING_CONSENT", consents=NO_PROFILING),
    case("service without profiling", SERVICE, None, channel="email", consents=NO_PROFILING),
    # customer.do_not_contact
    case("dnc blocks sales", MORTGAGE, "DO_NOT_CONTACT", facts={"do_not_contact": True}),
    case("dnc blocks service", SERVICE, "DO_NOT_CONTACT", channel="email",
         facts={"do_not_contact": True}),
    case("dnc lets notices go", NOTICE, None, channel="email", facts={"do_not_contact": True}),
    # customer.vulnerable
    case("vulnerable: no sales", MORTGAGE, "VULNERABLE_CUSTOMER", facts={"vulnerable": True}),
    case("vulnerable: service goes", SERVICE, None, channel="email",
         facts={"vulnerable": True}),
    # customer.kyc
    *(
        case(f"kyc {status}", MORTGAGE, "KYC_INCOMPLETE", facts={"kyc_status": status})
        for status in ("pending", "expired", "unknown")
    ),
    case("kyc pending: service goes", SERVICE, None, channel="email",
         facts={"kyc_status": "pending"}),
    # customer.aml
    case("aml: no new products", INVEST, "AML_FLAG", facts={"aml_flag": True}),
    case("aml: service goes", SERVICE, None, channel="email", facts={"aml_flag": True}),
    # lending.affordability
    case("arrears", MORTGAGE, "ARREARS_OR_HIGH_DEBT", facts={"in_arrears": True}),
    case("debt to income high", "credit_card_offer", "ARREARS_OR_HIGH_DEBT",
         facts={"debt_to_income": 0.46}),
    case("debt to income at the limit", "personal_loan_offer", None,
         facts={"debt_to_income": 0.45}),
    case("debt to income unknown", MORTGAGE, "ARREARS_OR_HIGH_DEBT",
         facts={"debt_to_income": None}),
    case("arrears: not lending", INVEST, None, facts={"in_arrears": True}),
    # investment.suitability
    case("risk above tolerance", INVEST, "UNSUITABLE_INVESTMENT", facts={"risk_level": 2}),
    case("risk at tolerance", INVEST, None, facts={"risk_level": 3}),
    case("pension above tolerance", "pension_review", "UNSUITABLE_INVESTMENT",
         facts={"risk_level": 1}),
    case("no assessment", INVEST, "UNSUITABLE_INVESTMENT", facts={"risk_level": None}),
    case("assessment undated", INVEST, "UNSUITABLE_INVESTMENT",
         facts={"risk_assessed_at": None}),
    case("assessment too old", INVEST, "UNSUITABLE_INVESTMENT",
         facts={"risk_assessed_at": NOW - timedelta(days=366)}),
    case("assessment just valid", INVEST, None,
         facts={"risk_assessed_at": NOW - timedelta(days=364)}),
    case("low tolerance: not an investment", MORTGAGE, None, facts={"risk_level": 1}),
    # product.age_limits
    case("too young", MORTGAGE, "AGE_LIMIT", facts={"age": 17}),
    case("too old", MORTGAGE, "AGE_LIMIT", facts={"age": 71}),
    case("oldest allowed", MORTGAGE, None, facts={"age": 70}),
    case("age unknown", "protection_review", "AGE_LIMIT", facts={"age": None}),
    case("pension past 67", "pension_review", "AGE_LIMIT", facts={"age": 68}),
    case("income too low", "credit_card_offer", "AGE_LIMIT", facts={"income": 11_999}),
    case("income unknown", "personal_loan_offer", "AGE_LIMIT", facts={"income": None}),
    case("no limits: age unknown", SERVICE, None, channel="email", facts={"age": None}),
    # product.held_or_in_flight
    case("already holds", MORTGAGE, "ALREADY_HELD_OR_IN_FLIGHT", facts={"holds": ("mortgage",)}),
    case("application in flight", INVEST, "ALREADY_HELD_OR_IN_FLIGHT",
         in_flight=frozenset({"investment"})),
    case("holding an investment allows more", INVEST, None, facts={"holds": ("investment",)}),
    case("holds another product", MORTGAGE, None, facts={"holds": ("credit_card",)}),
    # contact.caps
    case("rm cap reached", MORTGAGE, CAP, contacts=(contact(),)),
    case("rm cap window passed", MORTGAGE, None, contacts=(contact(days_ago=7.5),)),
    case("household counts", MORTGAGE, CAP, contacts=(contact(household=True),)),
    case("answers are not impressions", MORTGAGE, None, contacts=(contact("accept"),)),
    case("all-channel cap", MORTGAGE, CAP, channel="mobile_app",
         contacts=tuple(contact(channel="web", days_ago=d) for d in range(6))),
    case("under all-channel cap", MORTGAGE, None, channel="mobile_app",
         contacts=tuple(contact(channel="web", days_ago=d) for d in range(5))),
    case("service is capped", SERVICE, CAP, channel="email",
         contacts=(contact(channel="email"), contact(channel="email", days_ago=2))),
    case("notices are never capped", NOTICE, None, channel="email",
         contacts=(contact(channel="email"), contact(channel="email", days_ago=2))),
    # contact.cooloff (mortgage: 30 days)
    case("declined", MORTGAGE, DECLINE,
         contacts=(contact("decline", 29, channel="web", action_id=MORTGAGE, need="mortgage"),)),
    case("cool-off over", MORTGAGE, None,
         contacts=(contact("decline", 31, channel="web", action_id=MORTGAGE, need="mortgage"),)),
    case("declined another action for the need", MORTGAGE, DECLINE,
         contacts=(contact("decline", 3, channel="web", action_id="remortgage", need="mortgage"),)),
    case("dismissed", MORTGAGE, DECLINE,
         contacts=(contact("dismiss", 3, channel="web", action_id=MORTGAGE, need="mortgage"),)),
    case("declined another need", MORTGAGE, None,
         contacts=(contact("decline", 3, channel="web", action_id=INVEST, need="investment"),)),
    case("household declines do not count", MORTGAGE, None,
         contacts=(contact("decline", 3, channel="web", need="mortgage", household=True),)),
    case("service dismissed", SERVICE, DECLINE, channel="web",
         contacts=(contact("dismiss", 2, channel="web", action_id=SERVICE),)),
    case("notices have no cool-off", NOTICE, None, channel="web",
         contacts=(contact("dismiss", 0.5, channel="web", action_id=NOTICE),)),
    # contact.quiet_hours (21:00-08:00)
    case("night by email", INVEST, "QUIET_HOURS", channel="email", now=NIGHT, facts=SHANGHAI),
    case("early by phone", INVEST, "QUIET_HOURS", channel="phone", now=EARLY, facts=SHANGHAI),
    case("an RM alert at night", INVEST, None, now=NIGHT, facts=SHANGHAI),
    case("eight o'clock", INVEST, None, channel="email", now=EIGHT, facts=SHANGHAI),
    case("night in the app", INVEST, None, channel="mobile_app", now=NIGHT, facts=SHANGHAI),
    case("notices wait for morning", NOTICE, "QUIET_HOURS", channel="email", now=NIGHT,
         facts=SHANGHAI),
    case("afternoon in London", INVEST, None, channel="email", now=NIGHT),
    case("unknown zone: the bank's", INVEST, "QUIET_HOURS", channel="email", now=NIGHT,
         facts={"timezone": None}),
    case("bad zone: the bank's", INVEST, "QUIET_HOURS", channel="email", now=NIGHT,
         facts={"timezone": "Mars/Olympus"}),
    case("zone folder: the bank's", INVEST, "QUIET_HOURS", channel="email", now=NIGHT,
         facts={"timezone": "Europe"}),
    # customer.open_complaint
    case("open complaint: no sales", MORTGAGE, "OPEN_COMPLAINT", facts={"open_complaint": True}),
    case("open complaint: service goes", SERVICE, None, channel="email",
         facts={"open_complaint": True}),
    # model.served
    case("no model served for the need", MORTGAGE, "NO_MODEL",
         models_served=frozenset({"investment"})),
    case("a model served for the need", MORTGAGE, None, models_served=frozenset({"mortgage"})),
    case("no model served: service goes", SERVICE, None, channel="email",
         models_served=frozenset()),
    case("models served not recorded", MORTGAGE, None, models_served=None),
    # model.min_score
    case("score below threshold", MORTGAGE, "SCORE_BELOW_THRESHOLD", score=0.049),
    case("score at threshold", MORTGAGE, None, score=0.05),
    case("not scored", MORTGAGE, "SCORE_BELOW_THRESHOLD", score=None),
]
# fmt: on


@pytest.mark.parametrize(("target", "changes", "expected"), CASES)
def test_each_rule_allows_and_suppresses(
    target: str | Action, changes: dict[str, Any], expected: set[str]
) -> None:
    check(subject(target, **changes), expected)


def test_the_cases_suppress_by_every_reason_code() -> None:
    codes = {r.reason_code for r in POLICY.rules}
    # HELD_OUT needs a policy that holds out: test_a_held_out_action_is_suppressed_and_only_that_one
    assert {code for p in CASES for code in p.values[2]} | {"HELD_OUT"} == codes


def test_unknown_consent_is_a_no_and_says_why() -> None:
    outcomes = check(
        subject(consents={}), {"NO_CONSENT_FOR_PURPOSE_AND_CHANNEL", "NO_PROFILING_CONSENT"}
    )
    assert any("unknown consent is a no" in o.detail for o in outcomes)


def test_withdrawal_says_when() -> None:
    outcomes = check(subject(consents=NO_RM_MARKETING), {"NO_CONSENT_FOR_PURPOSE_AND_CHANNEL"})
    assert any("withdrawn" in o.detail for o in outcomes)


FACT_RULES_FOR_SALES = {
    "DO_NOT_CONTACT",
    "VULNERABLE_CUSTOMER",
    "KYC_INCOMPLETE",
    "AML_FLAG",
    "AGE_LIMIT",
    "ALREADY_HELD_OR_IN_FLIGHT",
    "OPEN_COMPLAINT",
}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (MORTGAGE, FACT_RULES_FOR_SALES | {"ARREARS_OR_HIGH_DEBT"}),
        (INVEST, FACT_RULES_FOR_SALES | {"UNSUITABLE_INVESTMENT"}),
        (SERVICE, {"DO_NOT_CONTACT"}),
        (NOTICE, set()),
    ],
)
def test_an_unknown_customer_fails_safe(target: str, expected: set[str]) -> None:
    check(subject(target, channel=CATALOG.actions[target].channels[0], facts=None), expected)


def test_a_held_out_action_is_suppressed_and_only_that_one() -> None:
    check(subject(MORTGAGE, customer_id=HELD_FROM_MORTGAGE), {"HELD_OUT"}, policy=HOLDING)
    check(subject(INVEST, customer_id=HELD_FROM_MORTGAGE), set(), policy=HOLDING)
    check(subject(MORTGAGE, customer_id=TREATED), set(), policy=HOLDING)


def test_a_customer_the_gate_cannot_assign_gets_no_sales_action() -> None:
    # A path that forgot to say whose decision it is holds sales back rather than deliver
    # outside the experiment; service still goes.
    outcomes = check(subject(MORTGAGE, customer_id=None), {"UNIVERSAL_CONTROL", "HELD_OUT"})
    assert {o.detail for o in outcomes if not o.passed} == {
        "no customer to assign to a group: held back (fails safe)"
    }
    check(subject(SERVICE, channel="email", customer_id=None), set())


@pytest.mark.parametrize(
    ("start", "end", "local", "quiet"),
    [
        ("21:00", "08:00", "20:59", False),
        ("21:00", "08:00", "21:00", True),
        ("21:00", "08:00", "00:00", True),
        ("21:00", "08:00", "08:00", False),
        ("12:00", "14:00", "11:59", False),
        ("12:00", "14:00", "12:00", True),
        ("12:00", "14:00", "14:00", False),
    ],
)
def test_quiet_hours_may_wrap_midnight(start: str, end: str, local: str, quiet: bool) -> None:
    params = QuietHoursParams(start=start, end=end, default_timezone="UTC")
    assert params.is_quiet(time.fromisoformat(local)) is quiet


def test_rules_that_do_not_apply_pass_and_say_why() -> None:
    outcomes = {o.rule_id: o for o in check(subject(NOTICE, channel="web"), set())}
    assert outcomes["customer.vulnerable"].detail == "does not apply to regulatory actions"
    assert outcomes["contact.caps"].detail == "caps do not apply to regulatory actions"
    assert outcomes["consent.profiling"].detail == "not chosen by a personal model"


@pytest.mark.parametrize(
    ("target", "channel"),
    [(a.id, channel) for a in CATALOG.actions.values() for channel in a.channels],
)
def test_every_catalog_action_passes_for_a_realistic_customer(target: str, channel: str) -> None:
    history = (
        contact(channel="web", days_ago=2, action_id=MORTGAGE, need="mortgage"),
        contact("accept", 2, channel="web", action_id=MORTGAGE, need="mortgage"),
        contact(channel="mobile_app", days_ago=40, household=True),
        contact("decline", 200, channel="email", action_id="pension_review", need="pension"),
    )
    facts = {"holds": ("investment",), "timezone": "Asia/Shanghai"}
    outcomes = check(subject(target, channel=channel, contacts=history, facts=facts), set())
    assert all(o.rule_version.startswith("sha256:") and o.reason_code is None for o in outcomes)


# --- loading ----------------------------------------------------------------------------------


def policy_text(*rules: dict[str, Any], **top: Any) -> str:
    text: str = yaml.safe_dump({"version": 1, "rules": list(rules), **top}, sort_keys=False)
    return text


def rule(rule_id: str, **params: Any) -> dict[str, Any]:
    code = rule_id.upper().replace(".", "_")
    entry: dict[str, Any] = {"id": rule_id, "reason_code": code, "description": "d"}
    if params:
        entry["params"] = params
    return entry


CAPS = [{"channel": "rm", "window_days": 7, "max": 1}]
QUIET = {"default_timezone": "Europe/Berlin"}

# fmt: off
BAD = [
    pytest.param(policy_text(rule("consent.profiling"), owner="x"), "owner", id="top-level key"),
    pytest.param(policy_text({**rule("consent.profiling"), "surprise": 1}), "surprise",
                 id="rule key"),
    pytest.param(policy_text(rule("no.such.rule")), "unknown rule id 'no.such.rule'",
                 id="rule id"),
    pytest.param(policy_text(), "rules", id="no rules"),
    pytest.param(policy_text(rule("consent.profiling"), rule("consent.profiling")),
                 "duplicate rule id", id="duplicate id"),
    pytest.param(policy_text(rule("consent.profiling"), {**rule("customer.aml"),
                 "reason_code": "CONSENT_PROFILING"}), "duplicate reason code",
                 id="duplicate reason code"),
    pytest.param(policy_text({**rule("consent.profiling"), "reason_code": "no consent"}),
                 "reason_code", id="reason code"),
    pytest.param(policy_text(rule("consent.profiling", channel="rm")), "channel",
                 id="params for a rule without any"),
    pytest.param(policy_text(rule("contact.caps", caps=CAPS, houshold=True)), "houshold",
                 id="misspelt param"),
    pytest.param(policy_text(rule("contact.caps")), "caps", id="required param missing"),
    pytest.param(policy_text(rule("contact.caps", caps=[])), "caps", id="no caps"),
    pytest.param(policy_text(rule("contact.caps", caps=[{**CAPS[0], "window_days": -7}])),
                 "window_days", id="negative window"),
    pytest.param(policy_text(rule("contact.caps", caps=[{**CAPS[0], "window_days": "7"}])),
                 "window_days", id="window as text"),
    pytest.param(policy_text(rule("contact.caps", caps=[{**CAPS[0], "max": 0}])), "max",
                 id="cap of zero"),
    pytest.param(policy_text(rule("contact.caps", caps=[{**CAPS[0], "channel": "fax"}])),
                 "channel", id="unknown channel"),
    pytest.param(policy_text(rule("contact.caps", caps=CAPS, applies_to=["regulatory"])),
                 "applies_to", id="capping notices"),
    pytest.param(policy_text(rule("contact.caps", caps=CAPS, household="maybe")), "household",
                 id="household not a bool"),
    pytest.param(policy_text(rule("contact.cooloff", kinds=[])), "kinds", id="no cool-off kinds"),
    pytest.param(policy_text(rule("lending.affordability", max_debt_to_income=0)),
                 "max_debt_to_income", id="zero dti"),
    pytest.param(policy_text(rule("lending.affordability", max_debt_to_income=-0.4)),
                 "max_debt_to_income", id="negative dti"),
    pytest.param(policy_text(rule("lending.affordability", max_debt_to_income=float("inf"))),
                 "max_debt_to_income", id="infinite dti"),
    pytest.param(policy_text(rule("lending.affordability", needs=["car"])), "needs",
                 id="unknown need"),
    pytest.param(policy_text(rule("investment.suitability", assessment_valid_days=0)),
                 "assessment_valid_days", id="no valid days"),
    pytest.param(policy_text(rule("product.held_or_in_flight", allow_held=["car"])),
                 "allow_held", id="unknown allowed need"),
    pytest.param(policy_text(rule("contact.quiet_hours", start="25:00", **QUIET)), "start",
                 id="hour 25"),
    pytest.param(policy_text(rule("contact.quiet_hours", end="8am", **QUIET)), "end",
                 id="time format"),
    pytest.param(policy_text(rule("contact.quiet_hours", start="08:00", end="08:00", **QUIET)),
                 "start and end are equal", id="empty quiet hours"),
    pytest.param(policy_text(rule("contact.quiet_hours", default_timezone="Mars/Olympus")),
                 "unknown time zone", id="bad time zone"),
    pytest.param(policy_text(rule("contact.quiet_hours", default_timezone="Europe")),
                 "unknown time zone", id="zone folder"),
    pytest.param(policy_text(rule("contact.quiet_hours")), "default_timezone",
                 id="no default zone"),
    pytest.param(policy_text(rule("contact.quiet_hours", channels=["pigeon"], **QUIET)),
                 "channels", id="unknown outbound channel"),
    # Unquoted, YAML 1.1 reads 21:00 as the number 1260: it must not become 00:21.
    pytest.param(
        "version: 1\nrules:\n  - id: contact.quiet_hours\n    reason_code: X\n"
        "    description: d\n    params: {start: 21:00, default_timezone: UTC}\n",
        "quoted", id="unquoted time"),
    pytest.param("version: 1\nrules: [\n", "not valid YAML", id="not yaml"),
]
# fmt: on


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_policies_fail_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)


def test_a_bad_param_names_its_rule(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(rule("lending.affordability", max_debt_to_income=0)))
    with pytest.raises(PolicyError, match=r"invalid params for rule lending\.affordability"):
        Policy.load(path)


# --- versions ---------------------------------------------------------------------------------


def test_versions_are_content_hashes() -> None:
    document = yaml.safe_load(PACKAGED.read_text())
    assert POLICY.version == content_hash(document)
    assert [r.version for r in POLICY.rules] == [content_hash(e) for e in document["rules"]]
    outcomes = POLICY.evaluate(subject())
    assert [o.rule_version for o in outcomes] == [r.version for r in POLICY.rules]


def test_comments_and_layout_do_not_change_the_version(tmp_path: Path) -> None:
    copy = tmp_path / "policy.yaml"
    copy.write_text("# reviewed\n" + PACKAGED.read_text().replace("\n\n", "\n"))
    assert Policy.load(copy).version == POLICY.version


def test_a_changed_param_changes_the_policy_and_only_its_rule(tmp_path: Path) -> None:
    copy = tmp_path / "policy.yaml"
    text = PACKAGED.read_text()
    assert "max_debt_to_income: 0.45" in text
    copy.write_text(text.replace("max_debt_to_income: 0.45", "max_debt_to_income: 0.4"))
    changed = Policy.load(copy)
    assert changed.version != POLICY.version
    moved = {
        r.id for r, old in zip(changed.rules, POLICY.rules, strict=True) if r.version != old.version
    }
    assert moved == {"lending.affordability"}
    dti = {"debt_to_income": 0.42}
    check(subject(facts=dti), set())
    check(subject(facts=dti), {"ARREARS_OR_HIGH_DEBT"}, policy=changed)


def test_contact_lookback_covers_every_rule_that_reads_history(tmp_path: Path) -> None:
    assert POLICY.max_contact_lookback_days == MAX_COOLOFF_DAYS
    path = tmp_path / "policy.yaml"
    caps = [{"channel": "any", "window_days": 30, "max": 9}, *CAPS]
    path.write_text(policy_text(rule("consent.profiling"), rule("contact.caps", caps=caps)))
    assert Policy.load(path).max_contact_lookback_days == 30
    path.write_text(policy_text(rule("consent.profiling")))
    assert Policy.load(path).max_contact_lookback_days == 0


def test_the_clock_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        subject(now=NOW.replace(tzinfo=None))


def test_an_outcome_has_a_reason_exactly_when_it_suppresses() -> None:
    with pytest.raises(ValidationError):
        RuleOutcome(rule_id="r", rule_version="v", passed=False)
    with pytest.raises(ValidationError):
        RuleOutcome(rule_id="r", rule_version="v", passed=True, reason_code="X")


# --- the catalog ------------------------------------------------------------------------------


def test_the_catalog_has_service_and_regulatory_actions() -> None:
    kinds = [a.kind for a in CATALOG.actions.values()]
    assert kinds.count("service") >= 3
    assert kinds.count("regulatory") >= 1
    for a in CATALOG.actions.values():
        assert (a.need is None) == (a.kind != "sales")
        assert a.purpose == ("marketing" if a.kind == "sales" else "service")
    assert CATALOG.delivery_threshold("mortgage") == 0.05
    assert CATALOG.delivery_threshold("protection") == 0.02


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_age": 70, "max_age": 18}, "min_age 70 is above max_age 18"),
        ({"purpose": "service"}, "sales action's purpose"),
        ({"min_income": -1}, "min_income"),
        ({"cooloff_days": MAX_COOLOFF_DAYS + 1}, "cooloff_days"),
        ({"min_age": 18, "surprise": 1}, "surprise"),
    ],
)
def test_bad_catalog_entries_fail_at_load(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    entry = {**CATALOG.actions[MORTGAGE].model_dump(mode="json"), **changes}
    path = tmp_path / "actions.yaml"
    path.write_text(yaml.safe_dump({"version": 3, "actions": [entry]}))
    with pytest.raises(PolicyError, match=message):
        Catalog.load(path)
