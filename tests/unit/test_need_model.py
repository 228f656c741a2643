"""Need models: the purged time split, calibration, the evaluation figures, the promotion rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from service.usecases.retrain import judge
from training import evaluation
from training.calibration import Calibration
from training.time_split import time_split


def frame(times: int, customers: int = 50, step_days: int = 7) -> pd.DataFrame:
    stamps = pd.date_range("2026-01-01", periods=times, freq=f"{step_days}D", tz="UTC")
    return pd.DataFrame(
        {
            "customer_id": np.tile([f"C{i}" for i in range(customers)], times),
            "event_timestamp": np.repeat(stamps, customers),
        }
    )


def test_time_split_purges_a_label_horizon_before_validation() -> None:
    data = frame(26)
    w = time_split(data, horizon_days=30)
    last_train = w.train["event_timestamp"].max()
    first_valid = w.validation["event_timestamp"].min()
    assert first_valid - last_train >= pd.Timedelta(days=30)
    assert (
        w.validation["event_timestamp"].max() < w.calibration["event_timestamp"].min()
        and w.calibration["event_timestamp"].max() < w.test["event_timestamp"].min()
    )
    assert w.test["event_timestamp"].max() == data["event_timestamp"].max()
    used = len(w.train) + len(w.validation) + len(w.calibration) + len(w.test)
    assert used + w.purged == len(data)
    assert w.purged > 0


def test_the_refit_window_ends_a_label_horizon_before_calibration() -> None:
    data = frame(26)
    w = time_split(data, horizon_days=30)
    first_calibration = w.calibration["event_timestamp"].min()
    assert first_calibration - w.refit["event_timestamp"].max() >= pd.Timedelta(days=30)
    # It holds the training window, and the snapshots the purge before validation took.
    assert w.refit["event_timestamp"].min() == w.train["event_timestamp"].min()
    assert len(w.refit) == len(w.train) + w.purged
    assert w.sizes()["refit"] == len(w.refit)


def test_time_split_refuses_a_history_too_short_for_the_horizon() -> None:
    with pytest.raises(ValueError, match="label horizon"):
        time_split(frame(6), horizon_days=30)
    with pytest.raises(ValueError, match="snapshot times"):
        time_split(frame(3), horizon_days=1)


def test_platt_calibration_recovers_a_known_mapping() -> None:
    rng = np.random.default_rng(1)
    margin = rng.normal(0, 2, 200_000)
    p = 1 / (1 + np.exp(-(0.5 * margin - 3.0)))
    y = (rng.random(len(p)) < p).astype(int)
    fitted = Calibration.fit(margin, y, weight_positive=4.0)
    assert fitted.slope == pytest.approx(0.5, abs=0.03)
    assert fitted.intercept == pytest.approx(-3.0, abs=0.08)
    assert Calibration.from_dict(fitted.as_dict()) == fitted


def test_without_both_classes_calibration_only_undoes_the_weight() -> None:
    fitted = Calibration.fit(np.zeros(10), np.zeros(10, int), weight_positive=math.e)
    assert fitted.method == "prior_shift"
    assert fitted.apply(np.array([1.0]))[0] == pytest.approx(0.5)


def test_evaluation_figures_on_a_case_worked_by_hand() -> None:
    y = np.array([1] * 10 + [0] * 90)
    p = np.concatenate([np.full(10, 0.9), np.linspace(0.0, 0.5, 90)])
    result = evaluation.evaluate(y, p, oracle=np.where(y == 1, 0.8, 0.1))
    assert result.roc_auc == 1.0 and result.pr_auc == pytest.approx(1.0)
    assert result.top_decile_capture == 1.0
    assert result.oracle_roc_auc == 1.0 and result.oracle_ratio == 1.0
    assert result.base_rate == 0.1 and result.positives == 10
    assert result.brier == pytest.approx(np.mean((p - y) ** 2))
    # Perfectly calibrated bins give no calibration error.
    q = np.repeat([0.1, 0.5], 500)
    z = np.concatenate([np.repeat([1, 0], [50, 450]), np.repeat([1, 0], [250, 250])])
    assert evaluation.calibration_error(z, q, bins=2) == pytest.approx(0.0)


def test_fairness_compares_selection_rates_of_groups_large_enough() -> None:
    n = 1000
    gender = pd.Series(["f"] * n + ["m"] * n + ["x"] * 10)
    p = np.concatenate([np.r_[np.ones(100), np.zeros(900)], np.r_[np.ones(200), np.zeros(800)]])
    p = np.concatenate([p, np.ones(10)])
    result = evaluation.fairness(p, {"gender": gender}, threshold=0.5)
    assert result.selection_rate["gender"] == {"f": 0.1, "m": 0.2, "x": 1.0}
    assert result.ratio["gender"] == pytest.approx(0.5)  # "x" is too small to compare


def test_age_bands() -> None:
    bands = evaluation.age_band(pd.Series([18, 29, 30, 44, 45, 59, 60, 90]))
    assert bands.tolist() == ["18-29", "18-29", "30-44", "30-44", "45-59", "45-59", "60+", "60+"]


@pytest.mark.parametrize(
    ("challenger", "champion", "fair_c", "fair_k", "promoted", "why"),
    [
        (0.80, None, {"gender": 0.9}, None, True, "first model"),
        (0.80, 0.79, {"gender": 0.9}, {"gender": 0.9}, True, "better by 0.0100"),
        (0.80, 0.799, {"gender": 0.9}, {"gender": 0.9}, False, "not better by the margin"),
        (0.80, 0.70, {"gender": 0.6}, {"gender": 0.9}, False, "fairness check failed"),
        (0.80, 0.70, {"gender": 0.87}, {"gender": 0.9}, True, "no new disparity"),
    ],
)
def test_promotion_rule(challenger, champion, fair_c, fair_k, promoted, why) -> None:
    verdict = judge(
        "mortgage",
        "2",
        challenger,
        fair_c,
        None if champion is None else "1",
        champion,
        fair_k,
        min_gain=0.002,
        fairness_tolerance=0.05,
    )
    assert verdict.promoted is promoted
    assert why in verdict.reason
