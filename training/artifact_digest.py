"""A registered model version's artifact digest: what it is recorded as at registration (a tag
on the version) and at promotion (the audit log), and what a serving process recomputes from
the files it downloaded before it serves them.

The digest covers every file of the version's MLflow model folder (the booster, calibration,
features, MLmodel, environment files): ``sha256:`` + SHA-256 of one line per file, in path
order, ``<relative path> <SHA-256 of the file>``. A changed, added or removed file changes it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow

#: The model version tag holding the digest taken at registration.
DIGEST_TAG = "artifact_digest"


def folder_digest(folder: Path) -> str:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        file_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{path.relative_to(folder).as_posix()} {file_hash}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def version_digest(name: str, version: str) -> str:
    """The digest of a registered version's artifact as the registry serves it now."""
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    return folder_digest(folder)
