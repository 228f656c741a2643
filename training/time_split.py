"""The time split of a training set for the need models.

The training set's snapshot times are split in order: the earliest train, the next stop
training early (validation), the next fit the calibration, the latest test; snapshots within a
label horizon before validation are left out (purged), so no label window of the training rows
reaches into the later ones. Once early stopping has chosen the number of trees, the model is
fitted again with that number on every snapshot at least a label horizon before calibration
(``refit``: the training window, the purged snapshots and the validation snapshots whose labels
end before calibration begins), so no label window of its rows reaches the calibration or test
windows either. Nothing is tuned on the test window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Shares of the snapshot times: train (what is left after the purge), validation (early
#: stopping), calibration, test.
SPLIT = (0.50, 0.15, 0.15, 0.20)


@dataclass(frozen=True)
class Windows:
    train: pd.DataFrame
    validation: pd.DataFrame
    calibration: pd.DataFrame
    test: pd.DataFrame
    purged: int  # rows dropped between train and validation
    #: The final fit's rows: every snapshot at least a label horizon before calibration.
    refit: pd.DataFrame

    def sizes(self) -> dict[str, int]:
        names = ("train", "validation", "calibration", "test", "refit")
        return {**{k: len(getattr(self, k)) for k in names}, "purged": self.purged}


def time_split(
    frame: pd.DataFrame, horizon_days: int, shares: Sequence[float] = SPLIT[1:]
) -> Windows:
    """Split by snapshot time: the latest times test, the ones before calibrate, the ones
    before those stop training early, and training uses only snapshots at least a label horizon
    before validation starts.

    The purge matters: a customer who applies on day D is a positive at every snapshot in the
    30 days before D, with nearly the same features. Without a gap, a model that memorised her
    from the last training snapshots "predicts" her in the next window; early stopping then
    rewards memorising, and the test score decays fast with distance from training. The same
    gap before calibration bounds the refit window.
    """
    times = np.sort(frame["event_timestamp"].unique())
    counts = [max(1, round(len(times) * s)) for s in shares]  # validation, calibration, test
    valid_from = times[len(times) - sum(counts)] if sum(counts) < len(times) else None
    if valid_from is None:
        raise ValueError(f"a time split needs more than {sum(counts)} snapshot times")
    calib_from = times[len(times) - counts[1] - counts[2]]
    test_from = times[len(times) - counts[2]]
    train_until = pd.Timestamp(valid_from) - pd.Timedelta(days=horizon_days)
    stamp = frame["event_timestamp"]
    train = frame[stamp <= train_until]
    if train.empty:
        raise ValueError(
            f"no snapshot is a {horizon_days}-day label horizon before the validation window "
            f"({pd.Timestamp(valid_from).date()}); the training set spans too short a time"
        )
    return Windows(
        train,
        frame[(stamp >= valid_from) & (stamp < calib_from)],
        frame[(stamp >= calib_from) & (stamp < test_from)],
        frame[stamp >= test_from],
        int(((stamp > train_until) & (stamp < valid_from)).sum()),
        frame[stamp <= pd.Timestamp(calib_from) - pd.Timedelta(days=horizon_days)],
    )
