"""A bank's summary, kept chunk by chunk: counts of customers, events, outcomes and consent
entries, base rates, and the oracle's ROC AUC per need from streaming histograms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consent.rules.vocabulary import NEEDS
from training.bank.chunks import Chunk
from training.bank.spec import BankSpec

#: Resolution of the streaming oracle-AUC histograms (bins over the fourth root of p).
AUC_BINS = 1 << 16


class Summary:
    def __init__(self, spec: BankSpec) -> None:
        self.spec = spec
        self.customers = 0
        self.events_by_type: dict[str, int] = {}
        self.malformed = 0
        self.outcomes: dict[str, int] = dict.fromkeys(NEEDS, 0)
        # Oracle-AUC histograms: [which (0: propensity, 1: clairvoyant), need, bin].
        self.positives = np.zeros((2, len(NEEDS), AUC_BINS), np.int64)
        self.negatives = np.zeros((2, len(NEEDS), AUC_BINS), np.int64)
        self.consents: dict[str, int] = {}

    def add(self, chunk: Chunk) -> None:
        self.customers += chunk.customers.num_rows
        for kind, count in _value_counts(chunk.events["type"]).items():
            self.events_by_type[kind] = self.events_by_type.get(kind, 0) + count
        self.malformed += chunk.malformed.num_rows
        applied = chunk.outcomes.filter(pc.equal(chunk.outcomes["type"], "application"))
        for need, count in _value_counts(applied["need"]).items():
            if need in self.outcomes:
                self.outcomes[need] += count
        keys = pc.binary_join_element_wise(
            chunk.consents["purpose"],
            chunk.consents["channel"],
            pc.cast(chunk.consents["granted"], pa.string()),
            ":",
        )
        for key, count in _value_counts(keys).items():
            self.consents[key] = self.consents.get(key, 0) + count
        need = chunk.truth["need"].to_numpy(zero_copy_only=False)
        y = chunk.truth["label"].to_numpy()
        for w, column in enumerate(("propensity", "clairvoyant")):
            p = chunk.truth[column].to_numpy()
            bins = np.minimum((np.power(p, 0.25) * AUC_BINS).astype(np.int64), AUC_BINS - 1)
            for k, name in enumerate(NEEDS):
                mine = need == name
                self.positives[w, k] += np.bincount(bins[mine & (y == 1)], minlength=AUC_BINS)
                self.negatives[w, k] += np.bincount(bins[mine & (y == 0)], minlength=AUC_BINS)

    def as_dict(self) -> dict[str, Any]:
        horizon = self.spec.truth_horizon_days
        base: dict[str, float] = {}
        oracle: dict[str, float] = {}
        clairvoyant: dict[str, float] = {}
        for k, need in enumerate(NEEDS):
            for w, out in ((0, oracle), (1, clairvoyant)):
                pos, neg = self.positives[w, k], self.negatives[w, k]
                below = np.cumsum(neg) - neg
                auc = (pos * (below + 0.5 * neg)).sum() / max(pos.sum() * neg.sum(), 1)
                out[need] = round(float(auc), 4)
            total = pos.sum() + neg.sum()
            rate = pos.sum() / total if total else float("nan")
            base[need] = round(float(1 - (1 - rate) ** (30 / horizon)), 5)
        return {
            "customers": self.customers,
            "events": sum(self.events_by_type.values()),
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "malformed_events": self.malformed,
            "applications_by_need": self.outcomes,
            "monthly_base_rate_by_need": base,
            "oracle_roc_auc_by_need": oracle,
            "clairvoyant_roc_auc_by_need": clairvoyant,
            "consent_entries": dict(sorted(self.consents.items())),
        }


def _value_counts(array: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    counts = pc.value_counts(array)
    return {
        v.as_py(): c.as_py()
        for v, c in zip(counts.field("values"), counts.field("counts"), strict=True)
        if v.is_valid
    }
