"""Scenario 7: batch scoring goes through the gate. ``nextbest score --as-of`` a time before a
customer withdrew profiling consent leaves them out, as it leaves out do-not-contact, vulnerable
and AML-flagged customers; the run is one record in the audit chain, which verifies; a run that
cannot check consent or log itself writes nothing. On the embedded operational store and on
real PostgreSQL (the features and models of one small bank, streamed and trained once).

Also here, on the same bank: batch scores equal the scores the decision path gives the same
customers at the same moment (the offline point-in-time row with serving's freshness rule)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine, text

from consent.rules.chain import mentions
from consent.rules.model import ConsentGiven
from consent.rules.record import is_operation
from consent.rules.vocabulary import ANY_CHANNEL
from consent.stores.customers import from_extract
from feature_repo.activity import FEATURE_NAMES, VALID_UNTIL
from service.bootstrap import Container
from service.entrypoints.cli import main
from service.usecases import pipeline
from service.usecases.decision_messages import DecideForCustomer
from service.usecases.promotion import promote
from service.usecases.scoring import batch_score, eligible
from tests.conftest import make_settings
from training.bank.in_memory import Bank, generate
from training.bank.spec import BankSpec, busy_housing_market

END = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
SPEC = BankSpec(seed=29, customers=600, days=120, end=END, situations=busy_housing_market())
#: The floor is not under test here (tests/unit/test_quality_floor.py): a bank this small may
#: train a weak model, and the gate must hold whatever model is served.
NO_FLOOR = {"model_min_roc_auc": "0", "model_min_top_decile_lift": "0"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Iterator[tuple[Container, Bank]]:
    """A small bank streamed through the local log into Feast (online and offline) and a
    mortgage model trained and served, on the embedded defaults."""
    home = tmp_path_factory.mktemp("batch-gate")
    container = Container(make_settings(home, **NO_FLOOR))
    bank = generate(SPEC)
    bank.write(home / "bank")
    pipeline.load_bank(container, bank)
    pipeline.stream_until_idle(container, idle_s=2.0)
    report = pipeline.train_from_bank(
        container, home / "bank", ("mortgage",), step_days=3, warm_up_days=14
    )
    assert [m.need for m in report.models] == ["mortgage"]
    container.models.refresh()
    yield container, bank
    container.close()


@pytest.fixture(params=["embedded", "postgresql"])
def stack(request, trained) -> Iterator[tuple[Container, dict[str, str], Bank]]:
    """The trained bank's features and models, with its consents, customer directory and
    audit log in SQLite or in a fresh PostgreSQL schema; and the environment that points the
    CLI at the same."""
    container, bank = trained
    home = container.settings.home
    env = {"NEXTBEST_HOME": str(home), **{f"NEXTBEST_{k.upper()}": v for k, v in NO_FLOOR.items()}}
    if request.param == "embedded":
        yield container, env, bank
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"batch{datetime.now(UTC):%H%M%S%f}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"create schema {schema}"))
    database_url = f"{url}?options=-csearch_path%3D{schema}"
    env["NEXTBEST_DATABASE_URL"] = database_url
    on_pg = Container(make_settings(home, database_url=database_url, **NO_FLOOR))
    try:
        # Served only with a promotion in this store's audit log, as where they were trained.
        client = MlflowClient(on_pg.settings.tracking_uri)
        for model in container.models.values():
            promote(on_pg.audit, client, model.name, model.version, "champion", "this store")
        pipeline.record_consents(on_pg, bank.consents)
        on_pg.directory.upsert(from_extract(bank.customers))
        yield on_pg, env, bank
    finally:
        on_pg.close()
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


def _profiling(container: Container, customer: str, granted: bool, at: datetime) -> None:
    container.registry.record(
        [
            ConsentGiven(
                customer_id=customer,
                purpose="profiling",
                channel=ANY_CHANNEL,
                granted=granted,
                recorded_at=at,
                source="hostile-test",
                notice_version="v1",
            )
        ]
    )


def _flag(container: Container, customer: str, **facts: bool) -> None:
    known = container.directory.get(customer)
    assert known is not None
    changed = known.facts.model_copy(update=facts)
    container.directory.upsert([type(known)(customer, known.household_id, known.rm_id, changed)])


def _score(env: dict[str, str], out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["score", "--out", str(out), *args], env=env)
    return result.exit_code, result.output


def test_score_as_of_before_a_withdrawal_leaves_the_customer_out_and_is_audited(
    stack, tmp_path
) -> None:
    container, env, _bank = stack
    as_of = END - timedelta(days=1)
    profiled = sorted(
        container.registry.granted_at("profiling", ANY_CHANNEL, as_of)
        & container.registry.granted_at("profiling", ANY_CHANNEL, datetime.now(UTC))
    )
    good = [
        c
        for c in profiled
        if (k := container.directory.get(c)) is not None
        and k.facts.kyc_status == "complete"
        and not (k.facts.vulnerable or k.facts.aml_flag or k.facts.do_not_contact)
    ]
    withdrew, no_contact, vulnerable, flagged, kept = good[:5]
    _profiling(container, withdrew, False, datetime.now(UTC))  # after the as-of time
    _flag(container, no_contact, do_not_contact=True)
    _flag(container, vulnerable, vulnerable=True)
    _flag(container, flagged, aml_flag=True)

    out = tmp_path / "campaign.parquet"
    code, output = _score(env, out, "--as-of", as_of.strftime("%Y-%m-%dT%H:%M:%S"))
    assert code == 0, output
    summary = json.loads(output)
    scored = set(pq.read_table(out).to_pandas()["customer_id"])
    assert kept in scored
    assert not {withdrew, no_contact, vulnerable, flagged} & scored
    left_out = summary["left_out"]
    assert left_out["profiling_withdrawn_since_as_of"] >= 1
    codes = left_out["by_reason_code"]
    assert codes["DO_NOT_CONTACT"] >= 1 and codes["VULNERABLE_CUSTOMER"] >= 1
    assert codes["AML_FLAG"] >= 1 and left_out["customer_rules"] >= 3
    assert summary["profiled_at_as_of"] >= summary["customers_scored"] + 4
    assert summary["customers_scored"] == len(scored)

    # One record of the run in the chain (besides the models' promotions): counts, versions,
    # the file's hash; nobody named.
    (entry,) = [
        e
        for e in container.audit.export()
        if is_operation(e["record"]) and e["record"]["operation"] == "batch_score"
    ]
    record = entry["record"]
    assert record["operation"] == "batch_score" and entry["customer_ref"] == "operation"
    details = record["details"]
    digest = "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert details["output_sha256"] == digest == summary["output_sha256"]
    assert details["as_of"] == as_of.isoformat()
    assert details["customers_scored"] == len(scored) and details["left_out"] == left_out
    assert details["policy_version"] == container.policy.version
    assert details["models"]["mortgage"]["version"] == container.models["mortgage"].version
    assert not any(mentions(entry["body"], c) for c in (withdrew, no_contact, kept))
    if "NEXTBEST_DATABASE_URL" in env:  # the command's own container would stay open
        assert container.audit.verify().ok
    else:
        verified = CliRunner().invoke(main, ["audit", "verify"], env=env)
        assert verified.exit_code == 0, verified.output


def test_a_run_that_cannot_read_consent_or_log_itself_writes_nothing(stack, tmp_path) -> None:
    container, env, _bank = stack
    out = tmp_path / "campaign.parquet"
    unreachable = {**env, "NEXTBEST_DATABASE_URL": "postgresql+psycopg://x@127.0.0.1:9/none"}
    code, output = _score(unreachable, out)
    assert code == 1 and "nothing was written" in output
    assert list(tmp_path.iterdir()) == []

    records = container.audit.verify().records
    with container.engine.begin() as connection:  # the audit log refuses every write
        if container.engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                    "BEGIN SELECT RAISE(ABORT, 'audit log read-only'); END"
                )
            )
        else:
            connection.execute(text("REVOKE INSERT ON audit_log FROM PUBLIC"))
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit log read-only'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
    try:
        code, output = _score(env, out)
        assert code == 1 and "audit" in output
        assert list(tmp_path.iterdir()) == []
    finally:
        with container.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_audit" + _on_table(container)))
    assert container.audit.verify().records == records


def _on_table(container: Container) -> str:
    return "" if container.engine.dialect.name == "sqlite" else " ON audit_log"


def test_batch_scores_equal_the_decision_paths_at_the_same_moment(trained, tmp_path) -> None:
    """Same customers, same moment: the batch list's score and the score the decision path
    (the API's) gives. Both read the same feature row; serving treats a stale feature as
    missing, and so does batch scoring at its scoring time."""
    container, _bank = trained
    out = tmp_path / "now.parquet"
    eligible_now = eligible(container, datetime.now(UTC), datetime.now(UTC)).customers
    every = eligible_now[:: max(1, len(eligible_now) // 60)]
    # A few rows overdue, online and offline alike: due to change half an hour ago (a timer
    # that did not fire), so stale on both paths.
    overdue = every[:: max(1, len(every) // 6)]
    moment = datetime.now(UTC)
    rows = pd.DataFrame(
        [
            {
                "customer_id": c,
                "event_timestamp": moment - timedelta(seconds=30),
                **{n: container.features.read(c).values[n] for n in FEATURE_NAMES},
                VALID_UNTIL: (moment - timedelta(minutes=30)).timestamp(),
            }
            for c in overdue
        ]
    )
    container.features.write(rows)
    at = datetime.now(UTC)
    batch_score(container, out, at)
    batch = pq.read_table(out).to_pandas().set_index("customer_id")["score_mortgage"]
    assert len(batch) > 100
    customers = [c for c in every if c in batch.index]
    online, stale = {}, 0
    for customer in customers:
        record = container.decisions.decide(DecideForCustomer(customer, "mobile_app")).record
        (candidate,) = [c for c in record.candidates if c.action_id == "mortgage_consultation"]
        online[customer] = candidate.score
        read = container.features.read(customer)
        stale += bool(read.fresh(at)[1])
    # Customers whose rows are overdue are among them: the case where the two paths used to
    # differ (the offline row used as is, the online one fresh-filtered).
    assert stale >= 3, stale
    compared = pd.DataFrame({"batch": batch.loc[customers], "online": pd.Series(online)})
    assert compared["online"].notna().all()
    assert (compared["batch"] - compared["online"]).abs().max() <= 1e-9, compared
