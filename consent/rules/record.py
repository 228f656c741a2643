"""What the audit log keeps: the record of a decision (with the gate's inputs, so it can be
replayed) and the record of an operation on the bank's data as a whole."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, field_validator

from consent.rules.model import Candidate, ConsentGiven, ContactRecord, CustomerFacts
from consent.rules.vocabulary import Need


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureValue(_Frozen):
    """One feature as read; a record keeps features grouped by read (``FeaturesRead``)."""

    name: str
    value: float | None
    as_of: datetime | None
    age_seconds: float | None


class FeaturesRead(_Frozen):
    """Features read together (one feature view's row): their time, age and values."""

    as_of: datetime | None
    age_seconds: float | None
    values: dict[str, float | None]


class ModelUsed(_Frozen):
    need: Need
    name: str
    version: str
    run_id: str
    #: The digest of the artifact files scored with (``training.artifact_digest``): the one
    #: its promotion record holds. None in records written before digests were kept.
    digest: str | None = None


class GateInputs(_Frozen):
    """What the gate saw besides consents and scores, kept so a decision can be replayed under
    another policy (`nextbest policy simulate`). No identifiers: the record is pseudonymised."""

    facts: CustomerFacts | None
    contacts: tuple[ContactRecord, ...] = ()
    in_flight: tuple[str, ...] = ()
    limit: int = 3
    #: Needs with a model served (one that met the quality floor); None in records written
    #: before decisions kept it.
    models_served: tuple[str, ...] | None = None
    #: Freshness as the gate saw it (``features.fresh``): the features each scored need's model
    #: depends on, by need (an action without a served model depends on its trigger's features,
    #: which the catalog gives), and which of the features any candidate depends on were stale.
    #: None in records written before decisions kept them: their freshness verdicts stand.
    depends_on: dict[str, tuple[str, ...]] | None = None
    stale: tuple[str, ...] = ()


#: What happened to a sales action a decision chose: delivered (``treatment``), held back by
#: its action's holdout, or held back because the customer is in the universal control group.
Assignment = Literal["treatment", "held_out", "universal_control"]


class ActionAssignment(_Frozen):
    assignment: Assignment
    #: The probability of this assignment under the policy's shares, for a customer for whom
    #: the action was chosen: what lift estimates weigh by.
    probability: float


class ControlAssignment(_Frozen):
    """The customer's control groups at the decision, and what became of each sales action
    chosen for her (what arbitration picks with no control group)."""

    group: Literal["control", "treatment"]
    #: The universal control group's generation and share; None when the policy has none.
    generation: str | None
    share: float
    holdout_generation: str | None = None
    actions: dict[str, ActionAssignment] = Field(default_factory=dict)


class DecisionRecord(_Frozen):
    """What the audit log keeps for one decision (hashing adds ``prev_hash``/``record_hash``)."""

    decision_id: str
    decided_at: AwareDatetime
    trigger: dict[str, Any]
    customer_ref: str
    channel: str
    candidates: tuple[Candidate, ...]
    delivered: tuple[str, ...]
    consents_relied_on: tuple[ConsentGiven, ...]
    features: tuple[FeaturesRead, ...]
    models: tuple[ModelUsed, ...]
    policy_version: str
    code_version: str
    fallback: str | None
    reason_codes: tuple[str, ...]
    delivery_status: Literal["delivered", "nothing_to_deliver", "withheld"]
    corrects: str | None = None
    #: None in records written before decisions kept their gate inputs.
    gate: GateInputs | None = None
    #: The version (content hash) of each rule whose outcomes the record holds.
    rule_versions: dict[str, str] = Field(default_factory=dict)
    #: None in records written before control groups, or under a policy without them.
    control: ControlAssignment | None = None

    # Features read together share their time and age: the record keeps them once per read
    # ({"as_of", "age_seconds", "values": {name: value}}), not once per feature.
    @field_serializer("features")
    def _grouped(self, features: tuple[FeaturesRead | FeatureValue, ...]) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, Any], dict[str, float | None]] = {}
        for f in features:
            if isinstance(f, FeaturesRead):
                groups.setdefault((f.as_of, f.age_seconds), {}).update(f.values)
            else:
                groups.setdefault((f.as_of, f.age_seconds), {})[f.name] = f.value
        return [
            {
                "as_of": None if as_of is None else as_of.isoformat(),
                "age_seconds": age,
                "values": values,
            }
            for (as_of, age), values in groups.items()
        ]

    @field_validator("features", mode="before")
    @classmethod
    def _grouped_on_read(cls, features: Any) -> Any:
        """Reads as they are stored; one entry per feature (as records were once written, and
        as callers may still give them) is grouped by time and age."""
        if not isinstance(features, list | tuple):
            return features
        out: list[Any] = []
        singles: dict[tuple[Any, Any], dict[str, Any]] = {}
        for item in features:
            if isinstance(item, FeatureValue):
                item = item.model_dump()
            if isinstance(item, dict) and "name" in item:
                key = (item.get("as_of"), item.get("age_seconds"))
                if key not in singles:
                    singles[key] = {"as_of": key[0], "age_seconds": key[1], "values": {}}
                    out.append(singles[key])
                singles[key]["values"][item["name"]] = item.get("value")
            else:
                out.append(item)
        return tuple(out)

    def feature_values(self) -> dict[str, float | None]:
        """Every feature the decision read, by name."""
        return {name: value for read in self.features for name, value in read.values.items()}


#: ``OperationRecord.record_type``: what tells an operation's record from a decision's in the log.
OPERATION: Literal["operation"] = "operation"


class OperationRecord(_Frozen):
    """An audit record of an operation on the bank's data as a whole (a batch scoring run, an
    erasure), not of a decision about one customer. It names no customer: what was done, when,
    with which versions, and counts. In the chain like a decision record, hashed the same way;
    readers tell the two apart by ``record_type`` (``is_operation``)."""

    record_type: Literal["operation"] = OPERATION
    operation_id: Annotated[str, Field(min_length=1, max_length=64)]
    #: What was done, e.g. ``batch_score``, ``erasure``.
    operation: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
    performed_at: AwareDatetime
    code_version: str
    #: Counts, versions and hashes: never a customer's identity.
    details: dict[str, Any] = Field(default_factory=dict)


def is_operation(body: Any) -> bool:
    """Whether an audit record's body (as exported) is an ``OperationRecord``."""
    return isinstance(body, dict) and body.get("record_type") == OPERATION
