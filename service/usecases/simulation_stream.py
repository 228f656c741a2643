"""The simulation's stream, over as many processes as the local log has partitions.

A bank scales its stream out by partition (a Kafka consumer group's members, or a worker process
per partition of the local log): each customer's events stay in one partition, so each worker
keeps its own customers' windows and timers. The simulation does the same on one machine. The
simulating process drains partition 0 itself; a worker process per other partition drains its
own, started once and told the simulated clock at each step. A step ends when every partition
has processed what was published and fired every timer due by the clock, so what the decisions
read next is what one worker would have written: the same events reach each customer in the
same order, whichever process applies them.

Between steps the other partitions' processes would sit idle while the simulating process ranks
a slot's opportunities, so they take a share of that too (``see``): each reads its share's gate
inputs and features and scores them with the same model versions, and the simulating process
puts the shares back in order. Only the decisions themselves stay in one process: the contact
budget and the audit log's order are the simulation's, one decision after another.
"""

from __future__ import annotations

import logging
import multiprocessing
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.bootstrap import Container
    from service.settings import Settings
    from service.usecases.decision_messages import Seen

log = logging.getLogger(__name__)


class StreamMemberFailed(RuntimeError):
    """A partition's worker process failed or went away; the step did not complete."""


@dataclass(frozen=True)
class Elsewhere:
    """An opportunity another process read and scored (``SimulatedStream.see``): its scores,
    which is all a policy ranks by; the rest stays there until fetched."""

    member: int
    position: int
    scores: dict[str, float]


class SimulatedStream:
    """The stream worker of every partition, drained together at one simulated clock."""

    def __init__(self, container: Container, clock: Callable[[], int]) -> None:
        settings = container.settings
        partitions = settings.local_partitions if settings.event_transport == "local" else 1
        self.container = container
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
            done += int(_answer(process, connection))
        return done

    def see(self, pool: Sequence[tuple[str, str]], at: datetime) -> list[Seen | Elsewhere | None]:
        """``seen_in_bulk`` of ``pool`` at ``at``, a share in each process, in ``pool``'s order:
        this process's share as ``Seen``, the others' as ``Elsewhere`` (their scores, to rank
        by; ``fetch`` brings the rest of those that are decided). The other processes score
        with models of the same versions as this one's; a share scored otherwise is refused."""
        from service.usecases.simulation_policies import seen_in_bulk

        share = -(-len(pool) // self.partitions)
        for i, (process, connection) in enumerate(self._members, start=1):
            _tell(process, connection, ("see", (list(pool[i * share : (i + 1) * share]), at)))
        seen: list[Seen | Elsewhere | None] = list(seen_in_bulk(self.container, pool[:share], at))
        versions = self.container.models.versions()
        answers = [_answer(process, connection) for process, connection in self._members]
        for member, (scores, their_versions) in enumerate(answers):
            if their_versions != versions:
                name = self._members[member][0].name
                raise StreamMemberFailed(
                    f"{name} scored with models {their_versions}, not {versions}"
                )
            seen += [
                None if s is None else Elsewhere(member, position, s)
                for position, s in enumerate(scores)
            ]
        return seen

    def fetch(self, seen: Sequence[Seen | Elsewhere | None]) -> list[Seen | None]:
        """``seen`` with each ``Elsewhere`` replaced by its ``Seen`` from the process that read
        it at the last ``see``, scored by this process's models (of the same versions)."""
        wanted: dict[int, list[int]] = {}
        for s in seen:
            if isinstance(s, Elsewhere):
                wanted.setdefault(s.member, []).append(s.position)
        for member, positions in wanted.items():
            _tell(*self._members[member], ("fetch", positions))
        models = self.container.models.snapshot()
        fetched: dict[tuple[int, int], Seen] = {}
        for member, positions in wanted.items():
            theirs = _answer(*self._members[member])
            for position, s in zip(positions, theirs, strict=True):
                fetched[member, position] = replace(s, scored=replace(s.scored, models=models))
        return [fetched[s.member, s.position] if isinstance(s, Elsewhere) else s for s in seen]

    def refresh_models(self) -> None:
        """The other processes load the models the alias points at now, as this one does after
        a retraining."""
        for process, connection in self._members:
            _tell(process, connection, ("refresh", None))
        for process, connection in self._members:
            _answer(process, connection)

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


def _answer(process: Any, connection: Connection) -> Any:
    try:
        kind, value = connection.recv()
    except (EOFError, OSError) as error:
        gone = f"{process.name} went away (exit code {process.exitcode})"
        raise StreamMemberFailed(gone) from error
    if kind == "failed":
        raise StreamMemberFailed(f"{process.name} failed:\n{value}")
    return value


def _member(settings: Settings, partition: int, connection: Connection) -> None:
    """A partition's worker process: drain at the clock it is told, see its share of a slot's
    opportunities, load the models anew, until told to close."""
    from service.bootstrap import Container
    from service.usecases.simulation_policies import seen_in_bulk

    container = Container(settings)
    now = [0]
    worker = container.worker(clock=lambda: now[0], partitions=[partition])
    seen: list[Seen | None] = []  # the opportunities read at the last "see"
    try:
        while True:
            command, argument = connection.recv()
            if command == "close":
                connection.send(("closed", 0))
                return
            if command == "see":
                pool, at = argument
                # The watermark as the simulating process read it after this step, not as a
                # background refresh last read it: features are fresh or stale alike in both.
                container.features.pipeline.refresh()  # type: ignore[union-attr]
                seen = seen_in_bulk(container, pool, at)
                scores = [None if s is None else s.scored.scores for s in seen]
                connection.send(("seen", (scores, container.models.versions())))
            elif command == "fetch":
                # The models stay here: the simulating process has its own, of these versions.
                connection.send(("fetched", [_without_models(seen[p]) for p in argument]))
            elif command == "refresh":
                container.models.refresh()
                connection.send(("refreshed", 0))
            else:
                now[0] = argument
                connection.send(("drained", worker.drain()))
    except (EOFError, KeyboardInterrupt):
        return  # the simulating process went away
    except BaseException:
        connection.send(("failed", traceback.format_exc()))
        raise
    finally:
        worker.close()
        container.close()


def _without_models(seen: Seen | None) -> Seen | None:
    return None if seen is None else replace(seen, scored=replace(seen.scored, models={}))
