"""Who is calling: API keys mapped to roles.

Roles: ``channel`` (apps, web, contact centre: decisions, events, consents), ``rm`` (a
relationship manager: decisions and consents, their own alerts), ``compliance`` (the only role that
reads audit records and why actions were suppressed) and ``admin`` (operations).

Consents (``service/usecases/consent_writes.py``; each rule has a positive and a negative test in
``tests/integration/test_authorship.py``): only ``channel`` and ``rm`` keys record them; a
withdrawal is taken from either for any customer, since refusing one is never the safe side; a
grant from an ``rm`` key only for a customer whose directory entry names that key's ``rm_id``
(a ``channel`` key acts for the customer signed in to the bank's app, web or contact centre).
Every consent entry and every feedback keeps the key that wrote it (``recorded_by``,
``<role>:<key name>``), taken from the authenticated key, never from the request.

Keys live in a JSON file (``NEXTBEST_API_KEYS_FILE``): ``{"keys": [{"name": ..., "role": ...,
"sha256": <hex of the key>, "rm_id": ...}]}``. Only hashes are needed. In development, when no
file is configured, one key per role is generated into ``<home>/api-keys.json`` (plain keys
included, readable by the owner only) so the demo runs with authentication on; production
refuses to start without a file, and refuses plain keys in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Role = Literal["channel", "rm", "compliance", "admin"]
ROLES: tuple[Role, ...] = ("channel", "rm", "compliance", "admin")
DEV_KEYS_FILE = "api-keys.json"


class AuthConfigError(RuntimeError):
    """The key file is missing or not valid: the API refuses to start."""


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=64)]
    role: Role
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    #: Development only: the key itself, so a developer can read it back.
    key: Annotated[str, Field(min_length=24, max_length=256)] | None = None
    rm_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> KeyEntry:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError("give exactly one of sha256 or key")
        if self.role == "rm" and self.rm_id is None:
            raise ValueError("an rm key names its relationship manager (rm_id)")
        return self

    @property
    def digest(self) -> str:
        return self.sha256 or digest(self.key or "")


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: Annotated[list[KeyEntry], Field(min_length=1)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    rm_id: str | None = None


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, entries: list[KeyEntry]) -> None:
        self._by_digest = {e.digest: Principal(e.name, e.role, e.rm_id) for e in entries}

    def authenticate(self, key: str | None) -> Principal | None:
        if not key or len(key) > 256:
            return None
        # A dictionary lookup on a SHA-256 digest: comparing digests leaks nothing about keys.
        return self._by_digest.get(digest(key))

    @classmethod
    def load(cls, path: Path, allow_plain: bool) -> KeyRing:
        try:
            parsed = _KeyFile.model_validate_json(path.read_text())
        except (OSError, ValidationError) as error:
            raise AuthConfigError(f"cannot use API keys from {path}: {error}") from None
        if not allow_plain and any(e.key is not None for e in parsed.keys):
            raise AuthConfigError(f"{path} holds plain keys; production takes sha256 only")
        return cls(parsed.keys)


def development_keys(home: Path) -> Path:
    """``<home>/api-keys.json`` with one key per role (and one RM), created once."""
    path = home / DEV_KEYS_FILE
    if path.exists():
        return path
    entries = [
        {"name": f"dev-{role}", "role": role, "key": secrets.token_urlsafe(32)}
        | ({"rm_id": "RM0001"} if role == "rm" else {})
        for role in ROLES
    ]
    home.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump({"keys": entries}, out, indent=2)
    return path


def plain_key(path: Path, role: Role) -> str:
    """The plain key of the first entry with ``role`` in a development key file."""
    document = json.loads(path.read_text())
    for entry in document["keys"]:
        if entry["role"] == role and entry.get("key"):
            return str(entry["key"])
    raise KeyError(f"no plain {role} key in {path}")
