from datetime import UTC, datetime
from pathlib import Path

import pytest

from consent.model import ConsentGiven
from consent.policy import Catalog, Policy, PolicyError, Subject

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def consent(purpose: str, channel: str, granted: bool = True) -> ConsentGiven:
    return ConsentGiven(
        customer_id="C1",
        purpose=purpose,
        channel=channel,
        granted=granted,
        recorded_at=NOW,
        source="test",
        notice_version="1",
    )


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load()


@pytest.fixture(scope="module")
def mortgage():
    return Catalog.load().actions["mortgage_consultation"]


def failed(outcomes) -> set[str]:
    return {o.reason_code for o in outcomes if not o.passed}


def test_unknown_consent_is_a_no_and_says_why(policy: Policy, mortgage) -> None:
    outcomes = policy.evaluate(Subject(mortgage, "mobile_app", None, {}))
    assert failed(outcomes) == {
        "NO_CONSENT_FOR_PURPOSE_AND_CHANNEL",
        "NO_PROFILING_CONSENT",
        "SCORE_BELOW_THRESHOLD",
    }
    assert any("unknown consent is a no" in o.detail for o in outcomes)


def test_full_consent_and_a_high_score_pass_every_rule(policy: Policy, mortgage) -> None:
    consents = {
        ("marketing", "mobile_app"): consent("marketing", "mobile_app"),
        ("profiling", "any"): consent("profiling", "any"),
    }
    outcomes = policy.evaluate(Subject(mortgage, "mobile_app", 0.7, consents))
    assert all(o.passed for o in outcomes)
    assert [o.rule_id for o in outcomes] == [r.id for r in policy.rules]


def test_withdrawn_marketing_and_other_channels_do_not_count(policy: Policy, mortgage) -> None:
    consents = {
        ("marketing", "mobile_app"): consent("marketing", "mobile_app", granted=False),
        ("marketing", "email"): consent("marketing", "email"),
        ("profiling", "any"): consent("profiling", "any"),
    }
    outcomes = policy.evaluate(Subject(mortgage, "mobile_app", 0.7, consents))
    assert failed(outcomes) == {"NO_CONSENT_FOR_PURPOSE_AND_CHANNEL"}
    assert any("withdrawn" in o.detail for o in outcomes)


def test_low_score_is_suppressed(policy: Policy, mortgage) -> None:
    consents = {
        ("marketing", "rm"): consent("marketing", "rm"),
        ("profiling", "any"): consent("profiling", "any"),
    }
    outcomes = policy.evaluate(Subject(mortgage, "rm", mortgage.min_score / 2, consents))
    assert failed(outcomes) == {"SCORE_BELOW_THRESHOLD"}


def test_policy_version_is_a_content_hash(tmp_path: Path) -> None:
    packaged = Policy.load()
    copy = tmp_path / "policy.yaml"
    copy.write_text((Path(__file__).parents[2] / "consent" / "policy.yaml").read_text())
    assert Policy.load(copy).version == packaged.version
    copy.write_text(copy.read_text().replace("version: 1", "version: 2"))
    assert Policy.load(copy).version != packaged.version


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nrules:\n  - id: consent.profiling\n    reason_code: X\n"
            "    description: d\n    surprise: 1\n",
            "surprise",
        ),
        (
            "version: 1\nrules:\n  - id: no.such.rule\n    reason_code: X\n    description: d\n",
            "unknown rule",
        ),
        ("version: 1\nrules: []\n", "rules"),
    ],
)
def test_bad_policies_fail_at_load(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=message):
        Policy.load(path)
