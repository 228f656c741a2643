"""The erasure register and what honours it on the embedded defaults: the stream worker, load,
backfill input, training and batch inputs; the purges of dead letters (local log) and offline
feature rows; the audit record of an erasure; made-up MLflow input examples."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.pandas import column, data_frames
from sqlalchemy import select

from consent.rules.simulate import replay
from consent.stores.erasure import REF_PREFIX, candidate_ids
from consent.stores.tables import audit_log, erasure_register
from feature_repo.activity import ACTIVITY_FIELDS
from feature_repo.definitions import ACTIVITY_VIEW
from service.adapters.erasure_purge import ERASED_MARKER, naming, purge_offline, redact_local_log
from service.adapters.features.offline import OfflineBuffer
from service.adapters.transport import DLQ_TOPIC
from service.bootstrap import Container
from service.usecases import pipeline
from service.usecases.erasure import erase_customer
from training.input_example import equals_a_row, synthetic_example

GONE, KEPT = "C0000013", "C0000014"


def _login(customer: str, n: int) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(hours=5 - n)
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "type": "login",
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "channel": "web",
    }


def test_the_register_names_nobody_and_is_seen_from_the_next_read(embedded) -> None:
    register = embedded.erasures
    assert not register.current() and GONE not in register
    erase_customer(embedded, GONE, "test:someone")
    erase_customer(embedded, GONE, "test:someone")  # twice: one entry
    with embedded.engine.connect() as connection:
        (entry,) = connection.execute(select(erasure_register)).all()
    assert entry.ref.startswith(REF_PREFIX) and GONE not in entry.ref
    assert GONE in register and KEPT not in register
    assert register.current().among([GONE, KEPT, GONE]) == {GONE}


def test_the_erasure_is_in_the_audit_log_without_the_identity_and_the_chain_verifies(
    embedded,
) -> None:
    erased = erase_customer(embedded, GONE, "compliance:officer-1")
    assert embedded.audit.verify().ok
    with embedded.engine.connect() as connection:
        (row,) = connection.execute(select(audit_log)).all()
    body = json.loads(row.body)
    assert body["record_type"] == "operation" and body["operation"] == "erasure"
    assert body["operation_id"] == erased.erasure_id == row.decision_id
    assert row.customer_ref == "operation"
    assert body["details"]["principal"] == "compliance:officer-1"
    assert GONE not in str(tuple(row))
    # What-if replays skip records that are not decisions.
    report = replay([body], embedded.policy, embedded.catalog)
    assert report.decisions == 0


def test_a_raw_record_names_its_customer_by_key_or_text_even_unparsed() -> None:
    assert candidate_ids(b"C1", b'{"customer_id": "C2", "broken') == {"C1", "C2"}
    assert candidate_ids(None, b"\x00 not json") == set()


def test_the_worker_drops_an_erased_customers_events_and_bad_records_on_any_replay(
    embedded,
) -> None:
    keyless_valid = (None, json.dumps(_login(GONE, 2)).encode())
    keyed_bad = (GONE, b'{"customer_id": "C0000013", "type": "nonsense"}')
    records = [(c, json.dumps(_login(c, n)).encode()) for c in (GONE, KEPT) for n in range(2)]
    pipeline.publish(embedded, [*records, keyless_valid, keyed_bad])
    erase_customer(embedded, GONE, "test:someone")
    stats = pipeline.stream_until_idle(embedded, idle_s=0.3)
    assert (stats.events, stats.erased, stats.dead_letters) == (2, 4, 0)
    assert not embedded.features.read(GONE).known and embedded.features.read(KEPT).known
    assert embedded.consumer(DLQ_TOPIC).poll(100) == []


def test_load_skips_the_consents_profiles_and_events_of_erased_customers(embedded) -> None:
    erase_customer(embedded, GONE, "test:someone")
    consents = pd.DataFrame(
        {
            "customer_id": [GONE, KEPT],
            "purpose": "marketing",
            "channel": "email",
            "granted": True,
            "recorded_at": datetime.now(UTC) - timedelta(days=1),
            "source": "extract",
            "notice_version": "v1",
        }
    )
    assert pipeline.record_consents(embedded, consents) == 1
    assert embedded.registry.history(GONE) == []
    timed = [(1, GONE, b"{}"), (2, KEPT, b"{}"), (3, None, b"{}")]
    assert list(pipeline.without_erased_records(embedded, timed)) == timed[1:]
    events = pa.table({"customer_id": [GONE, KEPT, GONE], "n": [1, 2, 3]})
    kept = pipeline._without_erased_events(events, embedded.erasures.current())
    assert kept["customer_id"].to_pylist() == [KEPT]


def test_dead_letters_on_the_local_log_are_overwritten_in_place(embedded) -> None:
    topic = embedded.settings.topic(DLQ_TOPIC)
    producer = embedded.producer()
    letters = [
        (None, json.dumps({"key": GONE, "value": json.dumps({"customer_id": GONE})})),
        ("dlq-key-1", json.dumps({"key": KEPT, "value": "{}"})),
        (None, json.dumps({"key": None, "value": '{"customer_id": "C0000013", "x'})),
        (GONE, json.dumps({"key": "x", "value": "{}"})),
    ]
    for key, value in letters:
        producer.send(topic, key, value.encode())
    producer.flush()
    reader = embedded.local_log.consumer(topic, "before")
    reader.commit(reader.poll(1))  # a committed byte position, before the purge
    path = embedded.local_log.path(topic)
    size = path.stat().st_size

    assert redact_local_log(path, naming(GONE)) == 3
    assert redact_local_log(path, naming(GONE)) == 0  # idempotent
    assert path.stat().st_size == size
    after = embedded.local_log.consumer(topic, "after")
    records = after.poll(10)
    assert [r.offset for r in records] == [0, 1, 2, 3]
    assert records[1].value == letters[1][1].encode() and records[1].key == b"dlq-key-1"
    for record in (records[0], records[2], records[3]):
        assert record.value.startswith(ERASED_MARKER) and GONE.encode() not in record.value
        assert GONE.encode() not in (record.key or b"")
    resumed = embedded.local_log.consumer(topic, "before").poll(10)
    assert [r.offset for r in resumed] == [1, 2, 3] and resumed[0].value == records[1].value


def test_erasure_removes_the_customers_offline_feature_rows(embedded) -> None:
    buffer = OfflineBuffer(embedded.store_location)
    stamps = np.array([1_700_000_000_000_000, 1_700_000_100_000_000], np.int64)
    for _ in range(2):
        buffer.add([GONE, KEPT], stamps, np.ones((2, len(ACTIVITY_FIELDS))))
        buffer.flush()
    folder = embedded.store_location.offline_dir / ACTIVITY_VIEW
    assert purge_offline(embedded.store_location, GONE) == 2
    rows = pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("*.parquet")))
    assert rows["customer_id"].to_pylist() == [KEPT, KEPT]
    assert purge_offline(embedded.store_location, GONE) == 0


def test_an_erasure_reports_its_purges(embedded) -> None:
    producer = embedded.producer()
    producer.send(embedded.settings.topic(DLQ_TOPIC), None, json.dumps({"key": GONE}).encode())
    producer.flush()
    buffer = OfflineBuffer(embedded.store_location)
    buffer.add([GONE], np.array([1_700_000_000_000_000]), np.ones((1, len(ACTIVITY_FIELDS))))
    buffer.flush()
    erased = erase_customer(embedded, GONE, "test:someone")
    assert (erased.dead_letters, erased.offline_rows) == (1, 1)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    data_frames(
        [
            column("a", elements=finite),
            column("b", elements=st.sampled_from([0.0, 1.0])),
            column("c", dtype=np.int64, elements=st.integers(0, 3)),
        ],
        index=st.builds(pd.RangeIndex, st.integers(1, 30)),
    )
)
def test_the_logged_input_example_is_never_a_training_row(frame: pd.DataFrame) -> None:
    row, example = synthetic_example(frame)
    assert list(row.columns) == ["a", "b", "c"] and len(row) == 1
    assert row.dtypes.to_dict() == frame.dtypes.to_dict()  # the signature of the real rows
    if example is not None:
        assert not equals_a_row(frame, example)
    # One row, or all rows equal: the medians are that row, so nothing is logged.
    if frame.drop_duplicates().shape[0] == 1:
        assert example is None


def test_an_erasure_committed_while_a_batch_is_being_written_is_not_undone_by_it(
    embedded: Container,
) -> None:
    consent = {
        **_login(GONE, 3),
        "type": "consent_changed",
        "payload": {
            "purpose": "marketing",
            "channel": "email",
            "granted": True,
            "source": "app",
            "notice_version": "v1",
        },
    }
    events = [_login(GONE, 1), _login(KEPT, 1), consent]
    pipeline.publish_events(embedded, events)
    worker = embedded.worker()
    states = worker.states

    class ErasedMidBatch:
        """The stream's state store, with an erasure committing between the worker's check of
        the register and its writes."""

        def __getattr__(self, name: str) -> object:
            return getattr(states, name)

        def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
            erase_customer(embedded, GONE, "test:someone")
            return states.get_many(keys)

    worker.states = ErasedMidBatch()  # type: ignore[assignment]  # the rest via __getattr__
    try:
        stats = worker.run(idle_exit_s=0.3)
    finally:
        worker.close()
    assert stats.events == 2  # both applied: the erasure came after the batch's check
    assert not embedded.features.read(GONE).known and embedded.features.read(KEPT).known
    assert embedded.registry.history(GONE) == []
    assert states.get_many([GONE]) == [None]
    folder = embedded.store_location.offline_dir / ACTIVITY_VIEW
    rows = pa.concat_tables(pq.read_table(p) for p in folder.glob("*.parquet"))
    # Hers are gone; his are there (two when a midnight has passed since his event).
    assert set(rows["customer_id"].to_pylist()) == {KEPT}
