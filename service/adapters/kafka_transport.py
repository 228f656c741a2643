"""Apache Kafka behind the transport's interface (``service.adapters.transport``), with
kafka-python: a producer whose sends are checked, a consumer in a group that commits only what
it is told to."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from service.adapters.transport import Headers, Record, TransportError

if TYPE_CHECKING:
    from kafka import TopicPartition

#: How long a Kafka producer waits for acknowledgement of a flush before the call fails.
KAFKA_FLUSH_TIMEOUT_S = 30.0
KAFKA_REQUEST_TIMEOUT_MS = 15_000
#: How long the broker may hold a fetch waiting for data: low, so features stay fresh.
KAFKA_FETCH_MAX_WAIT_MS = 100
KAFKA_SESSION_TIMEOUT_MS = 10_000
KAFKA_MAX_POLL_INTERVAL_MS = 60_000
#: A consumer left without partitions this long rejoins its group, then after twice as long
#: each time, up to ``REJOIN_MAX_S``: a group formed before the topic's metadata was known
#: assigns the member nothing until a metadata refresh minutes later, and kafka-python can
#: stall in a join. The ceiling keeps a surplus member (more workers than partitions) from
#: rebalancing its group often.
REJOIN_AFTER_S = 30.0
REJOIN_MAX_S = 600.0

log = logging.getLogger(__name__)


class KafkaProducerAdapter:
    """A kafka-python producer whose sends are checked: each thread's flush waits for the
    futures of its own records and raises ``TransportError`` if any failed.

    ``timeout_s`` bounds each wait on the broker: a send waiting for metadata, a flush waiting
    for acknowledgements, and a record's whole delivery (so a refused or timed-out record is not
    written later behind the caller's back, beyond the rare one already on the wire)."""

    def __init__(self, bootstrap_servers: str, timeout_s: float = KAFKA_FLUSH_TIMEOUT_S) -> None:
        from kafka import KafkaProducer

        self.timeout_s = timeout_s
        timeout_ms = int(timeout_s * 1000)
        request_timeout_ms = min(KAFKA_REQUEST_TIMEOUT_MS, timeout_ms - 100)
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=5,
            retries=5,
            request_timeout_ms=request_timeout_ms,
            delivery_timeout_ms=max(timeout_ms, request_timeout_ms + 5),
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
        self._local = threading.local()

    def _futures(self) -> list[Any]:
        futures: list[Any] | None = getattr(self._local, "futures", None)
        if futures is None:
            futures = self._local.futures = []
        return futures

    def send(self, topic: str, key: str | None, value: bytes | None, headers: Headers = ()) -> None:
        from kafka.errors import KafkaError

        try:
            future = self._producer.send(
                topic,
                key=None if key is None else key.encode(),
                value=value,
                headers=list(headers) or None,
            )
        except KafkaError as error:  # too large for the producer, no metadata in time
            # The caller takes none of this thread's unflushed records as written.
            self._local.futures = []
            raise TransportError(f"{type(error).__name__}: {error}") from error
        self._futures().append(future)

    def flush(self, timeout_s: float | None = None) -> None:
        from kafka.errors import KafkaError

        futures, self._local.futures = self._futures(), []
        try:
            self._producer.flush(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except KafkaError as error:
            raise TransportError(f"not acknowledged in time: {error}") from error
        for future in futures:
            if not future.is_done:
                raise TransportError("not acknowledged in time")
            if future.failed():
                refused = future.exception
                raise TransportError(f"refused: {type(refused).__name__}: {refused}")

    def partition_of(self, topic: str, key: str) -> int:
        """As the producer's default partitioner places a keyed record (murmur2 of the key, as
        the Java client): the topic's partitions are read from the broker's metadata."""
        from kafka.errors import KafkaError
        from kafka.partitioner.default import murmur2

        try:
            partitions: list[int] = sorted(self._producer.partitions_for(topic))
        except KafkaError as error:
            raise TransportError(f"no metadata for {topic}: {error}") from error
        index = int(murmur2(key.encode()) & 0x7FFFFFFF) % len(partitions)
        return partitions[index]

    def close(self) -> None:
        """Send what is buffered (up to ``timeout_s``) and close. A batch the broker refused
        or never acknowledged is not an error here: every caller's own flush has already failed
        for it (nothing was taken as written), and a shutdown must not fail on it."""
        from kafka.errors import KafkaError

        try:
            self._producer.close(timeout=self.timeout_s)
        except KafkaError as error:
            log.warning("closing the producer with records not acknowledged: %s", error)
            # kafka-python's close flushes first, and would raise again on the same batch:
            # stop its sender thread (a KafkaProducer always has one), which aborts what is left.
            self._producer._sender.force_close()


class KafkaConsumerAdapter:
    """A kafka-python consumer in a group, committing only what it is told to."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group: str,
        rejoin_after_s: float = REJOIN_AFTER_S,
    ) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        adapter = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
            # kafka-python 3 runs these on its IO thread, where nothing may block (no commit).
            # Nothing needs to: the worker processes each poll's records before it polls
            # again, so at a rebalance no batch is half done; what it has not committed yet
            # is redelivered to the new owner, whose state recognises it (see worker.py).
            def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
                pass

            def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
                adapter._assigned(list(assigned))

        self._replay: tuple[int | None, int | None] | None = None
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=KAFKA_FETCH_MAX_WAIT_MS,
            # A worker that dies without leaving (SIGKILL, lost host) gives up its partitions
            # after the session timeout; a batch never takes anywhere near the poll interval.
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=KAFKA_SESSION_TIMEOUT_MS // 3,
            max_poll_interval_ms=KAFKA_MAX_POLL_INTERVAL_MS,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS + 15_000,
        )
        self._topic = topic
        self._listener = Listener()
        self._rejoin_first_s = rejoin_after_s
        self._rejoin_after_s = rejoin_after_s
        self._unassigned_since: float | None = None
        self._subscribe()

    def _subscribe(self) -> None:
        # Fetch the topic's metadata before joining: a group formed without it assigns this
        # member nothing, and kafka-python's second join can then stall (seen with 3.0.12).
        self._consumer.partitions_for_topic(self._topic)
        self._consumer.subscribe([self._topic], listener=self._listener)
        self._unassigned_since = time.monotonic()

    def _watch_assignment(self) -> None:
        """Rejoin the group when this member has had no partition for too long."""
        if self._consumer.assignment():
            self._unassigned_since = None
            self._rejoin_after_s = self._rejoin_first_s
            return
        now = time.monotonic()
        if self._unassigned_since is None:
            self._unassigned_since = now
        elif now - self._unassigned_since >= self._rejoin_after_s:
            log.warning(
                "no partition of %s assigned for %.0f s: rejoining the group",
                self._topic,
                now - self._unassigned_since,
            )
            self._rejoin_after_s = min(2 * self._rejoin_after_s, REJOIN_MAX_S)
            self._consumer.unsubscribe()
            self._subscribe()

    def _assigned(self, partitions: list[TopicPartition]) -> None:
        if self._replay is None or not partitions:
            return
        offset, timestamp_ms = self._replay
        self._replay = None
        if timestamp_ms is not None:
            found = self._consumer.offsets_for_times(dict.fromkeys(partitions, timestamp_ms))
            ends = self._consumer.end_offsets(partitions)
            for tp in partitions:
                hit = found.get(tp)
                self._consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        elif offset == 0:
            self._consumer.seek_to_beginning(*partitions)
        elif offset is not None:
            for tp in partitions:
                self._consumer.seek(tp, offset)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        self._watch_assignment()
        return [
            Record(m.topic, m.partition, m.offset, m.key, m.value, tuple(m.headers or ()))
            for messages in batches.values()
            for m in messages
        ]

    def commit(self, records: Iterable[Record]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        upto: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            upto[tp] = max(upto.get(tp, -1), r.offset)
        # Partitions lost in a rebalance are not ours to commit: their new owner gets the
        # uncommitted records again, and they change nothing there.
        owned = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in upto.items() if tp in owned}
        if offsets:
            self._consumer.commit(offsets)

    def replay_from(self, offset: int | None = None, timestamp_ms: int | None = None) -> None:
        self._replay = (offset, timestamp_ms)

    def lag(self) -> dict[int, int]:
        partitions = list(self._consumer.assignment())
        if not partitions:
            return {}
        ends = self._consumer.end_offsets(partitions)
        return {tp.partition: max(ends[tp] - self._consumer.position(tp), 0) for tp in partitions}

    def partitions(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment())

    def close(self) -> None:
        # Leaves the group at once, so its partitions move to the other workers without waiting
        # for the session to time out.
        self._consumer.close(autocommit=False)
