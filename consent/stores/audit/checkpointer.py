"""Signed checkpoints of the audit log, published outside the operational store as records are
written: every ``every_records`` records this process wrote or ``every_seconds`` after the first
of them, whichever comes first, and once more when the process closes its log (a graceful
shutdown of the API, the worker, a command that decided).

Each writing process runs one. It signs the tree of every record in the log up to the head it
reads, not only its own, so a process that stopped without closing is covered by the next
checkpoint of any other. It continues the tree from the newest publication its sinks hold
(whose signature must hold), reading from the database only the leaves after it: a new process
never signs a tree that does not extend what was published before, so a log rewritten below a
published checkpoint is never signed again, and verification names it.

A record is protected from the moment a checkpoint that covers it is published; the interval
bounds how long a record written just before a crash waits for that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from sqlalchemy import Engine

from consent.rules.checkpoints import (
    MAX_LEAVES,
    Publication,
    SignedHead,
    open_publication,
    publish,
)
from consent.rules.merkle import Frontier
from consent.rules.signed_note import Signer
from consent.stores.audit import reads
from consent.stores.audit.sinks import Sink, SinkError
from consent.verify_audit import VerificationError, VerifierKey

log = logging.getLogger(__name__)

#: How long ``close`` waits for the publishing thread to finish what it is doing.
CLOSE_TIMEOUT_SECONDS = 30.0


class CheckpointRefused(RuntimeError):
    """The log in the database does not extend the newest published checkpoint (it has fewer
    records, or a gap): nothing is signed until someone looks."""


@dataclass(frozen=True)
class CheckpointPolicy:
    origin: str
    every_records: int = 1000
    every_seconds: float = 10.0


@dataclass(frozen=True)
class CheckpointerStats:
    published: int = 0  # publications taken by at least one sink
    failures: int = 0  # publications a sink did not take
    size: int = 0  # records covered by this process's newest publication
    refused: str | None = None  # why the last attempt signed nothing, if it was refused


class Checkpointer:
    """Publishes signed checkpoints for one writing process (see the module's docstring)."""

    def __init__(
        self,
        engine: Engine,
        signer: Callable[[], Signer],
        policy: CheckpointPolicy,
        sinks: Sequence[Sink],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not sinks:
            raise ValueError("a checkpointer needs at least one sink")
        self.engine = engine
        #: The signing key, asked for when first needed: a process that only reads the log
        #: never needs it (the entrypoints that write ask for it at start, to fail early).
        self.signer = signer
        self.policy = policy
        self.sinks = list(sinks)
        self.clock = clock
        self._frontier: Frontier | None = None  # read from the sinks on first use
        self._publish_lock = threading.Lock()  # one publication at a time
        self._wake = threading.Condition()
        self._pending = 0  # records this process wrote since its last publication
        self._first_pending_at: float | None = None
        self._retry_at: float | None = None  # after a failed publication
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = CheckpointerStats()
        #: Told of each publication once a sink took it (the proofs' list of checkpoints).
        self.listeners: list[Callable[[Publication], None]] = []

    @property
    def stats(self) -> CheckpointerStats:
        return self._stats

    # --- called by the writers ---

    def written(self, records: int) -> None:
        """``records`` were committed by this process: publish when the policy says."""
        if records <= 0:
            return
        with self._wake:
            idle = self._first_pending_at is None
            if idle:
                self._first_pending_at = time.monotonic()
            self._pending += records
            if self._thread is None:  # first write, or the first since ``close``
                self._closed = False
                self._thread = threading.Thread(
                    target=self._run, name="audit-checkpointer", daemon=True
                )
                self._thread.start()
            if idle or self._pending >= self.policy.every_records:
                self._wake.notify()  # a new deadline, or due now

    def _due_in(self) -> float | None:
        """Seconds until a publication is due (0: now), None with nothing pending. After a
        failure, not before a whole interval has passed, however many records wait."""
        if self._first_pending_at is None:
            return None
        now = time.monotonic()
        retry_in = 0.0 if self._retry_at is None else max(0.0, self._retry_at - now)
        if self._pending >= self.policy.every_records:
            return retry_in
        waited = now - self._first_pending_at
        return max(retry_in, self.policy.every_seconds - waited)

    def _run(self) -> None:
        while True:
            with self._wake:
                due = self._due_in()
                while not self._closed and (due is None or due > 0):
                    self._wake.wait(due)
                    due = self._due_in()
                if self._closed:
                    return
            try:
                self.publish()
                with self._wake:
                    self._retry_at = None
            except Exception:  # a failure is logged and retried an interval later
                log.exception("audit checkpoint not published")
                with self._wake:
                    self._retry_at = time.monotonic() + self.policy.every_seconds

    # --- publishing ---

    def publish(self) -> list[Publication]:
        """Sign and publish the log up to its head now; the publications made (none if every
        record is covered already). Raises ``CheckpointRefused`` if the log does not extend the
        newest published checkpoint, ``SinkError`` if no sink took a publication."""
        with self._publish_lock:
            with self._wake:
                taken = self._pending
                self._first_pending_at = None if taken == 0 else self._first_pending_at
            signer = self.signer()
            frontier = self._frontier or self._start(signer)
            made = []
            for leaves in self._new_leaves(frontier.size):
                publication, extended = publish(
                    signer, self.policy.origin, frontier, leaves, self.clock()
                )
                self._send(publication)
                for listener in self.listeners:
                    listener(publication)
                frontier = self._frontier = extended
                made.append(publication)
                self._stats = CheckpointerStats(
                    self._stats.published + 1, self._stats.failures, frontier.size
                )
            with self._wake:
                self._pending = max(0, self._pending - taken)
                self._first_pending_at = (
                    None if self._pending == 0 else self._first_pending_at or time.monotonic()
                )
            return made

    def _start(self, signer: Signer) -> Frontier:
        """The tree as the newest publication whose signature holds left it (empty if none)."""
        key = VerifierKey.parse(signer.verifier_key())
        newest: SignedHead | None = None
        unreadable = []
        for sink in self.sinks:
            try:
                candidates = sink.latest()
            except SinkError as error:
                log.warning("audit checkpoints: %s could not be read: %s", sink.name, error)
                unreadable.append(sink.name)
                continue
            for publication in candidates:
                try:
                    head = open_publication(publication, [key], self.policy.origin)
                except VerificationError as error:
                    log.warning("audit checkpoints: %s holds one not ours: %s", sink.name, error)
                    continue
                if newest is None or head.size > newest.size:
                    newest = head
        if newest is None and unreadable:
            # Starting from an empty tree could sign a log rewritten below a checkpoint that
            # sink holds: asked again at the next turn.
            raise SinkError(
                f"where the published tree ends is unknown: {', '.join(unreadable)} unreadable"
            )
        self._frontier = Frontier() if newest is None else newest.frontier
        return self._frontier

    def _new_leaves(self, after: int) -> list[list[bytes]]:
        """The leaves of the records after ``after`` up to the head, in publications' worth."""
        head = reads.head_seq(self.engine)
        if head < after:
            self._refuse(
                f"the log ends at record {head}, but a checkpoint of {after} records was "
                "published: its tail was cut off"
            )
        chunks = []
        for start in range(after, head, MAX_LEAVES):
            last = min(head, start + MAX_LEAVES)
            try:
                leaves = reads.leaf_hashes(self.engine, start, last)
            except reads.MissingRecord as missing:
                self._refuse(str(missing))
            if len(leaves) != last - start:
                self._refuse(f"records {start + len(leaves) + 1} to {last} are missing")
            chunks.append(leaves)
        return chunks

    def _refuse(self, why: str) -> NoReturn:
        self._stats = CheckpointerStats(
            self._stats.published, self._stats.failures, self._stats.size, why
        )
        log.error("audit checkpoint refused: %s", why)
        raise CheckpointRefused(why)

    def _send(self, publication: Publication) -> None:
        """Give ``publication`` to every sink; at least one must take it."""
        taken, problems = 0, []
        for sink in self.sinks:
            try:
                sink.publish(publication)
                taken += 1
            except SinkError as error:
                self._stats = CheckpointerStats(
                    self._stats.published, self._stats.failures + 1, self._stats.size
                )
                problems.append(f"{sink.name}: {error}")
                log.error("audit checkpoint of %d records: %s", publication.size, error)
        if not taken:
            raise SinkError(
                f"no sink took the checkpoint of {publication.size} records ({'; '.join(problems)})"
            )

    # --- shutting down ---

    def close(self) -> None:
        """Stop the thread and publish what this process wrote since its last publication (a
        later write starts the thread again). Never raises: a shutdown must finish (what was
        not published is logged)."""
        with self._wake:
            thread, self._thread = self._thread, None
            self._closed = True
            self._wake.notify_all()
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_SECONDS)
        with self._wake:
            pending = self._pending
        if pending:
            try:
                self.publish()
            except Exception:
                log.exception("audit checkpoint at shutdown not published")
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("audit checkpoints: closing %s", sink.name)
