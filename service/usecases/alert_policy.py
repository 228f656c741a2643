"""The alert policy: when the stream raises an RM alert, and the discipline that keeps an RM's
inbox worth reading. Loaded from ``consent/alerts.yaml``, versioned with the code; its content
hash is logged with each alert's decision."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consent.rules.catalog import Catalog
from consent.rules.documents import PolicyError, content_hash, explain_invalid, load_rules_yaml
from consent.rules.model import Condition
from consent.rules.vocabulary import NEEDS
from service.usecases.alert_model import RM_CHANNEL


class Trigger(BaseModel):
    """A rule trigger: when every condition comes to hold, its actions are proposed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    when: tuple[Condition, ...] = Field(min_length=1)
    actions: tuple[str, ...] = Field(min_length=1)

    def holds(self, values: dict[str, float | None]) -> bool:
        return all(c.holds(values) for c in self.when)


class AlertPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int
    debounce_seconds: float = Field(ge=0, le=60)
    window_hours: float = Field(gt=0)
    expire_hours: float = Field(gt=0)
    rm_daily_capacity: int = Field(ge=1)
    limit: int = Field(ge=1, le=10)
    #: By need (each one of ``consent.rules.model.Need``).
    thresholds: dict[str, float]
    triggers: tuple[Trigger, ...] = ()
    #: Policy rules (ids) an open or queued alert must still pass when it reaches the RM.
    regate_rules: tuple[str, ...] = Field(min_length=1)
    content_version: str = ""

    @field_validator("thresholds")
    @classmethod
    def _needs(cls, thresholds: dict[str, float]) -> dict[str, float]:
        unknown = set(thresholds) - set(NEEDS)
        if unknown:
            raise ValueError(f"unknown needs {sorted(unknown)}")
        return thresholds

    @classmethod
    def load(cls, catalog: Catalog, path: Path | None = None) -> AlertPolicy:
        document = load_rules_yaml(path, "alerts.yaml")
        try:
            policy = cls.model_validate({**document, "content_version": content_hash(document)})
        except ValidationError as error:
            raise PolicyError(f"invalid alert policy: {explain_invalid(error)}") from None
        for trigger in policy.triggers:
            for action_id in trigger.actions:
                action = catalog.actions.get(action_id)
                if action is None:
                    raise PolicyError(f"trigger {trigger.id}: unknown action {action_id!r}")
                if RM_CHANNEL not in action.channels:
                    raise PolicyError(f"trigger {trigger.id}: {action_id} is not for the RM")
        return policy
