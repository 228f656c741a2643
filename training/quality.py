"""The quality floor: what a need model must reach on its test window to be promoted and served.

A model no better than chance must not be served as a champion: its scores would rank customers
by noise and still look like a recommendation. Two figures on the test window (never seen in
training) decide:

- ROC AUC at least ``min_roc_auc`` (0.5 is chance);
- lift in the top decile at least ``min_top_decile_lift``: the share of positives found by
  contacting the 10% highest scores, over the 10% that contacting at random finds (1 is chance).

A figure that could not be measured (a test window without positives) is below the floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MIN_ROC_AUC = 0.55
DEFAULT_MIN_TOP_DECILE_LIFT = 1.2
#: The MLflow metrics (of the model's training run) the floor reads.
ROC_AUC_METRIC = "test_roc_auc"
LIFT_METRIC = "test_top_decile_lift"
#: Runs logged before the lift was: the capture, which is the lift times the decile's share.
CAPTURE_METRIC = "test_top_decile_capture"


@dataclass(frozen=True)
class QualityFloor:
    min_roc_auc: float = DEFAULT_MIN_ROC_AUC
    min_top_decile_lift: float = DEFAULT_MIN_TOP_DECILE_LIFT

    def shortfall(self, roc_auc: float | None, top_decile_lift: float | None) -> str | None:
        """Why a model with these test figures is below the floor; None when it is not."""
        problems = []
        if roc_auc is None or math.isnan(roc_auc):
            problems.append("test ROC AUC not measured")
        elif roc_auc < self.min_roc_auc:
            problems.append(f"test ROC AUC {roc_auc:.3f} < {self.min_roc_auc}")
        if top_decile_lift is None or math.isnan(top_decile_lift):
            problems.append("top-decile lift not measured")
        elif top_decile_lift < self.min_top_decile_lift:
            problems.append(f"top-decile lift {top_decile_lift:.2f} < {self.min_top_decile_lift}")
        if not problems:
            return None
        return "below the quality floor: " + "; ".join(problems)

    def shortfall_of_run(self, metrics: Mapping[str, float]) -> str | None:
        """``shortfall`` from a training run's logged metrics."""
        lift = metrics.get(LIFT_METRIC)
        if lift is None and CAPTURE_METRIC in metrics:
            lift = metrics[CAPTURE_METRIC] * 10
        return self.shortfall(metrics.get(ROC_AUC_METRIC), lift)
