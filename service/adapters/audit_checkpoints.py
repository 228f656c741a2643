"""What the audit log's signed checkpoints need from the settings: the signing key, the
verifier keys trusted when reading checkpoints, and the sinks they are published to.

The signing key never enters the operational store: it comes from the environment
(``NEXTBEST_AUDIT_SIGNING_KEY``, as an orchestrator passes a secret) or a file
(``NEXTBEST_AUDIT_SIGNING_KEY_FILE``, a mounted secret). Development makes one on first use in
the home (``secrets/audit-signing.key``, readable by its owner alone); production refuses to
write the log without one. With a KMS, the key is fetched into the environment at start by the
deployment (see docs/compliance.md).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy import Engine

from consent.rules.signed_note import Signer
from consent.stores.audit.checkpointer import Checkpointer, CheckpointPolicy
from consent.stores.audit.log import AuditLog
from consent.stores.audit.proofs import Checkpoints, Proofs
from consent.stores.audit.sinks import FolderSink, Sink
from consent.verify_audit import VerificationError, VerifierKey
from service.adapters.checkpoint_topic import (
    CHECKPOINT_SEND_TIMEOUT_S,
    CHECKPOINTS_TOPIC,
    CheckpointTopic,
)
from service.adapters.kafka_transport import KafkaProducerAdapter
from service.settings import Settings

DEV_SIGNING_KEY = Path("secrets") / "audit-signing.key"


class AuditKeyError(RuntimeError):
    """The signing key or a verifier key is missing or not a key."""


def load_signer(settings: Settings) -> Signer:
    """The checkpoint signing key (see the module's docstring)."""
    try:
        if settings.audit_signing_key is not None:
            return Signer.parse(settings.audit_signing_key.get_secret_value())
        if settings.audit_signing_key_file is not None:
            return Signer.parse(settings.audit_signing_key_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AuditKeyError(f"the audit signing key cannot be used: {error}") from error
    if settings.environment != "development":
        raise AuditKeyError(
            "production needs NEXTBEST_AUDIT_SIGNING_KEY or NEXTBEST_AUDIT_SIGNING_KEY_FILE"
        )
    return _development_signer(settings.home / DEV_SIGNING_KEY, settings.audit_origin)


def _development_signer(path: Path, name: str) -> Signer:
    """The home's key, made on first use. Processes starting together race to make it: each
    writes a whole key beside it and links it in, the first link wins, and all read that one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(Signer.generate(name).encoded() + "\n")
                out.flush()
                os.fsync(out.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    try:
        return Signer.parse(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise AuditKeyError(f"{path}: not a signing key ({error})") from error


def verifier_keys(settings: Settings, signer: Callable[[], Signer]) -> list[VerifierKey]:
    """The keys whose checkpoints are trusted: the signing key's, if this process has it (not
    on an auditor's machine), and those of ``NEXTBEST_AUDIT_VERIFIER_KEYS_FILE`` (one per
    line; ``#`` begins a comment)."""
    try:
        keys = [VerifierKey.parse(signer().verifier_key())]
    except AuditKeyError:
        keys = []
    path = settings.audit_verifier_keys_file
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            keys.extend(
                VerifierKey.parse(line)
                for line in (raw.split("#", 1)[0].strip() for raw in lines)
                if line
            )
        except (OSError, VerificationError) as error:
            raise AuditKeyError(f"{path}: {error}") from error
    return keys


def checkpoint_sinks(settings: Settings) -> list[Sink]:
    """Where signed checkpoints are published and read back from
    (``NEXTBEST_AUDIT_CHECKPOINT_SINKS``)."""
    sinks: list[Sink] = []
    servers = settings.kafka_bootstrap_servers
    for name in settings.checkpoint_sinks:
        if name == "folder":
            sinks.append(FolderSink(settings.checkpoint_dir))
        else:
            sinks.append(
                CheckpointTopic(
                    servers,
                    settings.topic(CHECKPOINTS_TOPIC),
                    lambda: KafkaProducerAdapter(servers, CHECKPOINT_SEND_TIMEOUT_S),
                )
            )
    return sinks


def audit_log(settings: Settings, engine: Engine, signer: Callable[[], Signer]) -> AuditLog:
    """The audit log with its checkpointer, as the settings describe them."""
    policy = CheckpointPolicy(
        settings.audit_origin,
        settings.audit_checkpoint_records,
        settings.audit_checkpoint_seconds,
    )
    checkpointer = Checkpointer(engine, signer, policy, checkpoint_sinks(settings))
    return AuditLog(engine, checkpointer=checkpointer)


def proofs(
    settings: Settings, audit: AuditLog, keys: Callable[[], Sequence[VerifierKey]]
) -> Proofs:
    """Proofs against the checkpoints ``audit``'s checkpointer publishes (and signs one for a
    record no checkpoint covers yet)."""
    checkpointer = audit.checkpointer
    if checkpointer is None:
        raise ValueError("proofs need a log that publishes checkpoints")
    known = Checkpoints(checkpointer.sinks, keys, settings.audit_origin)
    checkpointer.listeners.append(known.add)
    return Proofs(audit.engine, known, checkpointer.publish)
