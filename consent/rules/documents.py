"""The rule documents (``policy.yaml``, ``actions.yaml``, ``alerts.yaml``) as versioned YAML:
reading one, its version (the hash of its canonical content), and what is wrong with it in
words a policy author can act on."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PolicyError(ValueError):
    code = "invalid_policy"


def content_hash(document: Any) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def explain_invalid(error: ValidationError) -> str:
    """One line per problem, naming where it is: what a policy author needs to fix it."""
    problems = []
    for e in error.errors():
        where = ".".join(str(part) for part in e["loc"]) or "entry"
        shown = "" if isinstance(e["input"], dict | list) else f" (got {e['input']!r})"
        problems.append(f"{where}: {e['msg']}{shown}")
    return "; ".join(problems)


def load_rules_yaml(path: Path | None, packaged: str) -> Any:
    """The YAML document at ``path``, or else the one packaged in ``consent/`` as ``packaged``
    (``policy.yaml``, ``actions.yaml``, ``alerts.yaml``)."""
    text = path.read_text() if path else resources.files("consent").joinpath(packaged).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{packaged} is not valid YAML: {error}") from None


def validated(model: type[M], document: Any, what: str) -> M:
    """``document`` as a ``model``, or a ``PolicyError`` saying what about ``what`` is invalid."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise PolicyError(f"invalid {what}: {explain_invalid(error)}") from None
