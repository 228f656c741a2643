"""The calibration of a need model: Platt scaling of the booster's margin, fitted on a window
of its own, which turns the margins of a model trained with weighted positives back into
probabilities."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from training import pyfunc_model


@dataclass(frozen=True)
class Calibration:
    """p = 1 / (1 + exp(-(slope * margin + intercept)))."""

    slope: float
    intercept: float
    method: str = "platt"

    def apply(self, margin: np.ndarray) -> np.ndarray:
        return pyfunc_model.platt(margin, self.slope, self.intercept)

    def apply_one(self, margin: float) -> float:
        """``apply`` for one margin, without an array (a decision scores one row per model)."""
        z = self.slope * margin + self.intercept
        if z >= 0:
            return 1.0 / (1.0 + math.exp(-z))
        e = math.exp(z)  # never overflows for z < 0
        return e / (1.0 + e)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        return cls(float(data["slope"]), float(data["intercept"]), str(data["method"]))

    @classmethod
    def fit(cls, margin: np.ndarray, y: np.ndarray, weight_positive: float) -> Calibration:
        """Platt scaling on a later window; without both classes there, only undo the weight."""
        if len(np.unique(y)) < 2:
            return cls(1.0, -math.log(weight_positive), "prior_shift")
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(np.asarray(margin).reshape(-1, 1), y)
        return cls(float(model.coef_[0][0]), float(model.intercept_[0]))
