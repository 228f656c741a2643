"""A coin flip is not served as a champion: the quality floor, the promotion rule that honours
it, and the gate withholding a need's actions when no model of it is served."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from service.settings import load_settings
from service.usecases.retrain import judge
from training.evaluation import top_decile_lift
from training.quality import QualityFloor

FLOOR = QualityFloor(0.55, 1.2)
figure = st.floats(0, 10, allow_nan=False)


@given(roc_auc=st.floats(0, 1), lift=figure)
def test_a_model_is_below_the_floor_exactly_when_a_figure_is(roc_auc: float, lift: float) -> None:
    why = FLOOR.shortfall(roc_auc, lift)
    assert (why is None) == (roc_auc >= 0.55 and lift >= 1.2)
    if roc_auc < 0.55:
        assert why is not None and "ROC AUC" in why
    if lift < 1.2:
        assert why is not None and "lift" in why


@given(lift=figure)
def test_a_figure_not_measured_is_below_the_floor(lift: float) -> None:
    assert "not measured" in (FLOOR.shortfall(math.nan, lift) or "")
    assert "not measured" in (FLOOR.shortfall(None, lift) or "")
    assert "not measured" in (FLOOR.shortfall(0.9, None) or "")


def test_the_demo_banks_protection_model_is_below_the_default_floor() -> None:
    # Test ROC AUC 0.502 (docs/models.md): a coin flip.
    assert "0.502 < 0.55" in (QualityFloor().shortfall(0.502, 1.05) or "")
    assert QualityFloor().shortfall(0.74, 4.5) is None


def test_runs_logged_before_the_lift_are_judged_on_their_capture() -> None:
    assert FLOOR.shortfall_of_run({"test_roc_auc": 0.8, "test_top_decile_capture": 0.45}) is None
    assert "lift 1.00" in (
        FLOOR.shortfall_of_run({"test_roc_auc": 0.8, "test_top_decile_capture": 0.1}) or ""
    )
    assert "not measured" in (FLOOR.shortfall_of_run({}) or "")


def test_the_lift_of_chance_is_one_and_of_a_perfect_ranking_ten() -> None:
    import numpy as np

    y = np.array([1] * 10 + [0] * 90)
    assert top_decile_lift(y, np.linspace(1, 0, 100)) == 10.0
    assert top_decile_lift(y, np.r_[np.zeros(10), np.ones(90)]) == 0.0
    assert top_decile_lift(np.tile([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], 10), np.linspace(1, 0, 100)) == 1


def test_the_floor_is_a_setting() -> None:
    settings = load_settings(
        {"NEXTBEST_MODEL_MIN_ROC_AUC": "0.6", "NEXTBEST_MODEL_MIN_TOP_DECILE_LIFT": "2"}
    )
    assert settings.quality_floor == QualityFloor(0.6, 2.0)
    assert load_settings({}).quality_floor == QualityFloor(0.55, 1.2)


def test_a_challenger_below_the_floor_is_not_promoted_even_as_the_first_model() -> None:
    why = FLOOR.shortfall(0.502, 1.1)
    first = judge("protection", "1", 0.502, {}, None, None, None, 0.002, 0.05, why)
    assert not first.promoted and first.reason == why
    better = judge("protection", "2", 0.502, {}, "1", 0.40, {}, 0.002, 0.05, why)
    assert not better.promoted and "below the quality floor" in better.reason
    assert judge("protection", "3", 0.7, {}, None, None, None, 0.002, 0.05).promoted
