"""How late a monthly payment is: the vectorised rule the stream and backfill use equals a
plain day-by-day count, and reads as a bank would on the calendar's awkward days."""

from __future__ import annotations

from datetime import date

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consent.rules.catalog import Catalog
from feature_repo.activity import overdue_working_days
from feature_repo.reference import plain_overdue_days

EPOCH = date(1970, 1, 1)


def _day(d: date) -> int:
    return (d - EPOCH).days


def _late(last: date, today: date) -> float:
    return float(overdue_working_days(np.array([_day(last)]), np.array([_day(today)]))[0])


@given(
    st.lists(
        st.tuples(st.dates(date(2020, 1, 1), date(2030, 12, 31)), st.integers(0, 120)),
        min_size=1,
        max_size=50,
    )
)
def test_the_vectorised_rule_equals_a_plain_count(pairs) -> None:
    last = np.array([_day(d) for d, _ in pairs])
    today = last + np.array([n for _, n in pairs])
    counted = [plain_overdue_days(int(a), int(b)) for a, b in zip(last, today, strict=True)]
    assert overdue_working_days(last, today).tolist() == counted


def test_late_by_the_working_days_passed_in_full_after_the_expected_day() -> None:
    # Paid on Wednesday 14 October: expected Saturday 14 November.
    last = date(2026, 10, 14)
    assert _late(last, date(2026, 11, 14)) == 0
    assert _late(last, date(2026, 11, 17)) == 1  # Monday 16th has passed
    assert _late(last, date(2026, 11, 18)) == 2  # and Tuesday 17th
    # Never seen: not late.
    assert overdue_working_days(np.array([-1]), np.array([_day(date(2026, 11, 18))]))[0] == 0


def test_a_payment_brought_forward_over_a_weekend_does_not_make_the_next_one_late() -> None:
    # Due on Sunday 25 October, paid on Friday the 23rd; due again on Wednesday 25 November.
    last = date(2026, 10, 23)
    assert _late(last, date(2026, 11, 25)) <= 1  # the morning it comes


def test_a_month_end_payer_is_expected_at_the_end_of_the_next_month() -> None:
    assert _late(date(2026, 1, 31), date(2026, 3, 2)) == 0  # February ends on the 28th
    assert _late(date(2026, 2, 27), date(2026, 3, 31)) == 0  # 27th of 28: month end
    assert _late(date(2026, 2, 27), date(2026, 4, 2)) == 1  # due 31 March; April 1st passed
    assert _late(date(2026, 3, 15), date(2026, 4, 17)) == 1  # Thursday 16th


def test_the_income_check_in_answers_a_drop_or_a_missed_salary() -> None:
    action = Catalog.load().actions["income_change_check_in"]
    steady = {"salary_change_ratio": 1.0, "salary_overdue_days": 0.0}
    assert not action.applies(steady)
    assert action.applies({**steady, "salary_change_ratio": 0.5})
    assert action.applies({**steady, "salary_overdue_days": 2.0})
    assert not action.applies({"salary_change_ratio": 1.0})  # overdue unknown: not proposed
    assert action.conditioned_on == {"salary_change_ratio", "salary_overdue_days"}
