from feature_repo.activity import FEATURE_NAMES
from feature_repo.explain import describe
from feature_repo.profile import PROFILE_FEATURE_NAMES


def test_reasons_read_as_words() -> None:
    assert describe("loan_views_7d", 5.0) == "loan calculator views, last 7 days: 5"
    assert describe("inflow_7d", 600_000.0) == "money received, last 7 days: 600,000"
    assert describe("days_since_loan_views", 3.0) == "days since the last loan calculator view: 3"
    assert describe("holds_mortgage", 1.0) == "a mortgage is held: yes"
    assert describe("in_arrears", 0.0) == "a repayment is overdue: no"
    assert describe("loan_views_7d", None) == "loan calculator views, last 7 days: not known"


def test_every_scoring_feature_has_words_not_its_code_name() -> None:
    for name in (*FEATURE_NAMES, *PROFILE_FEATURE_NAMES):
        assert "_" not in describe(name, 1.0), name
