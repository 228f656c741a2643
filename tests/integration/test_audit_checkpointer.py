"""When the audit log's checkpoints are published, from where a new process continues, and what
happens when a sink fails: on the embedded SQLite store, and the Kafka sink on a real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from consent.rules.checkpoints import MAX_LEAVES, Publication, open_publication
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.log import AuditLog
from consent.stores.audit.sinks import FolderSink, Sink, SinkError
from consent.stores.store import connect
from service.adapters.checkpoint_topic import CheckpointTopic
from service.adapters.kafka_transport import KafkaProducerAdapter
from tests.integration.test_audit import record
from tests.integration.test_audit_attacks import KEY, ORIGIN, SIGNER, covered


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = connect(f"sqlite:///{tmp_path / 'ops.db'}")
    yield engine
    engine.dispose()


def checkpointed(
    engine: Engine, sinks: list[Sink], every_records: int = 1000, every_seconds: float = 3600
) -> tuple[AuditLog, Checkpointer]:
    checkpointer = Checkpointer(
        engine, lambda: SIGNER, CheckpointPolicy(ORIGIN, every_records, every_seconds), sinks
    )
    return AuditLog(engine, checkpointer=checkpointer), checkpointer


def publications(folder: Path) -> list[Publication]:
    return [p for _, p in FolderSink(folder).read() if isinstance(p, Publication)]


def test_a_checkpoint_is_published_every_n_records_without_waiting(
    engine: Engine, tmp_path: Path
) -> None:
    log, checkpointer = checkpointed(engine, [FolderSink(tmp_path)], every_records=5)
    for _ in range(5):
        log.append(record())
    covered(checkpointer, 5)
    for _ in range(2):
        log.append(record())
    time.sleep(0.3)
    assert checkpointer.stats.size == 5  # two records wait for the interval or the shutdown
    log.close()
    assert checkpointer.stats.size == 7
    assert [p.size for p in publications(tmp_path)] == [5, 7]


def test_a_checkpoint_is_published_after_the_interval(engine: Engine, tmp_path: Path) -> None:
    log, checkpointer = checkpointed(engine, [FolderSink(tmp_path)], every_seconds=0.1)
    log.append(record())
    covered(checkpointer, 1)
    log.append(record())
    covered(checkpointer, 2)
    log.close()


def test_a_process_that_only_reads_publishes_nothing(engine: Engine, tmp_path: Path) -> None:
    writer, _ = checkpointed(engine, [FolderSink(tmp_path)])
    writer.append(record())
    writer.close()
    reader, checkpointer = checkpointed(engine, [FolderSink(tmp_path / "reader")])
    assert reader.verify().ok
    reader.close()
    assert checkpointer.stats.published == 0 and not (tmp_path / "reader").exists()


def test_a_new_process_continues_from_the_newest_publication(
    engine: Engine, tmp_path: Path
) -> None:
    first, _ = checkpointed(engine, [FolderSink(tmp_path)])
    for _ in range(3):
        first.append(record())
    first.close()
    # Another process, which wrote records nobody published (it was killed).
    crashed = AuditLog(connect(engine.url.render_as_string(hide_password=False)))
    crashed.append(record())
    crashed.engine.dispose()
    second, _ = checkpointed(engine, [FolderSink(tmp_path)])
    second.append(record())
    second.close()
    latest = publications(tmp_path)[-1]
    assert (latest.leaves_from, latest.size) == (3, 5)  # the crashed process's record too
    head = open_publication(latest, [KEY], ORIGIN)
    assert head.frontier.size == 5


def test_a_long_backlog_is_published_in_pieces_a_kafka_record_can_hold(
    engine: Engine, tmp_path: Path
) -> None:
    AuditLog(engine).append_many([record(f"C{i}") for i in range(MAX_LEAVES + 10)])
    log, _ = checkpointed(engine, [FolderSink(tmp_path)])
    log.append(record())
    log.close()
    sizes = [(p.leaves_from, p.size) for p in publications(tmp_path)]
    assert sizes == [(0, MAX_LEAVES), (MAX_LEAVES, MAX_LEAVES + 11)]
    assert all(len(p.to_json()) < 1_000_000 for p in publications(tmp_path))


def test_records_written_before_leaf_hashes_are_covered_from_their_rows(
    engine: Engine, tmp_path: Path
) -> None:
    old = AuditLog(engine)
    for _ in range(3):
        old.append(record())
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE audit_log SET leaf_hash = NULL WHERE seq < 3")
    log, _ = checkpointed(engine, [FolderSink(tmp_path)])
    log.append(record())
    log.close()
    heads = [open_publication(p, [KEY], ORIGIN) for p in publications(tmp_path)]
    result = log.verify(heads=heads)
    assert result.ok and result.covered == 4


def test_one_sink_failing_does_not_stop_the_others(engine: Engine, tmp_path: Path) -> None:
    broken = tmp_path / "not-a-folder"
    broken.write_text("a file where the folder should be")
    log, checkpointer = checkpointed(engine, [FolderSink(broken), FolderSink(tmp_path / "ok")])
    log.append(record())
    assert [p.size for p in checkpointer.publish()] == [1]
    assert checkpointer.stats.failures == 1 and publications(tmp_path / "ok")[0].size == 1
    log.close()


def test_when_no_sink_takes_it_the_records_wait_for_the_next_turn(
    engine: Engine, tmp_path: Path
) -> None:
    target = tmp_path / "later"
    target.write_text("a file where the folder should be")
    log, checkpointer = checkpointed(engine, [FolderSink(target)])
    log.append(record())
    with pytest.raises(SinkError):
        checkpointer.publish()
    target.unlink()  # the sink is back
    log.append(record())
    log.close()
    assert [(p.leaves_from, p.size) for p in publications(target)] == [(0, 2)]


# --- Kafka ---


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[CheckpointTopic]:
    sink = CheckpointTopic(
        kafka_bootstrap,
        f"test.audit.checkpoints.{uuid.uuid4().hex[:8]}",
        lambda: KafkaProducerAdapter(kafka_bootstrap, 10.0),
    )
    yield sink
    sink.close()


@pytest.mark.kafka
def test_checkpoints_on_a_kafka_topic_are_kept_forever_and_read_back(
    engine: Engine, tmp_path: Path, topic: CheckpointTopic
) -> None:
    log, _ = checkpointed(engine, [topic], every_records=2)
    for _ in range(5):
        log.append(record())
    log.close()
    found = [p for _, p in topic.read()]
    assert all(isinstance(p, Publication) for p in found) and found[-1].size == 5  # type: ignore[union-attr]
    heads = [open_publication(p, [KEY], ORIGIN) for p in found]  # type: ignore[arg-type]
    assert log.verify(heads=heads).covered == 5
    assert topic.latest()[0].size == 5
    # A second process continues from the topic's newest publication.
    again, _ = checkpointed(engine, [topic])
    again.append(record())
    again.close()
    assert topic.latest()[0].leaves_from == 5

    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=topic.bootstrap_servers)
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic.topic)], config_filter="all"
        )
    finally:
        admin.close()
    assert described["topic"][topic.topic]["retention.ms"]["value"] == "-1"


@pytest.mark.kafka
def test_a_topic_that_deletes_old_records_is_refused(engine: Engine, kafka_bootstrap: str) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"test.audit.short.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(name, 1, -1, topic_configs={"retention.ms": "60000"})])
    finally:
        admin.close()
    sink = CheckpointTopic(kafka_bootstrap, name, lambda: KafkaProducerAdapter(kafka_bootstrap))
    log, checkpointer = checkpointed(engine, [sink])
    log.append(record())
    with pytest.raises(SinkError, match=r"retention\.ms=-1"):
        checkpointer.publish()
    log.close()
    sink.close()
    assert list(sink.read()) == []  # nothing was published to it


class Refusing(FolderSink):
    """A sink that never takes a publication, counting the attempts."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.attempts = 0

    def publish(self, publication: Publication) -> None:
        self.attempts += 1
        raise SinkError("refused")


def test_a_failing_sink_is_retried_an_interval_later_not_in_a_loop(
    engine: Engine, tmp_path: Path
) -> None:
    """Records due for a checkpoint while no sink takes one: the thread waits an interval
    between attempts instead of spinning on the database and the sink."""
    sink = Refusing(tmp_path)
    log, checkpointer = checkpointed(engine, [sink], every_records=1, every_seconds=0.5)
    for _ in range(3):
        log.append(record())
    time.sleep(1.2)
    assert 1 <= sink.attempts <= 4  # about one per interval; a busy loop makes thousands
    assert checkpointer.stats.size == 0 and checkpointer.stats.failures == sink.attempts
    log.close()


class Unreadable(FolderSink):
    """A sink that takes publications but cannot be read back until ``readable`` is set."""

    readable = False

    def latest(self) -> list[Publication]:
        if not self.readable:
            raise SinkError("not answering")
        return super().latest()


def test_a_writer_that_cannot_read_where_the_tree_ends_signs_nothing(
    engine: Engine, tmp_path: Path
) -> None:
    """With no publication readable, an empty tree is assumed only if every sink answered:
    otherwise a rewritten log could be signed from scratch."""
    first, _ = checkpointed(engine, [FolderSink(tmp_path)])
    first.append(record())
    first.close()
    sink = Unreadable(tmp_path)
    later, checkpointer = checkpointed(engine, [sink])
    later.append(record())
    with pytest.raises(SinkError, match="unreadable"):
        checkpointer.publish()
    sink.readable = True
    (made,) = checkpointer.publish()
    assert (made.leaves_from, made.size) == (1, 2)  # continued from the published tree
    later.close()
