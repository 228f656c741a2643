"""Signing the audit log's checkpoints: signed notes (https://c2sp.org/signed-note) holding a
``tlog-checkpoint`` (https://c2sp.org/tlog-checkpoint), with an Ed25519 key in the encodings of
Go's ``golang.org/x/mod/sumdb/note`` so that the ecosystem's tools (witnesses, verifiers) read
them as they are.

A signer key is written ``PRIVATE+KEY+<name>+<key id, hex>+<base64(0x01 || seed)>``, its
verifier key ``<name>+<key id, hex>+<base64(0x01 || public key)>``; the key id is the first four
bytes of ``SHA-256(name || "\\n" || 0x01 || public key)``. The signature covers the note's text,
every line before the blank line, newlines included.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

_ED25519 = 0x01
_PRIVATE = "PRIVATE+KEY+"


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ED25519]) + public_key).digest()[:4]


def _valid_name(name: str) -> bool:
    # The note format's rule: no spaces, no plus signs, printable.
    return bool(name) and name.isprintable() and " " not in name and "+" not in name


@dataclass(frozen=True)
class Signer:
    name: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls, name: str) -> Signer:
        if not _valid_name(name):
            raise ValueError("a key name is printable, with no space or plus sign")
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer key as Go's ``note.NewSigner`` reads it."""
        text = text.strip()
        if not text.startswith(_PRIVATE):
            raise ValueError("not a signer key (PRIVATE+KEY+name+id+key)")
        try:
            name, wanted, encoded = text[len(_PRIVATE) :].split("+", 2)
            raw = base64.b64decode(encoded, validate=True)
            expected_id = bytes.fromhex(wanted)
        except (ValueError, binascii.Error) as exc:
            raise ValueError("not a signer key (PRIVATE+KEY+name+id+key)") from exc
        if not _valid_name(name) or len(raw) != 33 or raw[0] != _ED25519:
            raise ValueError("not an Ed25519 signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if key_id(name, signer.public_key) != expected_id:
            raise ValueError("the signer key's id does not match its key")
        return signer

    @property
    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def encoded(self) -> str:
        """The signer key's text (a secret)."""
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        body = base64.b64encode(bytes([_ED25519]) + seed).decode()
        return f"{_PRIVATE}{self.name}+{self.key_id.hex()}+{body}"

    def verifier_key(self) -> str:
        body = base64.b64encode(bytes([_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{body}"

    def sign(self, text: str) -> str:
        """The signed note of ``text`` (lines ending in newlines, none of them blank)."""
        if not text.endswith("\n") or text.startswith("\n") or "\n\n" in text:
            raise ValueError("a note's text is lines ending in a newline, none of them empty")
        signature = self.private_key.sign(text.encode())
        blob = base64.b64encode(self.key_id + signature).decode()
        return f"{text}\n\u2014 {self.name} {blob}\n"


def checkpoint_text(origin: str, size: int, root: bytes, extensions: tuple[str, ...] = ()) -> str:
    """A ``tlog-checkpoint``'s body: origin, tree size, base64 root, optional extension lines."""
    if size < 0 or not origin or any(not line or "\n" in line for line in (origin, *extensions)):
        raise ValueError("a checkpoint's lines are non-empty and hold no newline")
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    return "".join(f"{line}\n" for line in lines)
