"""The synthetic bank keeps its statistical promises (tests/unit/test_bank.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from consent.rules.vocabulary import NEEDS
from feature_repo.events import InvalidEvent, parse_event
from training.bank.in_memory import generate
from training.bank.replay import paced
from training.bank.spec import BankSpec


# The statistics need a bank this large: generating it is most of this module's time, so its
# tests are marked slow and left to the full suite (scripts/test --quick skips them).
@pytest.fixture(scope="module")
def bank():
    return generate(BankSpec(seed=2026, customers=20_000, days=90, malformed_fraction=0.0005))


@pytest.mark.slow
def test_monthly_base_rates_per_need_are_between_0_3_and_5_percent(bank) -> None:
    rates = bank.summary["monthly_base_rate_by_need"]
    assert set(rates) == set(NEEDS)
    for need, rate in rates.items():
        assert 0.003 <= rate <= 0.05, (need, rate)


@pytest.mark.slow
def test_oracle_auc_is_sane_and_equals_the_exact_computation(bank) -> None:
    truth = bank.truth
    for need, group in truth.groupby("need"):
        exact = roc_auc_score(group["label"], group["propensity"])
        assert 0.7 <= exact <= 0.95, (need, exact)
        assert bank.summary["oracle_roc_auc_by_need"][need] == pytest.approx(exact, abs=2e-4)


@pytest.mark.slow
def test_the_truth_is_calibrated_against_the_realised_labels(bank) -> None:
    """Sum of true probabilities = expected positives; the realised count is within 4 sigma."""
    for need, group in bank.truth.groupby("need"):
        p = group["propensity"].to_numpy(dtype=float)
        expected, sigma = p.sum(), np.sqrt((p * (1 - p)).sum())
        assert abs(group["label"].sum() - expected) < 4 * sigma + 1, need


@pytest.mark.slow
def test_large_inflow_plus_property_browsing_predicts_mortgage_applications(bank) -> None:
    events = bank.events
    large = events[(events["category"] == "transfer_in") & (events["amount"] >= 100_000)]
    browsing = events[events["page"].isin(["property_listing", "mortgage_calculator"])]
    first_inflow = large.groupby("customer_id")["occurred_at"].min().rename("inflow_at")
    after = browsing.join(first_inflow, on="customer_id", how="inner")
    window = (after["occurred_at"] >= after["inflow_at"]) & (
        after["occurred_at"] <= after["inflow_at"] + pd.Timedelta(days=14)
    )
    pattern = set(after[window].groupby("customer_id").size()[lambda s: s >= 3].index)
    applied = set(
        bank.outcomes.query("need == 'mortgage' and type == 'application'")["customer_id"]
    )
    everyone = set(bank.customers["customer_id"])
    rate_pattern = len(applied & pattern) / len(pattern)
    rate_rest = len(applied - pattern) / len(everyone - pattern)
    assert len(pattern) > 50
    assert rate_pattern > 5 * rate_rest, (rate_pattern, rate_rest)


@pytest.mark.slow
def test_consents_are_distributed_as_configured(bank) -> None:
    mix = bank.spec.consents
    customers = bank.customers["customer_id"]
    consents = bank.consents
    answered = set(consents["customer_id"])
    assert 1 - len(answered) / len(customers) == pytest.approx(mix.never_answered, abs=0.01)
    grants = consents[consents["granted"]]
    app = grants.query("purpose == 'marketing' and channel == 'mobile_app'")
    assert len(app) / len(answered) == pytest.approx(mix.marketing["mobile_app"], abs=0.02)
    profiling = grants.query("purpose == 'profiling'")
    assert len(profiling) / len(answered) == pytest.approx(mix.profiling, abs=0.02)
    withdrawn = consents[~consents["granted"]]
    assert len(withdrawn) / len(grants) == pytest.approx(mix.withdrawn, abs=0.005)
    start, end = pd.Timestamp(bank.spec.start), pd.Timestamp(bank.spec.end)
    assert withdrawn["recorded_at"].between(start, end).all()  # withdrawals happen mid-stream


@pytest.mark.slow
def test_profiles_carry_what_the_gate_needs(bank) -> None:
    profiles = bank.customers
    with_rm = profiles["rm_id"].notna()
    assert (with_rm == profiles["segment"].isin(["affluent", "private", "small_business"])).all()
    assert set(profiles["segment"]) == {"mass", "affluent", "private", "small_business"}
    missing = profiles["risk_level"].isna().mean()
    expired = (
        pd.Timestamp(bank.spec.start) - profiles["risk_assessed_at"] > pd.Timedelta(days=365)
    ).mean()
    assert 0.15 < missing < 0.35 and 0.3 < expired < 0.6
    for flag, low, high in (
        ("vulnerable", 0.01, 0.08),
        ("in_arrears", 0.01, 0.06),
        ("aml_flag", 0.001, 0.01),
    ):
        assert low < profiles[flag].mean() < high, flag
    sizes = profiles.groupby("household_id").size()
    assert sizes.max() <= 4 and (sizes > 1).mean() > 0.3
    assert (profiles.groupby("household_id")["region"].nunique() == 1).all()


@pytest.mark.slow
def test_rhythms_salary_days_and_local_evenings(bank) -> None:
    events = bank.events.merge(bank.customers[["customer_id", "timezone", "salary_day"]])
    shanghai = events[events["timezone"] == "Asia/Shanghai"]
    local = shanghai["occurred_at"].dt.tz_convert("Asia/Shanghai")
    cards = local[shanghai["category"] == "card_purchase"]
    by_hour = cards.dt.hour.value_counts(normalize=True)
    assert by_hour.loc[18:21].sum() > 3 * by_hour.loc[1:4].sum()
    per_day = cards.dt.date.value_counts()
    weekend = per_day[[pd.Timestamp(d).weekday() >= 5 for d in per_day.index]].mean()
    weekday = per_day[[pd.Timestamp(d).weekday() < 5 for d in per_day.index]].mean()
    assert weekend > 1.15 * weekday
    salary = shanghai[shanghai["category"] == "salary"]
    day = salary["occurred_at"].dt.tz_convert("Asia/Shanghai").dt.day
    # Paid on the salary day, or up to two days earlier when it falls on a weekend.
    assert ((salary["salary_day"] - day).isin([0, 1, 2]) | (salary["salary_day"] > 28)).mean() > 0.9


def test_every_event_satisfies_the_contract_and_every_malformed_one_does_not() -> None:
    small = generate(BankSpec(seed=4, customers=400, days=30, malformed_fraction=0.01))
    kinds = set()
    for event in small.event_dicts():
        kinds.add(parse_event(event).type)
    assert kinds == {
        "transaction",
        "page_view",
        "login",
        "application",
        "product_opened",
        "product_closed",
        "contact",
        "profile_update",
    }
    raw = small.tables["malformed"]["raw"].to_pylist()
    assert len(raw) == round(0.01 * small.summary["events"])
    for value in raw:
        with pytest.raises(InvalidEvent):
            parse_event(value)
    times = [t for t, _, _ in small.records()]
    assert times == sorted(times)


def test_replay_paces_by_rate_and_by_event_time() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    records = [(i * 60_000_000, "C1", b"x") for i in range(5)]  # one a minute of event time
    assert len(list(paced(records, rate=2.0, clock=lambda: now[0], sleep=sleep))) == 5
    assert now[0] == pytest.approx(2.0)  # five records at two a second: the last at t=2
    now[0], slept[:] = 0.0, []
    list(paced(records, speedup=60.0, clock=lambda: now[0], sleep=sleep))
    assert now[0] == pytest.approx(4.0)  # four minutes of event time at 60x
    with pytest.raises(ValueError):
        list(paced(records, rate=1.0, speedup=2.0))
