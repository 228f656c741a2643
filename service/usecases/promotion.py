"""Promoting a model version to the alias the APIs serve, with its artifact's digest recorded in
the audit log, and the check a serving process makes before it serves a version.

Anyone who can reach the MLflow registry can register a version or move an alias; only
NextBest's promotion writes a promotion record to the audit log, which is append-only and
covered by signed checkpoints. A serving process serves a version only if the audit log holds a
promotion of it to that alias whose digest is the digest of the files it downloaded; otherwise
it refuses the version (the need's actions are withheld, ``NO_MODEL``) and records why.

The digest promoted is the one taken at registration (the version's ``artifact_digest`` tag):
an artifact changed between registration and promotion is refused at promotion. A version
registered before digests were kept has no tag; its digest is taken when it is first promoted.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mlflow.tracking import MlflowClient

from consent.rules.record import OperationRecord
from service import __version__ as CODE_VERSION
from training.artifact_digest import DIGEST_TAG, version_digest

if TYPE_CHECKING:
    from consent.stores.audit.log import AuditLog

log = logging.getLogger(__name__)

PROMOTION = "model_promotion"
PROMOTION_REFUSED = "model_promotion_refused"
SERVING_REFUSED = "model_refused"


class PromotionRefused(RuntimeError):
    """The version's artifact is not what was registered: it was not promoted."""


@dataclass(frozen=True)
class Promoted:
    model: str
    version: str
    alias: str
    digest: str
    previous_version: str | None


def _operation(kind: str, details: dict[str, Any]) -> OperationRecord:
    return OperationRecord(
        operation_id=f"{kind}-{uuid.uuid4().hex}",
        operation=kind,
        performed_at=datetime.now(UTC),
        code_version=CODE_VERSION,
        details=details,
    )


def promote(
    audit: AuditLog,
    client: MlflowClient,
    name: str,
    version: str,
    alias: str,
    reason: str,
) -> Promoted:
    """Point ``alias`` of model ``name`` at ``version`` and record the promotion with the
    artifact's digest in the audit log. Raises ``PromotionRefused`` (and records why) if the
    artifact is not the one registered."""
    registered = client.get_model_version(name, version).tags.get(DIGEST_TAG)
    found = version_digest(name, version)
    if registered is not None and registered != found:
        why = f"the artifact of {name} version {version} changed after its registration"
        details = {"model": name, "version": version, "alias": alias}
        details |= {"registered_digest": registered, "found_digest": found, "reason": why}
        audit.append_operation(_operation(PROMOTION_REFUSED, details))
        log.error("%s: not promoted", why)
        raise PromotionRefused(why)
    if registered is None:  # registered before digests were kept: recorded now
        client.set_model_version_tag(name, version, DIGEST_TAG, found)
    previous = _aliased(client, name, alias)
    client.set_registered_model_alias(name, alias, version)
    # After the alias moved: if this record cannot be written, the version is not served.
    promoted = Promoted(name, version, alias, found, previous)
    audit.append_operation(_operation(PROMOTION, promoted.__dict__ | {"reason": reason}))
    return promoted


def _aliased(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # no such alias yet
        return None


class Promotions:
    """The audit log's promotion records, as serving processes check them (see the module's
    docstring); and the record of a version they refused."""

    def __init__(self, audit: Callable[[], AuditLog]) -> None:
        #: The log, opened when first asked (building the served models opens no database).
        self._audit = audit
        self._refusals: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def _promotions(self) -> Iterator[dict[str, Any]]:
        for body in self._audit().operations(PROMOTION):
            yield body.get("details", {})

    def check(self, name: str, version: str, alias: str, digest: str) -> str | None:
        """Why ``version`` of ``name`` (whose files have ``digest``) must not be served under
        ``alias``; None if it was promoted there with that digest."""
        promoted = [
            p
            for p in self._promotions()
            if (p.get("model"), p.get("version"), p.get("alias")) == (name, version, alias)
        ]
        if not promoted:
            return f"{name} version {version} was never promoted to {alias} by NextBest"
        if all(p.get("digest") != digest for p in promoted):
            return (
                f"the artifact of {name} version {version} is not the one promoted "
                f"(digest {digest}, promoted {promoted[-1].get('digest')})"
            )
        return None

    def refused(self, name: str, version: str, alias: str, digest: str, why: str) -> None:
        """Record in the audit log, once per process, that the version was not served."""
        with self._lock:
            if (name, version, why) in self._refusals:
                return
            self._refusals.add((name, version, why))
        details = {"model": name, "version": version, "alias": alias, "found_digest": digest}
        self._audit().append_operation(_operation(SERVING_REFUSED, details | {"reason": why}))
