"""The simulation's stream, over as many processes as the local log has partitions.

A bank scales its stream out by partition (a Kafka consumer group's members, or a worker process
per partition of the local log): each customer's events stay in one partition, so each worker
keeps its own customers' windows and timers. The simulation does the same on one machine. The
simulating process drains partition 0 itself; a worker process per other partition drains its
own, started once and told the simulated clock at each step. A step ends when every partition
has processed what was published and fired every timer due by the clock, so what the decisions
read next is what one worker would have written: the same events reach each customer in the
same order, whichever process applies them.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.bootstrap import Container
    from service.settings import Settings

log = logging.getLogger(__name__)


class StreamMemberFailed(RuntimeError):
    """A partition's worker process failed or went away; the step did not complete."""


class SimulatedStream:
    """The stream worker of every partition, drained together at one simulated clock."""

    def __init__(self, container: Container, clock: Callable[[], int]) -> None:
        settings = container.settings
        partitions = settings.local_partitions if settings.event_transport == "local" else 1
        self.worker = container.worker(clock=clock, partitions=[0] if partitions > 1 else None)
        self.clock = clock
        self._members: list[tuple[Any, Connection]] = []
        # Spawned, not forked: the simulating process holds threads (the audit log's
        # checkpointer, database pools) that a fork would copy mid-way.
        context = multiprocessing.get_context("spawn")
        try:
            for partition in range(1, partitions):
                mine, theirs = context.Pipe()
                process = context.Process(
                    target=_member,
                    args=(settings, partition, theirs),
                    name=f"nextbest-simulated-stream-{partition}",
                    daemon=True,
                )
                process.start()
                theirs.close()
                self._members.append((process, mine))
        except BaseException:
            self.close()
            raise

    @property
    def partitions(self) -> int:
        return 1 + len(self._members)

    def drain(self) -> int:
        """Every partition processes what is on the log and fires the timers due by the clock;
        returns how many records they processed in all."""
        now = self.clock()
        for process, connection in self._members:
            _tell(process, connection, ("drain", now))
        done = self.worker.drain()
        for process, connection in self._members:
            done += _answer(process, connection)
        return done

    def close(self) -> None:
        """Stop the other partitions' workers (each closes its own) and close this one."""
        for process, connection in self._members:
            try:
                _tell(process, connection, ("close", None))
                _answer(process, connection)
            except StreamMemberFailed as failed:
                log.warning("%s", failed)
            finally:
                connection.close()
                process.join(timeout=30)
                if process.is_alive():
                    process.kill()
        self._members = []
        self.worker.close()


def _tell(process: Any, connection: Connection, message: tuple[str, Any]) -> None:
    try:
        connection.send(message)
    except OSError as error:  # a broken pipe: it is gone
        gone = f"{process.name} went away (exit code {process.exitcode})"
        raise StreamMemberFailed(gone) from error


def _answer(process: Any, connection: Connection) -> int:
    try:
        kind, value = connection.recv()
    except (EOFError, OSError) as error:
        gone = f"{process.name} went away (exit code {process.exitcode})"
        raise StreamMemberFailed(gone) from error
    if kind == "failed":
        raise StreamMemberFailed(f"{process.name} failed:\n{value}")
    return int(value)


def _member(settings: Settings, partition: int, connection: Connection) -> None:
    """A partition's worker process: drain at the clock it is told, until told to close."""
    from service.bootstrap import Container

    container = Container(settings)
    now = [0]
    worker = container.worker(clock=lambda: now[0], partitions=[partition])
    try:
        while True:
            command, moment = connection.recv()
            if command == "close":
                connection.send(("closed", 0))
                return
            now[0] = moment
            connection.send(("drained", worker.drain()))
    except (EOFError, KeyboardInterrupt):
        return  # the simulating process went away
    except BaseException:
        connection.send(("failed", traceback.format_exc()))
        raise
    finally:
        worker.close()
        container.close()
