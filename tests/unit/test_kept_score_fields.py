"""The scores kept ready as they are stored: a read's fingerprint is the same however the
values were decoded, and a stored row of scores reads back as the scores, versions and reasons
it was made of."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consent.rules.vocabulary import NEEDS
from feature_repo.definitions import SCORING_FEATURES
from feature_repo.scores import SCORE_FIELDS, fingerprint, fingerprint_of
from service.adapters.features.layout import as_values, decode_array, encode_rows
from service.adapters.features.online_features import StoredScores
from service.usecases.score_keeping import NO_REASON

values = st.lists(
    st.one_of(st.just(math.nan), st.floats(allow_nan=False, allow_infinity=True, width=64)),
    min_size=1,
    max_size=40,
)


@given(values)
def test_a_fingerprint_is_the_same_from_the_array_or_the_values(row: list[float]) -> None:
    [stored] = encode_rows(np.array([row]))
    laid = decode_array(stored)
    assert laid is not None
    assert fingerprint_of(laid) == fingerprint(as_values(laid))
    assert fingerprint(as_values(laid)) == fingerprint([None if math.isnan(v) else v for v in row])
    changed = [*row[:-1], 1.0 if row[-1] != 1.0 else 2.0]
    assert fingerprint(changed) != fingerprint(row)


def test_a_row_of_scores_reads_back() -> None:
    row = dict.fromkeys(SCORE_FIELDS, math.nan)
    row.update(features_at=1_800_000_000.5, features_fingerprint=123.0)
    row.update(mortgage_score=0.42, mortgage_version=3.0)
    row.update(mortgage_reason1_feature=SCORING_FEATURES.index("age"))
    row.update(mortgage_reason1_contribution=0.7)
    row.update(pension_score=0.01, pension_version=2.0, pension_reason1_feature=NO_REASON)
    row.update(investment_score=0.2, investment_version=1.0)
    [stored] = encode_rows(np.array([[row[f] for f in SCORE_FIELDS]]))
    laid = decode_array(stored)
    assert laid is not None
    kept = StoredScores.of(dict(zip(SCORE_FIELDS, as_values(laid), strict=True)))
    assert kept is not None
    assert kept.scores == {"mortgage": 0.42, "pension": 0.01, "investment": 0.2}
    assert kept.versions == {"mortgage": "3", "pension": "2", "investment": "1"}
    # Kept and positive; computed and none positive; not kept (under its threshold).
    assert kept.reasons == {"mortgage": (("age", 0.7),), "pension": ()}
    assert kept.profile_at is None and kept.fingerprint == 123.0
    assert set(kept.scores) <= set(NEEDS)
