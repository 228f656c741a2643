"""The scores kept ready beside a customer's features: the Feast view ``customer_scores``.

When a customer's features change (an event or a timer), the stream's scorer scores the served
need models on them and stores, per need, the calibrated score, the model version that gave it
and the strongest positive contributions (the reasons a decision gives), with the row times of
the features scored. A decision reads them in the same online read as the features and uses
them when they are the scores it would compute: the same values, the same model versions
(``service.usecases.score_keeping``). Every field is a double, so a row is written and read as
the features are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from consent.rules.vocabulary import NEEDS

SCORES_VIEW = "customer_scores"
#: How many reasons are kept per need (a decision gives at most this many).
KEPT_REASONS = 3
#: The activity and profile row times (epoch seconds) the scores were computed from (NaN: no
#: profile row), for people reading a row.
FEATURES_AT = "features_at"
PROFILE_AT = "profile_at"
#: A fingerprint of the exact values scored (``fingerprint``): the scores fit a read when its
#: values have the same one. Row times would not do: Feast's SQLite store keeps whole seconds.
FINGERPRINT = "features_fingerprint"


def fingerprint(values: Iterable[float | None]) -> float:
    """53 bits of a BLAKE2b digest of ``values`` (None as NaN) as float64s: a double holds
    them exactly."""
    return fingerprint_of(np.fromiter((np.nan if v is None else v for v in values), np.float64))


def fingerprint_of(vector: np.ndarray) -> float:
    """``fingerprint`` of values already laid out as float64s (NaN for None)."""
    digest = hashlib.blake2b(vector.tobytes(), digest_size=8).digest()
    return float(int.from_bytes(digest, "big") >> 11)


def score_field(need: str) -> str:
    return f"{need}_score"


def version_field(need: str) -> str:
    """The served model's version that gave the score (a registry version is a number)."""
    return f"{need}_version"


def reason_fields(need: str, k: int) -> tuple[str, str]:
    """The k-th reason (from 1): the feature's index in ``SCORING_FEATURES``, its contribution
    to the margin."""
    return f"{need}_reason{k}_feature", f"{need}_reason{k}_contribution"


SCORE_FIELDS: tuple[str, ...] = (
    FEATURES_AT,
    PROFILE_AT,
    FINGERPRINT,
    *(
        name
        for need in NEEDS
        for name in (
            score_field(need),
            version_field(need),
            *(f for k in range(1, KEPT_REASONS + 1) for f in reason_fields(need, k)),
        )
    ),
)
