"""The action catalog: every action the bank may propose, loaded from ``actions.yaml`` and
versioned by its content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from consent.rules.documents import content_hash, load_rules_yaml, validated
from consent.rules.model import Action


class _Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    actions: Annotated[list[Action], Field(min_length=1)]


class Catalog:
    def __init__(self, actions: list[Action], version: str) -> None:
        self.actions = {a.id: a for a in actions}
        self.version = version

    def delivery_threshold(self, need: str) -> float | None:
        """The lowest score at which any action for ``need`` may be delivered (None: no action)."""
        scores = [a.min_score for a in self.actions.values() if a.need == need]
        return min(scores) if scores else None

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        document = load_rules_yaml(path, "actions.yaml")
        parsed = validated(_Catalog, document, "action catalog")
        return cls(parsed.actions, content_hash(document))
