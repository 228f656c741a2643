"""``nextbest stream``: the stream worker, with the RM alerter beside it."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from service.adapters.transport import TransportError
from service.entrypoints.cli.context import open_container

if TYPE_CHECKING:
    from service.bootstrap import Container
    from service.usecases.alert_runner import AlertRunner
    from service.usecases.worker import StreamWorker


@click.command()
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Stop after this many seconds without new events (default: run until stopped).",
)
@click.option(
    "--from-offset",
    type=click.IntRange(min=0),
    default=None,
    help="Replay: start every partition at this offset (0: the beginning).",
)
@click.option(
    "--from-time",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Replay: start at the first record at or after this time (UTC).",
)
@click.option(
    "--reset-state",
    is_flag=True,
    help="Forget the windows' state first (rebuild after a change of definitions).",
)
@click.option(
    "--alerts/--no-alerts",
    default=True,
    show_default=True,
    help="Rescore changed customers and raise RM alerts (turn off to replay history).",
)
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(min=0),
    multiple=True,
    help="Read only this partition of the local log (repeatable; default all): a worker "
    "process per partition (NEXTBEST_LOCAL_PARTITIONS) uses a machine's cores. On Kafka the "
    "consumer group assigns them.",
)
def stream(
    until_idle: float | None,
    from_offset: int | None,
    from_time: datetime | None,
    reset_state: bool,
    alerts: bool,
    partitions: tuple[int, ...],
) -> None:
    """Run the stream worker: events in, online and offline features out.

    SIGTERM or Ctrl-C finishes the batch, commits and leaves the consumer group. With
    NEXTBEST_WORKER_METRICS_PORT set, Prometheus metrics are served on that port.
    """
    _check_options(from_offset, from_time, reset_state, partitions)
    # Handlers first: a SIGTERM while the consumer is still connecting (a broker restarting,
    # a slow start) must stop the worker cleanly, not kill it mid-way.
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    container = open_container(writes_audit=alerts)
    # The alerter loads the models on first use, in its own thread: the worker starts at once.
    runner = container.alert_runner if alerts else None
    worker = _worker(container, runner, partitions)
    worker.stopping = stopping
    if reset_state:
        worker.reset_state()
    if from_offset is not None or from_time is not None:
        stamp = None if from_time is None else int(from_time.replace(tzinfo=UTC).timestamp() * 1000)
        worker.consumer.replay_from(from_offset, stamp)
    from service.entrypoints.heap import settle_stream_worker

    settle_stream_worker()  # what was loaded to wire the worker stays out of collections
    port = container.settings.worker_metrics_port
    if port:
        from prometheus_client import start_http_server

        start_http_server(port, addr=container.settings.api_host)
    refresher = None
    if runner is not None:
        from service.adapters.models import ModelRefresher

        # The served models follow the registry's alias, as the API's do: the scores kept
        # ready are the champion's, and a promotion rescores the worker's customers.
        refresher = ModelRefresher(
            lambda: container.models, container.settings.model_refresh_seconds
        )
        refresher.start()
        runner.start()
    try:
        stats = worker.run(idle_exit_s=until_idle)
    finally:
        if refresher is not None:
            refresher.stop()
        if runner is not None:
            runner.stop()  # what the last batches touched is still rescored
        worker.close()
    report: dict[str, Any] = stats.as_dict()
    if runner is not None:
        report["alerts"] = runner.stats()
    click.echo(json.dumps(report))


def _check_options(
    from_offset: int | None,
    from_time: datetime | None,
    reset_state: bool,
    partitions: tuple[int, ...],
) -> None:
    if from_offset is not None and from_time is not None:
        raise click.UsageError("choose --from-offset or --from-time, not both")
    if partitions and reset_state:
        raise click.UsageError("--reset-state forgets every partition's state: run it alone")


def _worker(
    container: Container, runner: AlertRunner | None, partitions: tuple[int, ...]
) -> StreamWorker:
    try:
        return container.worker(runner, partitions=partitions or None)
    except ValueError as error:  # not the log's partitions, or Kafka's to assign
        raise click.UsageError(str(error)) from error
    except TransportError as error:  # a local log with another partition count
        raise click.ClickException(str(error)) from error
