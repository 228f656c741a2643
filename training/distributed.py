"""Train a LightGBM need model on a Dask cluster, for training sets that outgrow one machine.

How a bank runs it
------------------
On one machine start the scheduler, on each of N machines a worker, all from the same
environment (same nextbest, lightgbm, dask and distributed versions; the commands were once
called ``dask-scheduler`` and ``dask-worker``)::

    dask scheduler --port 8786                               # on host
    dask worker tcp://host:8786 --nworkers 1 --nthreads 8    # on each of the N machines

and point NextBest at it with ``NEXTBEST_DASK_SCHEDULER=tcp://host:8786``. Without that
setting, `connect(None)` starts a two-process cluster on this machine, which is what the tests
and a laptop use.

`train_on_dask` splits the training frame into partitions (one per worker unless told
otherwise), and LightGBM trains one model data-parallel over the workers that hold them. It
returns a plain `lightgbm.Booster`: scoring and explanations (`pred_contrib=True`) need neither
Dask nor the cluster.

Limits
------
* LightGBM's distributed training is its own network, beside Dask's: the workers must reach
  each other directly over TCP, not only the scheduler. By default lightgbm.dask picks a
  random open port on each worker for every training run, so a firewall between the workers
  must allow their ephemeral ports. To open a single port instead, pass ``local_listen_port``
  in the params (a fixed port works only with one worker process per machine, so start
  workers with ``--nworkers 1``); `machines` lists ``host:port`` pairs explicitly.
* Every worker that holds a partition takes part, and training waits for all of them: a
  worker lost mid-training fails the run rather than continuing on fewer machines; run it
  again.
* Partitions are trained where they lie, so a worker without a partition sits idle, and a
  partition must fit in its worker's memory together with LightGBM's binned copy of it.
* The params are those of `lgb.train` (as in `training.fitting.PARAMS`) restricted to the
  keys in `_RENAMED` and `_PASSED_THROUGH`; any other key fails loudly instead of being
  silently ignored or fighting an alias.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.dataframe as dd
import distributed
import lightgbm as lgb
import pandas as pd
from lightgbm.dask import DaskLGBMClassifier

# lgb.train parameter names mapped to the names the scikit-learn estimator takes as arguments.
# Passing the lgb.train alias instead would leave the estimator's default standing beside it.
_RENAMED: Mapping[str, str] = {
    "min_data_in_leaf": "min_child_samples",
    "feature_fraction": "colsample_bytree",
    "bagging_fraction": "subsample",
    "bagging_freq": "subsample_freq",
    "lambda_l2": "reg_lambda",
    "seed": "random_state",
}
# Estimator arguments under the same name, or LightGBM parameters the estimator forwards as is.
_PASSED_THROUGH = frozenset(
    {
        "learning_rate",
        "num_leaves",
        "metric",
        "first_metric_only",
        "verbosity",
        "local_listen_port",
        "machines",
        "time_out",
    }
)
# Each Dask worker trains with as many threads as it was started with.
_DROPPED = frozenset({"num_threads"})
# Describe the cluster that trained the model, not the model: a booster that kept them would
# try to rejoin that cluster if its params were reused for training in one process.
_NETWORK_PARAMS = ("machines", "local_listen_port", "num_machines", "time_out")

CONNECT_TIMEOUT_SECONDS = 30
WORKERS_TIMEOUT_SECONDS = 60
LOCAL_WORKERS = 2


def connect(address: str | None) -> distributed.Client:
    """A client of the scheduler at `address`, or of a new local cluster that it owns.

    Use it as a context manager: closing the client also closes a cluster it started.
    """
    if address is not None:
        return distributed.Client(address, timeout=CONNECT_TIMEOUT_SECONDS)
    # A client given no address starts its own LocalCluster and closes it on close(); a client
    # handed an existing cluster would leave it running.
    return distributed.Client(
        n_workers=LOCAL_WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # Without a dashboard the scheduler still serves /health and /metrics, on port 8787
        # unless told otherwise: a second local cluster on the machine would find it taken.
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        timeout=CONNECT_TIMEOUT_SECONDS,
    )


def estimator_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Translate `lgb.train` params into `DaskLGBMClassifier` arguments for a binary objective."""
    objective = params.get("objective", "binary")
    if objective != "binary":
        raise ValueError(f"need models are binary classifiers, not objective={objective!r}")
    unknown = set(params) - _RENAMED.keys() - _PASSED_THROUGH - _DROPPED - {"objective"}
    if unknown:
        raise ValueError(f"unsupported LightGBM params for Dask training: {sorted(unknown)}")
    return {
        _RENAMED.get(key, key): value
        for key, value in params.items()
        if key not in _DROPPED and key != "objective"
    }


def train_on_dask(
    frame: pd.DataFrame | dd.DataFrame,
    features: Sequence[str],
    label: str,
    params: dict[str, Any],
    num_boost_round: int,
    client: distributed.Client,
    *,
    weight_positive: float = 1.0,
    partitions: int | None = None,
) -> lgb.Booster:
    """Train a binary LightGBM model data-parallel on the workers of `client`.

    A pandas `frame` is split into `partitions` partitions (default: one per worker); a Dask
    frame keeps its partitions unless `partitions` is given. Positive rows weigh
    `weight_positive` times as much as negative ones.
    """
    if num_boost_round < 1:
        raise ValueError("num_boost_round must be at least 1")
    if weight_positive <= 0:
        raise ValueError("weight_positive must be positive")
    if partitions is not None and partitions < 1:
        raise ValueError("partitions must be at least 1")
    arguments = estimator_params(params)
    client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_SECONDS)
    # Only the model's columns travel to the workers: not identifiers or timestamps.
    columns = [*features, label]
    if isinstance(frame, pd.DataFrame):
        data = dd.from_pandas(frame[columns], npartitions=partitions or len(client.ncores()))
    else:
        data = frame[columns]
        if partitions is not None:
            data = data.repartition(npartitions=partitions)
    model = DaskLGBMClassifier(
        client=client,
        objective="binary",
        n_estimators=num_boost_round,
        scale_pos_weight=weight_positive,
        **arguments,
    )
    model.fit(data[list(features)], data[label])
    booster = model.booster_
    for key in _NETWORK_PARAMS:
        booster.params.pop(key, None)
    return booster
