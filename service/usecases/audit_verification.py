"""``audit verify`` without manual steps: the chain held to every signed checkpoint the
configured sinks hold, and how far the log is covered by them.

A publication that is not one, or whose signature, origin or leaves do not hold, fails the
verification: a sink is written only by the log's own processes, so a bad document there is
tampering or a misconfiguration (a verifier key left out after a rotation), never noise. A sink
that cannot be read is reported, and the log is held to the others."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from consent.rules.chain import Checkpoint, Verification, timestamp
from consent.rules.checkpoints import Publication, SignedHead, open_publication
from consent.stores.audit.log import AuditLog
from consent.stores.audit.sinks import Found, Sink, SinkError
from consent.verify_audit import VerificationError, VerifierKey


@dataclass(frozen=True)
class Published:
    """The signed checkpoints found in the sinks."""

    heads: list[SignedHead] = field(default_factory=list)
    #: Publications read per sink.
    read: dict[str, int] = field(default_factory=dict)
    #: "where: why" for each document that is not a good publication.
    rejected: list[str] = field(default_factory=list)
    #: "sink: why" for each sink that could not be read.
    unreadable: list[str] = field(default_factory=list)


def gather(
    sinks: Iterable[Sink],
    keys: Sequence[VerifierKey],
    origin: str,
    given: Sequence[Found] = (),
) -> Published:
    """Every publication of ``origin`` the sinks hold, and those ``given`` (kept elsewhere,
    say by an auditor), opened with ``keys``."""
    found = Published()
    for where, document in given:
        found.rejected.extend(_open(where, document, keys, origin, found.heads))
    if given:
        found.read["given"] = len(given)
    for sink in sinks:
        count = 0
        try:
            for where, document in sink.read():
                count += 1
                found.rejected.extend(_open(where, document, keys, origin, found.heads))
        except SinkError as error:
            found.unreadable.append(f"{sink.name}: {error}")
        found.read[sink.name] = count
    return found


def _open(
    where: str,
    document: Publication | ValueError,
    keys: Sequence[VerifierKey],
    origin: str,
    heads: list[SignedHead],
) -> list[str]:
    if isinstance(document, ValueError):
        return [str(document)]
    if not keys:
        return [f"{where}: no verifier key is configured to check it"]
    try:
        heads.append(open_publication(document, keys, origin))
    except VerificationError as error:
        return [f"{where}: {error}"]
    return []


@dataclass(frozen=True)
class AuditReport:
    verification: Verification
    published: Published

    @property
    def ok(self) -> bool:
        return self.verification.ok and not self.published.rejected

    def as_dict(self) -> dict[str, Any]:
        v = self.verification
        covered_at = None if v.covered_at is None else timestamp(v.covered_at)
        return {
            "ok": self.ok,
            "records": v.records,
            "head_hash": v.head_hash,
            "first_bad_seq": v.first_bad_seq,
            "first_bad_decision": v.first_bad_decision,
            "problem": v.problem,
            "checkpoints": v.checkpoints,
            "signed_checkpoints": v.signed_checkpoints,
            "covered": v.covered,
            "covered_at": covered_at,
            "not_yet_covered": max(0, v.records - v.covered) if v.ok else None,
            "sinks": self.published.read,
            "rejected": self.published.rejected,
            "unreadable": self.published.unreadable,
        }


def verify_log(
    audit: AuditLog,
    sinks: Iterable[Sink],
    keys: Sequence[VerifierKey],
    origin: str,
    checkpoint: Checkpoint | None = None,
    given: Sequence[Found] = (),
) -> AuditReport:
    published = gather(sinks, keys, origin, given)
    return AuditReport(audit.verify(checkpoint, published.heads), published)
