"""The composition root's stream parts (``Container`` has them): the event transport, the
stream's state, timers and marks, and the stream worker wired from them."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from service.adapters.kafka_transport import (
    KAFKA_FLUSH_TIMEOUT_S,
    KafkaConsumerAdapter,
    KafkaProducerAdapter,
)
from service.adapters.local_log import LocalLog
from service.adapters.transport import DLQ_TOPIC, EVENTS_TOPIC, Consumer, Producer
from service.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sqlalchemy import Engine

    from consent.stores.erasure import ErasureRegister
    from consent.stores.registry import ConsentRegistry
    from feature_repo.store import StoreLocation
    from service.adapters.features.feast_features import FeastFeatures
    from service.adapters.state import StateStore
    from service.adapters.stream_stores import StreamStores
    from service.adapters.timers import TimerIndex, WatermarkStore
    from service.usecases.alert_runner import AlertRunner
    from service.usecases.worker import StreamWorker


class StreamParts:
    """Mixed into ``Container``, which provides what the worker also reads from."""

    settings: Settings
    if TYPE_CHECKING:

        @property
        def engine(self) -> Engine: ...
        @property
        def registry(self) -> ConsentRegistry: ...
        @property
        def erasures(self) -> ErasureRegister: ...
        @property
        def store_location(self) -> StoreLocation: ...
        @property
        def features(self) -> FeastFeatures: ...

    @cached_property
    def local_log(self) -> LocalLog:
        return LocalLog(self.settings.home / "events", self.settings.local_partitions)

    def producer(self, timeout_s: float = KAFKA_FLUSH_TIMEOUT_S) -> Producer:
        """A producer whose waits on the broker are bounded by ``timeout_s``."""
        if self.settings.event_transport == "kafka":
            return KafkaProducerAdapter(self.settings.kafka_bootstrap_servers, timeout_s)
        return self.local_log.producer()

    def consumer(
        self, topic: str = EVENTS_TOPIC, partitions: Sequence[int] | None = None
    ) -> Consumer:
        """A reader of ``topic`` in the stream's consumer group. On Kafka the group balances
        the partitions among its members; the local log's are assigned: ``partitions`` (all of
        them by default)."""
        name = self.settings.topic(topic)
        if self.settings.event_transport == "kafka":
            if partitions is not None:
                raise ValueError("Kafka's consumer group assigns the partitions itself")
            return KafkaConsumerAdapter(
                self.settings.kafka_bootstrap_servers, name, self.settings.consumer_group
            )
        return self.local_log.consumer(name, self.settings.consumer_group, partitions)

    # The stream's state, timers and marks, in the online store's kind of store.
    def state_store(self) -> StateStore:
        return self._stream_stores.state()

    def timer_index(self) -> TimerIndex:
        return self._stream_stores.timers()

    def watermark_store(self) -> WatermarkStore:
        return self._stream_stores.watermarks()

    def dead_letter_marks(self) -> StateStore:
        return self._stream_stores.dead_letter_marks()

    def alert_memory(self) -> StateStore:
        return self._stream_stores.alert_memory()

    @cached_property
    def _stream_stores(self) -> StreamStores:
        from service.adapters.stream_stores import StreamStores

        return StreamStores(self.settings)

    def worker(
        self,
        alerts: AlertRunner | None = None,
        clock: Callable[[], int] | None = None,
        partitions: Sequence[int] | None = None,
    ) -> StreamWorker:
        """The stream worker; with ``alerts``, it is told which customers each batch changed.
        ``clock``: now in epoch µs, for its watermarks (the wall clock unless simulated).
        ``partitions``: the local log's partitions it reads (all by default)."""
        from consent.stores.outcomes import OutcomeEvents
        from service.adapters.features.offline import OfflineBuffer
        from service.adapters.metrics import stream_metrics
        from service.usecases.stream_timers import StreamTimers, wall_clock_us
        from service.usecases.worker import StreamWorker

        worker = StreamWorker(
            consumer=self.consumer(partitions=partitions),
            dlq=self.producer(),
            dlq_topic=self.settings.topic(DLQ_TOPIC),
            states=self.state_store(),
            online=self.features.online,
            offline=OfflineBuffer(self.store_location),
            lateness_us=self.settings.allowed_lateness_us,
            metrics=stream_metrics(),
            consents=self.registry,
            erasures=self.erasures,
            on_features=alerts.touched if alerts is not None else None,
            time_bounds=self.settings.time_bounds,
            dead_marks=self.dead_letter_marks(),
            timers=StreamTimers(
                self.timer_index(), clock or wall_clock_us, sink=self.watermark_store()
            ),
            outcomes=OutcomeEvents(self.engine),
        )
        if alerts is not None:
            from service.usecases.score_keeping import Rescoring

            alerter = alerts.alerter
            # Only once the alerter has its models: a registry not answering is its to report.
            alerts.rescoring = Rescoring(
                lambda: alerter.keeper if alerter.ready else None,
                self.timer_index().customers,
                worker.consumer.partitions,
            )
        return worker
