"""Every model NextBest registers loads with stock MLflow and predicts calibrated probabilities
from raw rows: ``mlflow.pyfunc.load_model("models:/NAME@champion").predict(rows)``.

One MLflow store (SQLite, artifacts on disk) holds the seven need models, trained on a small
synthetic bank, and a table model (``train --table``) trained on the UCI Bank Marketing CSV.
The table model predicts the CSV's own rows (text columns as strings); the need models predict
their feature rows as the online store serves them (missing values as None). Each gives what
NextBest's own scoring gives for the same rows, and each loads in a process that cannot import
NextBest at all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.pyfunc import PyFuncModel
from mlflow.tracking import MlflowClient
from mlflow.types import DataType

from consent.rules.vocabulary import NEEDS
from feature_repo.definitions import SCORING_FEATURES
from service.adapters.models import load_version
from service.bootstrap import Container
from service.usecases import pipeline
from tests.conftest import backfilled, make_settings
from training import need_model
from training.bank.in_memory import generate
from training.bank.spec import BankSpec, busy_housing_market
from training.calibration import Calibration
from training.need_model import CalibratedNeedModel
from training.table import TableReport, train_table
from training.table_columns import encode_features

UCI_BANK = Path("/work/shared/data/uci-bank-marketing/bank-full.csv")
SPEC = BankSpec(seed=23, customers=1_500, days=200, situations=busy_housing_market())
#: The floor is not under test here: a bank this small may train a weak model of a need, and
#: every registered model must load and predict whatever its quality.
NO_FLOOR = {"model_min_roc_auc": "0", "model_min_top_decile_lift": "0"}
TABLE_NEED = "term_deposit"
#: Customers whose online rows the need models score, plus one the store does not know.
SCORED = 300
UNKNOWN = "C-NOT-IN-THE-BANK"


@dataclass(frozen=True)
class Registry:
    container: Container
    table: TableReport
    customers: list[str]

    @property
    def tracking_uri(self) -> str:
        return self.container.settings.tracking_uri


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    if not UCI_BANK.exists():
        pytest.skip(f"the UCI Bank Marketing file is not at {UCI_BANK}")
    home = tmp_path_factory.mktemp("pyfunc")
    container = Container(make_settings(home, **NO_FLOOR))
    bank = generate(SPEC)
    bank_dir = home / "bank"
    bank.write(bank_dir)
    served = backfilled(container, bank, bank_dir)
    report = pipeline.train_from_bank(container, bank_dir, NEEDS)
    assert report.skipped == {} and sorted(m.need for m in report.models) == sorted(NEEDS)
    settings = container.settings
    table = train_table(
        UCI_BANK,
        label="y",
        need=TABLE_NEED,
        drop=["duration"],  # only known once the call has ended
        tracking_uri=settings.tracking_uri,
        artifact_root=settings.artifact_root,
        alias=settings.model_alias,
        folds=3,
    )
    container.models.refresh()
    customers = sorted(served)[:SCORED]
    yield Registry(container, table, customers)
    container.close()


def _champion(registry: Registry, name: str) -> PyFuncModel:
    mlflow.set_tracking_uri(registry.tracking_uri)
    model: PyFuncModel = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    return model


def _predict(model: PyFuncModel, rows: pd.DataFrame) -> np.ndarray:
    # A pyfunc's declared output is any of several types; these models answer an array.
    return np.asarray(model.predict(rows))


def _input_types(model: PyFuncModel) -> dict[str, DataType]:
    schema = model.metadata.get_input_schema()
    assert schema is not None
    return {column.name: column.type for column in schema.inputs}


def _online_rows(registry: Registry) -> list[dict[str, float | None]]:
    reads = registry.container.features
    return [reads.read(c).values for c in [*registry.customers, UNKNOWN]]


def _uci_rows() -> pd.DataFrame:
    """The CSV's own rows as pandas reads them, without the label."""
    return pd.read_csv(UCI_BANK, sep=";").drop(columns=["y"])


def test_every_registered_model_is_a_need_model_or_the_table_model(registry) -> None:
    names = {m.name for m in MlflowClient(registry.tracking_uri).search_registered_models()}
    assert names == {need_model.registered_name(n) for n in NEEDS} | {registry.table.name}


@pytest.mark.parametrize("need", NEEDS)
def test_a_need_model_predicts_online_rows_as_the_api_scores_them(registry, need) -> None:
    model = _champion(registry, need_model.registered_name(need))
    assert _input_types(model) == dict.fromkeys(SCORING_FEATURES, DataType.double)

    rows = _online_rows(registry)
    assert any(v is None for row in rows for v in row.values())  # missing values are served
    assert all(v is None for v in rows[-1].values())  # the unknown customer
    predicted = _predict(model, pd.DataFrame.from_records(rows))

    served = registry.container.models[need]
    champion = MlflowClient(registry.tracking_uri).get_model_version_by_alias(
        served.name, "champion"
    )
    assert served.version == str(champion.version)
    expected = [served.probability(served.row(values)) for values in rows]
    assert predicted.shape == (len(rows),)
    assert ((predicted >= 0) & (predicted <= 1)).all()
    assert predicted.tolist() == pytest.approx(expected, rel=1e-12)
    assert np.unique(predicted).size > 1  # the rows are scored, not a constant
    # One row at a time, as a decision scores it: a column of None alone is no number type.
    for values in (rows[0], rows[-1]):
        alone = _predict(model, pd.DataFrame([values]))
        assert alone.tolist() == pytest.approx([served.probability(served.row(values))], rel=1e-12)


def test_the_table_model_predicts_the_csv_rows_with_the_encoding_inside(registry) -> None:
    report = registry.table
    model = _champion(registry, report.name)
    rows = _uci_rows()
    labels = pd.read_csv(UCI_BANK, sep=";", usecols=["y"])["y"].eq("yes").to_numpy()

    # The signature is the table's own: text columns strings, integer columns longs.
    text = rows.select_dtypes(include="object").columns
    assert len(text) == 9 and set(report.categorical) == set(text)
    assert _input_types(model) == {
        name: DataType.string if name in text else DataType.long for name in report.features
    }
    assert "duration" not in report.features

    predicted = _predict(model, rows)  # duration is there too: an input the model ignores
    assert predicted.shape == (len(rows),)
    assert ((predicted >= 0) & (predicted <= 1)).all()

    # NextBest's own scoring: the booster and calibration of the registered version, with the
    # levels the run logged, applied to the same rows outside MLflow.
    mlflow.set_tracking_uri(registry.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{report.name}@champion"))
    booster = lgb.Booster(model_file=str(folder / "artifacts" / "booster.txt"))
    categories = json.loads(mlflow.artifacts.load_text(f"runs:/{report.run_id}/categories.json"))
    assert sorted(categories) == sorted(report.categorical)
    encoded = encode_features(rows, report.features, categories)
    assert not encoded[report.categorical].isna().any().any()  # every level was recognised
    margin = np.asarray(booster.predict(encoded, raw_score=True))
    expected = Calibration.from_dict(report.calibration).apply(margin)
    assert predicted.tolist() == pytest.approx(expected.tolist(), rel=1e-12)

    # Calibrated: the mean probability is the share of subscribers, and so it is within each
    # tenth of the scores; the booster's own weighted probability overstates it.
    assert predicted.mean() == pytest.approx(labels.mean(), abs=0.015)
    weighted = 1 / (1 + np.exp(-margin))
    assert weighted.mean() > labels.mean() + 0.05
    tenths = pd.qcut(predicted, 10, labels=False)
    gaps = pd.DataFrame({"p": predicted, "y": labels}).groupby(tenths).mean().diff(axis=1)["y"]
    assert gaps.abs().max() < 0.03


def test_the_table_model_treats_an_unseen_level_as_missing(registry) -> None:
    model = _champion(registry, registry.table.name)
    row = _uci_rows().iloc[[0]]
    success = _predict(model, row.assign(poutcome="success"))[0]
    failure = _predict(model, row.assign(poutcome="failure"))[0]
    unseen = _predict(model, row.assign(poutcome="astronaut"))[0]
    missing = _predict(model, row.assign(poutcome=None))[0]
    assert success > failure  # the level reaches the booster as itself
    assert unseen == missing and 0 <= unseen <= 1


def test_every_model_loads_and_predicts_where_nextbest_cannot_be_imported(
    registry, tmp_path
) -> None:
    """What a plain MLflow installation does (``mlflow models serve``, a notebook): the model's
    code comes from the model, not from NextBest's packages."""
    names = {need_model.registered_name(n): "need" for n in NEEDS} | {registry.table.name: "table"}
    inputs = {
        "need": pd.DataFrame.from_records(_online_rows(registry)),
        "table": _uci_rows().sample(500, random_state=3),
    }
    for kind, rows in inputs.items():
        rows.to_pickle(tmp_path / f"{kind}.pkl")
    script = textwrap.dedent(
        """
        import json, sys
        for package in ("training", "service", "feature_repo", "consent", "bench", "tests"):
            sys.modules[package] = None  # importing it raises ImportError
        import mlflow
        import pandas as pd

        uri, folder, names = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        mlflow.set_tracking_uri(uri)
        out = {}
        for name, kind in names.items():
            model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
            out[name] = model.predict(pd.read_pickle(f"{folder}/{kind}.pkl")).tolist()
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, registry.tracking_uri, str(tmp_path), json.dumps(names)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    elsewhere = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(elsewhere) == set(names)
    for name, kind in names.items():
        here = _predict(_champion(registry, name), inputs[kind])
        assert elsewhere[name] == pytest.approx(here.tolist(), rel=1e-12)


def test_a_need_model_logged_as_a_pickle_before_still_loads(registry, tmp_path) -> None:
    """Versions registered before the model's code was logged with it hold a pickle naming
    ``training.need_model.CalibratedNeedModel``: the API and MLflow still load them."""
    need = "mortgage"
    name = need_model.registered_name(need)
    mlflow.set_tracking_uri(registry.tracking_uri)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion")) / "artifacts"
    files = {
        "booster": str(folder / "booster.txt"),
        "calibration": str(folder / "calibration.json"),
        "features": str(folder / "features.json"),
    }
    champion = MlflowClient(registry.tracking_uri).get_model_version_by_alias(name, "champion")
    assert champion.run_id is not None
    with mlflow.start_run(experiment_id=mlflow.get_run(champion.run_id).info.experiment_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CalibratedNeedModel(),
            artifacts=files,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    old = load_version(MlflowClient(registry.tracking_uri), need, version)
    pickled = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    served = registry.container.models[need]
    rows = _online_rows(registry)
    expected = [served.probability(served.row(values)) for values in rows]
    assert [old.probability(old.row(values)) for values in rows] == expected
    predicted = pickled.predict(pd.DataFrame.from_records(rows))
    assert predicted.tolist() == pytest.approx(expected, rel=1e-12)
