"""Distributed training on a real two-process Dask cluster against plain lgb.train."""

from __future__ import annotations

from collections.abc import Iterator

import dask.dataframe as dd
import distributed
import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from feature_repo.definitions import SCORING_FEATURES
from training.distributed import connect, estimator_params, train_on_dask
from training.fitting import PARAMS, Trainer
from training.trainset import TrainingSet

pytestmark = [
    # lightgbm.dask warns on every fit about the estimator's default n_jobs=None, which
    # nothing public can avoid: https://github.com/lightgbm-org/LightGBM/issues/6797
    pytest.mark.filterwarnings("ignore:Parameter n_jobs will be ignored:UserWarning:lightgbm.dask"),
]

FEATURES = [f"x{i}" for i in range(10)]
ROWS = 20_000
HELD_OUT = 5_000
ROUNDS = 150


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(20_240_611)
    x = rng.normal(size=(ROWS, len(FEATURES)))
    weights = np.linspace(1.0, 0.1, len(FEATURES))
    # A linear signal plus an interaction, shifted to a positive rate of about 5%.
    logit = -4.1 + x @ weights * 0.8 + 0.6 * x[:, 0] * x[:, 1]
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["label"] = label
    frame["customer_id"] = [f"c{i}" for i in range(ROWS)]
    return frame


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with connect(None) as client:
        yield client


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = _frame()
    return frame.iloc[:-HELD_OUT], frame.iloc[-HELD_OUT:]


@pytest.fixture(scope="module")
def boosters(
    client: distributed.Client, data: tuple[pd.DataFrame, pd.DataFrame]
) -> tuple[lgb.Booster, lgb.Booster]:
    train, _ = data
    on_dask = train_on_dask(train, FEATURES, "label", PARAMS, ROUNDS, client)
    local = lgb.train(PARAMS, lgb.Dataset(train[FEATURES], train["label"]), num_boost_round=ROUNDS)
    return on_dask, local


def _auc(booster: lgb.Booster, test: pd.DataFrame) -> float:
    return float(roc_auc_score(test["label"], np.asarray(booster.predict(test[FEATURES]))))


def test_the_generated_data_is_rare_positive(data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    train, test = data
    assert 0.04 < train["label"].mean() < 0.06
    assert test["label"].sum() > 100


def test_dask_booster_is_as_good_as_a_local_one(
    boosters: tuple[lgb.Booster, lgb.Booster], data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    on_dask, local = boosters
    _, test = data
    dask_auc, local_auc = _auc(on_dask, test), _auc(local, test)
    assert dask_auc > 0.75
    assert abs(dask_auc - local_auc) < 0.03


def test_dask_booster_predicts_and_explains_in_process(
    boosters: tuple[lgb.Booster, lgb.Booster], data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    on_dask, _ = boosters
    _, test = data
    assert type(on_dask) is lgb.Booster
    assert on_dask.feature_name() == FEATURES
    assert on_dask.num_trees() == ROUNDS
    contributions = np.asarray(on_dask.predict(test[FEATURES], pred_contrib=True))
    assert contributions.shape == (HELD_OUT, len(FEATURES) + 1)
    raw = np.asarray(on_dask.predict(test[FEATURES], raw_score=True))
    np.testing.assert_allclose(contributions.sum(axis=1), raw, rtol=1e-6, atol=1e-6)
    # The training cluster's addresses stay behind: reusing the params trains in one process.
    assert not {"machines", "local_listen_port", "num_machines"} & on_dask.params.keys()
    reloaded = lgb.Booster(model_str=on_dask.model_to_string())
    np.testing.assert_allclose(reloaded.predict(test[FEATURES]), on_dask.predict(test[FEATURES]))


def test_a_dask_dataframe_trains_too(
    client: distributed.Client, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    train, test = data
    frame = dd.from_pandas(train, npartitions=4)
    booster = train_on_dask(frame, FEATURES, "label", PARAMS, ROUNDS, client, weight_positive=3.0)
    assert _auc(booster, test) > 0.75
    assert booster.params["scale_pos_weight"] == 3.0


def test_closing_the_client_closes_the_local_cluster_it_started() -> None:
    with connect(None) as client:
        cluster = client.cluster
        assert cluster is not None
        assert len(client.ncores()) == 2
    assert cluster.status == distributed.core.Status.closed


def test_params_are_translated_for_the_estimator() -> None:
    arguments = estimator_params(PARAMS)
    assert arguments["min_child_samples"] == PARAMS["min_data_in_leaf"]
    assert arguments["colsample_bytree"] == PARAMS["feature_fraction"]
    assert arguments["subsample"] == PARAMS["bagging_fraction"]
    assert arguments["subsample_freq"] == PARAMS["bagging_freq"]
    assert arguments["reg_lambda"] == PARAMS["lambda_l2"]
    assert arguments["random_state"] == PARAMS["seed"]
    assert not {"objective", "num_threads", "min_data_in_leaf", "seed"} & arguments.keys()


def test_unknown_params_fail_loudly() -> None:
    with pytest.raises(ValueError, match="lambda_l11"):
        estimator_params({**PARAMS, "lambda_l11": 1.0})


def test_only_binary_objectives_are_trained() -> None:
    with pytest.raises(ValueError, match="binary"):
        estimator_params({**PARAMS, "objective": "regression"})


def test_the_need_trainer_fits_on_the_cluster(client: distributed.Client) -> None:
    """``nextbest train --dask-scheduler``: the same Trainer, the booster built on the cluster."""
    rng = np.random.default_rng(3)
    customers, times = 3_000, pd.date_range("2026-01-05", periods=8, freq="7D", tz="UTC")
    n = customers * len(times)
    frame = pd.DataFrame(rng.normal(size=(n, len(SCORING_FEATURES))), columns=SCORING_FEATURES)
    frame.insert(0, "event_timestamp", np.repeat(times, customers))
    frame.insert(0, "customer_id", np.tile([f"C{i}" for i in range(customers)], len(times)))
    logit = -3.5 + 1.2 * frame["loan_views_7d"] + 0.8 * frame["age"]
    frame["label_personal_loan"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    data = TrainingSet(frame, horizon_days=7, excluded_without_profiling=0, fingerprint="x")
    local = Trainer(data).fit("personal_loan")
    remote = Trainer(data, dask_client=client).fit("personal_loan")
    assert remote.evaluation.roc_auc > 0.75
    assert abs(remote.evaluation.roc_auc - local.evaluation.roc_auc) < 0.03
    assert remote.predict(frame.head(10)).min() > 0 and remote.predict(frame.head(10)).max() < 1
