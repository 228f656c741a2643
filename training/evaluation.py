"""How good a need model is, measured on a later window it never saw.

- ranking: ROC AUC, PR AUC, capture in the top decile (share of all positives found by
  contacting the 10% highest scores) and the lift it gives over contacting at random;
- probabilities: Brier score and expected calibration error (ECE: the row-weighted gap between
  mean predicted and observed rate over ten equal-count bins);
- against the generator's oracle, when the bank is synthetic: the oracle's ROC AUC on the same
  rows and the model's ratio to it;
- fairness at the delivery threshold: the share of each group the model would select, and the
  ratio of the lowest to the highest share, between genders and between age bands. Groups with
  fewer than ``MIN_GROUP`` rows are reported but not compared.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    roc_auc_score,
    roc_curve,
)

AGE_BANDS = (18, 30, 45, 60, 200)
AGE_LABELS = ("18-29", "30-44", "45-59", "60+")
MIN_GROUP = 200
CALIBRATION_BINS = 10


def top_decile_capture(y: np.ndarray, p: np.ndarray) -> float:
    if y.sum() == 0:
        return float("nan")
    top = np.argsort(-p, kind="stable")[: max(1, len(p) // 10)]
    return float(y[top].sum() / y.sum())


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """``top_decile_capture`` over the share of rows contacted: 1 is what chance finds."""
    if len(p) == 0:
        return float("nan")
    return top_decile_capture(y, p) * len(p) / max(1, len(p) // 10)


def calibration_error(y: np.ndarray, p: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    order = np.argsort(p, kind="stable")
    gaps = [
        len(part) * abs(float(p[part].mean()) - float(y[part].mean()))
        for part in np.array_split(order, bins)
        if len(part)
    ]
    return float(sum(gaps) / len(p))


@dataclass(frozen=True)
class Fairness:
    threshold: float
    selection_rate: dict[str, dict[str, float]]  # attribute -> group -> share selected
    group_size: dict[str, dict[str, int]]
    ratio: dict[str, float]  # attribute -> lowest / highest share (nan: nobody selected)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def age_band(age: pd.Series) -> pd.Series:
    return pd.cut(age, AGE_BANDS, right=False, labels=AGE_LABELS).astype(str)


def fairness(p: np.ndarray, groups: Mapping[str, pd.Series], threshold: float) -> Fairness:
    selected = p >= threshold
    rates: dict[str, dict[str, float]] = {}
    sizes: dict[str, dict[str, int]] = {}
    ratios: dict[str, float] = {}
    for attribute, values in groups.items():
        frame = pd.DataFrame({"group": np.asarray(values), "selected": selected})
        summary = frame.groupby("group")["selected"].agg(["mean", "size"])
        rates[attribute] = {str(k): float(v) for k, v in summary["mean"].items()}
        sizes[attribute] = {str(k): int(v) for k, v in summary["size"].items()}
        compared = summary[summary["size"] >= MIN_GROUP]["mean"]
        top = float(compared.max()) if len(compared) else 0.0
        ratios[attribute] = float(compared.min()) / top if top > 0 else float("nan")
    return Fairness(threshold, rates, sizes, ratios)


@dataclass
class Evaluation:
    rows: int
    positives: int
    base_rate: float
    roc_auc: float
    pr_auc: float
    top_decile_capture: float
    brier: float
    calibration_error: float
    oracle_roc_auc: float | None = None
    oracle_ratio: float | None = None
    top_decile_lift: float = float("nan")
    fairness: Fairness | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Flat numeric metrics for MLflow (NaN and missing ones left out)."""
        values: dict[str, float | None] = {
            "rows": self.rows,
            "positives": self.positives,
            "base_rate": self.base_rate,
            "roc_auc": self.roc_auc,
            "pr_auc": self.pr_auc,
            "top_decile_capture": self.top_decile_capture,
            "top_decile_lift": self.top_decile_lift,
            "brier": self.brier,
            "calibration_error": self.calibration_error,
            "oracle_roc_auc": self.oracle_roc_auc,
            "oracle_ratio": self.oracle_ratio,
            **self.extra,
        }
        if self.fairness is not None:
            for attribute, ratio in self.fairness.ratio.items():
                values[f"selection_ratio_{attribute}"] = ratio
        return {f"{prefix}{k}": float(v) for k, v in values.items() if v is not None and v == v}

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["fairness"] = self.fairness.as_dict() if self.fairness else None
        return out


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    oracle: np.ndarray | None = None,
    groups: Mapping[str, pd.Series] | None = None,
    threshold: float | None = None,
) -> Evaluation:
    """``p``: calibrated probabilities; ``oracle``: the generator's true propensities."""
    y = np.asarray(y, dtype=np.int8)
    both = len(np.unique(y)) == 2
    result = Evaluation(
        rows=len(y),
        positives=int(y.sum()),
        base_rate=float(y.mean()) if len(y) else float("nan"),
        roc_auc=float(roc_auc_score(y, p)) if both else float("nan"),
        pr_auc=float(average_precision_score(y, p)) if both else float("nan"),
        top_decile_capture=top_decile_capture(y, p),
        top_decile_lift=top_decile_lift(y, p),
        brier=float(brier_score_loss(y, p)) if len(y) else float("nan"),
        calibration_error=calibration_error(y, p) if len(y) else float("nan"),
    )
    if oracle is not None and both and not np.isnan(oracle).any():
        result.oracle_roc_auc = float(roc_auc_score(y, oracle))
        result.oracle_ratio = result.roc_auc / result.oracle_roc_auc
    if groups and threshold is not None:
        result.fairness = fairness(p, groups, threshold)
    return result


# --- plots --------------------------------------------------------------------------------
def plots(
    need: str, y: np.ndarray, p: np.ndarray, importance: pd.Series, oracle: np.ndarray | None
) -> dict[str, Figure]:
    """ROC, lift (cumulative gains), calibration and feature importance (gain) figures."""
    figures = {}
    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"model (AUC {roc_auc_score(y, p):.3f})")
        if oracle is not None:
            fpr, tpr, _ = roc_curve(y, oracle)
            ax.plot(fpr, tpr, "--", label=f"oracle (AUC {roc_auc_score(y, oracle):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{need}: ROC")
    ax.legend(loc="lower right")
    figures["roc.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    order = np.argsort(-p, kind="stable")
    share = np.arange(1, len(p) + 1) / len(p)
    found = np.cumsum(y[order]) / max(int(y.sum()), 1)
    ax.plot(share, found, label="model")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="random")
    ax.axvline(0.1, color="grey", lw=0.5)
    ax.set(xlabel="share of customers contacted", ylabel="share of positives found")
    ax.set_title(f"{need}: cumulative gains (lift)")
    ax.legend(loc="lower right")
    figures["lift.png"] = fig

    fig, ax = plt.subplots(figsize=(5, 5))
    ascending = np.argsort(p, kind="stable")
    parts = [part for part in np.array_split(ascending, CALIBRATION_BINS) if len(part)]
    ax.plot([float(p[i].mean()) for i in parts], [float(y[i].mean()) for i in parts], "o-")
    top = max(float(p.max()) if len(p) else 0.0, 1e-3)
    ax.plot([0, top], [0, top], ":", color="grey")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate")
    ax.set_title(f"{need}: calibration (10 equal-count bins)")
    figures["calibration.png"] = fig

    fig, ax = plt.subplots(figsize=(6, 7))
    shown = importance.sort_values(ascending=True).tail(20)
    ax.barh(list(shown.index), list(shown.to_numpy()))
    ax.set(xlabel="total gain", title=f"{need}: feature importance (top 20)")
    fig.tight_layout()
    figures["feature_importance.png"] = fig
    return figures
