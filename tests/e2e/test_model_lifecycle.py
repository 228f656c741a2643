"""Train, serve, retrain, promote, roll back — against a real MLflow tracking store (SQLAlchemy
on SQLite, artifacts on disk), with the API switching models without a restart; and the
training set never holding a customer who had not agreed to be profiled."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from mlflow.tracking import MlflowClient

from consent.rules.control_checks import UNIVERSAL_RULE, in_universal_control
from consent.rules.params import UniversalControlParams
from feature_repo.activity import FEATURE_NAMES
from service.bootstrap import Container
from service.entrypoints.api.app import create_app
from service.usecases import pipeline, retrain
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.promotion import PromotionRefused, promote
from service.usecases.scoring import batch_score
from tests.conftest import backfilled, key_headers, make_settings
from training import trainset
from training.backfill import history
from training.bank.in_memory import generate
from training.bank.spec import BankSpec, busy_housing_market

SPEC = BankSpec(seed=17, customers=3_000, days=200, situations=busy_housing_market())
NEEDS = ("mortgage",)


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Iterator[tuple[Container, Path]]:
    home = tmp_path_factory.mktemp("lifecycle")
    container = Container(make_settings(home, model_refresh_seconds="0.2"))
    bank = generate(SPEC)
    bank_dir = home / "bank"
    bank.write(bank_dir)
    backfilled(container, bank, bank_dir)
    yield container, bank_dir
    container.close()


def _served(client: TestClient) -> str:
    served: str = client.get("/readyz").json()["models"]
    return served


def _wait_for(client: TestClient, expected: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _served(client) == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"the API still serves {_served(client)!r}, not {expected!r}")


def _decide(client: TestClient, customer: str) -> dict[str, Any]:
    response = client.post("/v1/decisions", json={"customer_id": customer, "channel": "rm"})
    assert response.status_code == 200, response.text
    decision: dict[str, Any] = response.json()
    return decision


def test_promotion_and_rollback_reach_the_running_api(state) -> None:
    container, bank_dir = state
    first = pipeline.train_from_bank(container, bank_dir, NEEDS)
    (champion,) = first.models
    assert champion.version == "1"
    evaluation = first.evaluations["mortgage"]
    assert evaluation["roc_auc"] > 0.6 and evaluation["oracle_ratio"] is not None
    assert set(evaluation["fairness"]["ratio"]) == {"gender", "age_band"}
    run = MlflowClient(container.settings.tracking_uri).get_run(champion.run_id)
    assert run.data.params["training_set_fingerprint"] == first.fingerprint
    assert run.data.params["label_horizon_days"] == "30"
    assert {"customer_activity", "customer_profile"} <= set(
        json.loads(run.data.params["feature_views"])
    )
    assert run.data.metrics["test_roc_auc"] == pytest.approx(evaluation["roc_auc"])
    artifacts = MlflowClient(container.settings.tracking_uri).list_artifacts(
        champion.run_id, "plots"
    )
    assert {a.path.split("/")[-1] for a in artifacts} == {
        "roc.png",
        "lift.png",
        "calibration.png",
        "feature_importance.png",
    }
    consenting = pd.read_parquet(bank_dir / "consents.parquet")
    customer = sorted(set(consenting.loc[consenting["purpose"] == "profiling", "customer_id"]))[0]

    with TestClient(create_app(container), headers=key_headers(container, "rm")) as client:
        assert _served(client) == "mortgage@1"
        assert _decide(client, customer)["models"] == {"mortgage": "nextbest-mortgage/1"}

        # A challenger that must be better by an impossible margin stays a challenger.
        (kept,) = retrain.retrain(container, bank_dir, NEEDS, min_gain=1.0)
        assert not kept.promoted and "not better by the margin" in kept.reason
        assert kept.champion_version == "1" and kept.challenger_version == "2"
        time.sleep(0.6)
        assert _served(client) == "mortgage@1"

        # A challenger allowed to be a little worse (same data, same seed: equal) is promoted.
        (promoted,) = retrain.retrain(container, bank_dir, NEEDS, min_gain=-1.0)
        assert promoted.promoted and promoted.challenger_version == "3"
        assert promoted.champion_roc_auc == pytest.approx(promoted.challenger_roc_auc, abs=0.02)
        _wait_for(client, "mortgage@3")
        assert _decide(client, customer)["models"] == {"mortgage": "nextbest-mortgage/3"}

        # Rolling back moves the alias, and the API follows without a restart.
        event = retrain.rollback(container, "mortgage")
        assert event == {
            "need": "mortgage",
            "model": "nextbest-mortgage",
            "from_version": "3",
            "to_version": "1",
        }
        _wait_for(client, "mortgage@1")
        assert _decide(client, customer)["models"] == {"mortgage": "nextbest-mortgage/1"}

        # The registry unreachable: the loaded models keep serving.
        container.models.tracking_uri = "http://127.0.0.1:9"
        assert container.models.refresh() == {}
        assert _served(client) == "mortgage@1"
        container.models.tracking_uri = container.settings.tracking_uri

    client_ = MlflowClient(container.settings.tracking_uri)
    tags = client_.get_model_version("nextbest-mortgage", "2").tags
    assert tags["promotion"] == "rejected" and "margin" in tags["promotion_reason"]
    assert client_.get_model_version("nextbest-mortgage", "3").tags["promotion"] == "promoted"
    experiment = client_.get_experiment_by_name(retrain.EXPERIMENT)
    assert experiment is not None
    verdicts = client_.search_runs([experiment.experiment_id])
    assert {r.data.params["action"] for r in verdicts} == {"retrain", "rollback"}


def test_batch_scores_cover_every_profiled_customer_and_nobody_else(state, tmp_path) -> None:
    container, bank_dir = state
    if not container.models.snapshot():
        pipeline.train_from_bank(container, bank_dir, NEEDS)
        container.models.refresh()
    out = tmp_path / "scores.parquet"
    summary = batch_score(container, out, SPEC.end)
    scores = pq.read_table(out).to_pandas()
    consents = pd.read_parquet(bank_dir / "consents.parquet")
    profiling = consents[consents["purpose"] == "profiling"].sort_values("recorded_at")
    latest = profiling.groupby("customer_id").tail(1)
    profiled = set(latest.loc[latest["granted"], "customer_id"])
    # The gate's customer rules leave out the vulnerable, the AML-flagged, KYC incomplete and
    # the universal control group (a list for selling is not for them).
    people = pd.read_parquet(bank_dir / "customers.parquet")
    good = people["kyc_status"].eq("complete") & ~people["vulnerable"] & ~people["aml_flag"]
    universal = container.policy.rule(UNIVERSAL_RULE)
    assert universal is not None and isinstance(universal.params, UniversalControlParams)
    control = {c for c in profiled if in_universal_control(universal.params, c)}
    assert control, "a bank this size has customers in the control group"
    allowed = (profiled & set(people.loc[good, "customer_id"])) - control
    assert set(scores["customer_id"]) == allowed
    assert summary["customers"] == len(allowed)
    assert summary["left_out"]["customer_rules"] == len(profiled - allowed) > 0
    assert scores["score_mortgage"].between(0, 1).all()
    assert b"nextbest.models" in pq.read_schema(out).metadata


def test_training_sets_never_hold_customers_without_profiling_consent(state) -> None:
    container, bank_dir = state
    data = pipeline.bank_training_set(container, bank_dir, 30, 7)
    consents = pd.read_parquet(bank_dir / "consents.parquet")
    profiling = consents[consents["purpose"] == "profiling"].copy()
    profiling["recorded_at"] = pd.to_datetime(profiling["recorded_at"], utc=True)
    customers = pd.read_parquet(bank_dir / "customers.parquet", columns=["customer_id"])
    times = sorted(data.frame["event_timestamp"].unique())
    entity = trainset.snapshots(customers["customer_id"].tolist(), times)

    def granted_at(stamp: pd.Timestamp) -> set[str]:
        known = profiling[profiling["recorded_at"] <= stamp].sort_values("recorded_at")
        latest = known.groupby("customer_id").tail(1)
        return set(latest.loc[latest["granted"], "customer_id"])

    # Consent at training time too: the bank's history ends before now.
    still = granted_at(pd.Timestamp.now(tz="UTC"))
    checked = excluded = withdrawn = 0
    for at in times:
        allowed = granted_at(pd.Timestamp(at))
        rows = data.frame["event_timestamp"] == pd.Timestamp(at)
        present = set(data.frame.loc[rows, "customer_id"])
        assert present == allowed & still, at  # nobody else, and every one of them
        checked += len(present)
        excluded += len(customers) - len(allowed)
        withdrawn += len(allowed - still)
    assert data.excluded_without_profiling == excluded
    assert data.excluded_withdrawn_now == withdrawn > 0  # the bank has later objections
    assert excluded + withdrawn == len(entity) - checked
    never = set(customers["customer_id"]) - set(profiling["customer_id"])
    objectors = set(profiling.loc[~profiling["granted"], "customer_id"])
    assert never and objectors  # the bank has both kinds
    assert not never & set(data.frame["customer_id"])
    assert excluded > 0


def test_training_rows_hold_the_features_as_of_their_snapshot(state) -> None:
    """The point-in-time join must find the backfilled row of the snapshot itself: a row stamped
    off the snapshot grid would make it take the row a whole step older."""
    container, bank_dir = state
    frame = pipeline.bank_training_set(container, bank_dir, horizon_days=30, step_days=7).frame
    moments = sorted(frame["event_timestamp"].unique())
    moment = pd.Timestamp(moments[len(moments) // 2])
    at = frame[frame["event_timestamp"] == moment].set_index("customer_id")
    events = pq.read_table(sorted((bank_dir / "events").glob("*.parquet")))
    ((_, rows),) = history(events, [moment])
    expected = rows.to_pandas().set_index("customer_id")
    # Every customer with anything inside the windows gets a row at this snapshot, exact as of
    # it, as the stream's timers keep a quiet customer's features.
    assert (expected["event_timestamp"] == moment).all()
    shared = at.index.intersection(expected.index)
    assert len(shared) > 0.9 * len(at)
    names = list(FEATURE_NAMES)
    np.testing.assert_allclose(
        at.loc[shared, names].to_numpy(dtype=float),
        expected.loc[shared, names].to_numpy(dtype=float),
        rtol=1e-9,
        atol=1e-9,
    )


def test_a_model_below_the_floor_is_neither_promoted_nor_served(state) -> None:
    container, bank_dir = state
    client = MlflowClient(container.settings.tracking_uri)
    name = "nextbest-mortgage"
    before = client.get_model_version_by_alias(name, "champion").version
    strict = Container(make_settings(container.settings.home, model_min_roc_auc="0.999"))
    try:
        report = pipeline.train_from_bank(strict, bank_dir, NEEDS)
        (model,) = report.models
        assert report.below_floor["mortgage"].startswith("below the quality floor: test ROC AUC")
        printed = pipeline.report_dict(report)
        assert printed["models"]["mortgage"]["promoted"] is False
        assert printed["below_floor"] == report.below_floor
        assert client.get_model_version(name, model.version).tags["quality_floor"] == "below"
        assert client.get_model_version_by_alias(name, "champion").version == before

        (verdict,) = retrain.retrain(strict, bank_dir, NEEDS, min_gain=-1.0)
        assert not verdict.promoted and verdict.reason.startswith("below the quality floor")
        assert client.get_model_version_by_alias(name, "champion").version == before

        # Pointed at by hand, it is still not served: the need's actions are withheld.
        client.set_registered_model_alias(name, "champion", model.version)
        strict.models.refresh()
        assert "mortgage" not in strict.models and "mortgage" in strict.models.refused()
        customer = sorted(strict.registry.granted_at("profiling", "any", datetime.now(UTC)))[0]
        record = strict.decisions.decide(DecideForCustomer(customer, "rm")).record
        (mortgage,) = [c for c in record.candidates if c.action_id == "mortgage_consultation"]
        assert "NO_MODEL" in mortgage.suppressed_by and mortgage.score is None
    finally:
        client.set_registered_model_alias(name, "champion", before)
        strict.close()


def _artifact_file(client: MlflowClient, name: str, version: str) -> Path:
    """Where the registry keeps a version's booster on disk (the artifact store is a folder)."""
    location = client.get_model_version_download_uri(name, version)
    assert location.startswith("file://"), location
    return Path(location.removeprefix("file://")) / "artifacts" / "booster.txt"


def _operations(container: Container, kind: str) -> list[dict[str, Any]]:
    return [body["details"] for body in container.audit.operations(kind)]


def test_a_model_not_promoted_by_nextbest_or_changed_since_is_not_served(state) -> None:
    """Anyone who reaches the registry can move an alias or overwrite an artifact: the API
    serves only a version promoted through NextBest with the digest of the files it loads,
    and the audit log says why it refused one."""
    container, bank_dir = state
    client = MlflowClient(container.settings.tracking_uri)
    name = "nextbest-mortgage"
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    promoted = [p for p in _operations(container, "model_promotion") if p["version"] == champion]
    assert promoted and promoted[-1]["digest"].startswith("sha256:")
    customer = sorted(container.registry.granted_at("profiling", "any", datetime.now(UTC)))[0]
    record = container.decisions.decide(DecideForCustomer(customer, "rm")).record
    assert [m.digest for m in record.models] == [promoted[-1]["digest"]]

    # A challenger, registered with its digest, whose booster is changed before promotion.
    (kept,) = retrain.retrain(container, bank_dir, NEEDS, min_gain=1.0)
    challenger = kept.challenger_version
    booster = _artifact_file(client, name, challenger)
    original = booster.read_bytes()
    booster.write_bytes(original.replace(b"leaf_value=", b"leaf_value=1", 1))
    with pytest.raises(PromotionRefused, match="changed after its registration"):
        promote(container.audit, client, name, challenger, "champion", "by hand")
    refused = _operations(container, "model_promotion_refused")
    assert refused[-1]["version"] == challenger and refused[-1]["registered_digest"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion

    # The alias moved by hand in the registry, without NextBest: not served.
    try:
        client.set_registered_model_alias(name, "champion", challenger)
        fresh = Container(container.settings)  # a process starting now
        try:
            assert "mortgage" not in fresh.models
            assert "never promoted to champion" in fresh.models.refused()["mortgage"]
            (refusal,) = [
                r for r in _operations(fresh, "model_refused") if r["version"] == challenger
            ]
            assert "never promoted" in refusal["reason"]
            record = fresh.decisions.decide(DecideForCustomer(customer, "rm")).record
            (mortgage,) = [c for c in record.candidates if c.action_id == "mortgage_consultation"]
            assert "NO_MODEL" in mortgage.suppressed_by
        finally:
            fresh.close()
    finally:
        client.set_registered_model_alias(name, "champion", champion)
        booster.write_bytes(original)

    # The promoted champion's own booster overwritten afterwards: a new process refuses it.
    served = _artifact_file(client, name, champion)
    before = served.read_bytes()
    try:
        served.write_bytes(before.replace(b"leaf_value=", b"leaf_value=1", 1))
        fresh = Container(container.settings)
        try:
            assert "mortgage" not in fresh.models
            why = fresh.models.refused()["mortgage"]
            assert "is not the one promoted" in why
            assert any(
                r["version"] == champion and "is not the one promoted" in r["reason"]
                for r in _operations(fresh, "model_refused")
            )
        finally:
            fresh.close()
    finally:
        served.write_bytes(before)
