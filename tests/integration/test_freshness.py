"""Stale data is never used silently: features the pipeline has not kept up to date are served
as missing, the actions that depend on them are withheld with FEATURES_STALE, and the record
keeps every feature's age. A row that says until when it holds (the stream's timers keep it
exact) is stale only when the pipeline is behind; a row that does not say, by its age."""

from __future__ import annotations

from datetime import timedelta

from consent.stores.customers import KnownCustomer
from feature_repo.definitions import MAX_AGE
from service.usecases.decision_messages import DecideForCustomer
from tests.doubles import GOOD_STANDING, EveryoneEngaged, decision_service, grant_all

#: A row that holds until the customer's next event (the double's way of saying inf).
INF = timedelta.max


def _decide(
    embedded,
    age: timedelta,
    valid_for: timedelta | None = None,
    behind: timedelta | None = None,
):
    service = decision_service(embedded.engine, EveryoneEngaged(age, valid_for, behind))
    service.directory.upsert([KnownCustomer("F1", "HF1", None, GOOD_STANDING)])
    grant_all(service.registry, "F1", "mobile_app")
    return service.decide(DecideForCustomer("F1", "mobile_app"))


def test_allowed_ages_follow_the_windows() -> None:
    assert MAX_AGE["logins_1d"] == timedelta(hours=12)
    assert MAX_AGE["property_views_7d"] == timedelta(days=3.5)
    assert MAX_AGE["outflow_90d"] == timedelta(days=45)
    assert MAX_AGE["age"] is None  # an extract holds until the next one


def test_fresh_features_deliver(embedded) -> None:
    made = _decide(embedded, timedelta(minutes=5))
    assert "mortgage_consultation" in made.record.delivered
    assert "FEATURES_STALE" not in made.record.reason_codes


def test_stale_features_withhold_what_depends_on_them_and_say_why(embedded) -> None:
    made = _decide(embedded, timedelta(days=5))  # 7-day windows allow 3.5 days
    record = made.record
    sales = [c for c in record.candidates if c.kind == "sales"]
    assert sales and not any(c.delivered for c in sales)
    for candidate in sales:
        (stale,) = [r for r in candidate.rules if r.rule_id == "features.fresh"]
        assert not stale.passed and "property_views_7d" in stale.detail
    assert "FEATURES_STALE" in record.reason_codes
    ages = {name: read.age_seconds for read in record.features for name in read.values}
    assert ages["property_views_7d"] >= 5 * 86_400 - 5
    assert ages["age"] >= 400 * 86_400 - 5  # profile: old, but allowed


def test_a_feature_just_within_its_age_is_used(embedded) -> None:
    made = _decide(embedded, timedelta(days=3))  # 7-day windows fine, 1-day ones stale
    assert "mortgage_consultation" in made.record.delivered  # depends on 7-day views and age


def test_a_row_from_the_future_is_never_fresh_forever_and_no_age_is_negative(embedded) -> None:
    # A row stamped five days ahead (a clock that ran ahead upstream) had a negative age, which
    # is under every allowed age: it looked fresh until the day it names.
    record = _decide(embedded, timedelta(days=-5)).record
    assert not any(c.delivered for c in record.candidates if c.kind == "sales")
    assert "FEATURES_STALE" in record.reason_codes
    ages = [read.age_seconds for read in record.features if read.age_seconds is not None]
    assert ages and min(ages) >= 0


def test_a_row_a_moment_ahead_reads_as_a_moment_old(embedded) -> None:
    # Clocks of hosts differ by a little: such a row is as fresh as it is close to now.
    record = _decide(embedded, timedelta(seconds=-2)).record
    assert "mortgage_consultation" in record.delivered
    ages = {name: read.age_seconds for read in record.features for name in read.values}
    assert 0 <= ages["property_views_7d"] < 60


def test_a_quiet_customers_exact_row_is_fresh_however_old(embedded) -> None:
    # Her last event was 40 days ago and nothing is inside the windows any more: the row holds
    # until her next event, and the stream is up to date.
    record = _decide(embedded, timedelta(days=40), INF, behind=timedelta(seconds=3)).record
    assert "mortgage_consultation" in record.delivered
    assert "FEATURES_STALE" not in record.reason_codes


def test_a_row_past_its_next_change_beyond_the_lag_is_stale(embedded) -> None:
    # Written ten hours ago, due to change after six: a timer that did not fire.
    record = _decide(embedded, timedelta(hours=10), timedelta(hours=6)).record
    assert "FEATURES_STALE" in record.reason_codes
    # Within the allowed lag (15 minutes) of its change: a midnight's timers still firing.
    record = _decide(embedded, timedelta(hours=10), timedelta(hours=9, minutes=50)).record
    assert "mortgage_consultation" in record.delivered


def test_a_stream_behind_the_clock_makes_every_activity_row_stale(embedded) -> None:
    record = _decide(embedded, timedelta(hours=1), INF, behind=timedelta(minutes=20)).record
    assert "FEATURES_STALE" in record.reason_codes
    assert not any(c.delivered for c in record.candidates if c.kind == "sales")
    record = _decide(embedded, timedelta(hours=1), INF, behind=timedelta(minutes=10)).record
    assert "mortgage_consultation" in record.delivered


def test_a_row_that_says_it_holds_but_is_dated_ahead_is_stale(embedded) -> None:
    record = _decide(embedded, timedelta(days=-2), INF).record
    assert "FEATURES_STALE" in record.reason_codes
