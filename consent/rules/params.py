"""The parameters a policy may set for each rule, as strict models: unknown keys and bad values
fail when the policy loads, and a parameter left out takes the default here."""

from __future__ import annotations

from datetime import time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from consent.rules.model import MAX_COOLOFF_DAYS, ActionKind, ContactKind
from consent.rules.vocabulary import ConsentChannel, ContactChannel, Need

#: A span of days a rule looks back over; bounded by the history the gate is given.
Days = Annotated[StrictInt, Field(gt=0, le=MAX_COOLOFF_DAYS)]
Kinds = Annotated[tuple[ActionKind, ...], Field(min_length=1)]
Needs = Annotated[tuple[Need, ...], Field(min_length=1)]
ClockTime = Annotated[StrictStr, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


def time_zone(name: str | None) -> ZoneInfo | None:
    """The zone named ``name``, or None when there is no such zone."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # A name from the customer master may be anything: "Europe" is a folder of tzdata.
        return None


class RuleParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def lookback_days(self) -> int:
        """How many days of contact history the rule reads."""
        return 0


class NoParams(RuleParams):
    pass


class AffordabilityParams(RuleParams):
    needs: Needs = ("mortgage", "personal_loan", "credit_card")
    max_debt_to_income: Annotated[StrictFloat, Field(gt=0, allow_inf_nan=False)] = 0.45


class SuitabilityParams(RuleParams):
    needs: Needs = ("investment", "pension")
    assessment_valid_days: Annotated[StrictInt, Field(gt=0)] = 365


class HeldParams(RuleParams):
    #: Needs where holding the product does not block another offer (a top-up, a new deposit).
    #: Empty by default: holding a product blocks offering it again unless the policy says so.
    allow_held: tuple[Need, ...] = ()


class Cap(RuleParams):
    channel: ConsentChannel
    window_days: Days
    max: Annotated[StrictInt, Field(ge=1)]


class CapsParams(RuleParams):
    caps: Annotated[tuple[Cap, ...], Field(min_length=1)]
    count_kinds: Annotated[tuple[ContactKind, ...], Field(min_length=1)] = ("impression",)
    household: StrictBool = True
    # Regulatory notices are never capped: a required notice must not wait for a quieter week.
    applies_to: Annotated[tuple[Literal["sales", "service"], ...], Field(min_length=1)] = (
        "sales",
        "service",
    )

    @property
    def lookback_days(self) -> int:
        return max(cap.window_days for cap in self.caps)


class CooloffParams(RuleParams):
    kinds: Annotated[tuple[ContactKind, ...], Field(min_length=1)] = ("decline",)
    household: StrictBool = False

    @property
    def lookback_days(self) -> int:
        # The cool-off is the action's, from the catalog; any action may ask for the maximum.
        return MAX_COOLOFF_DAYS


class QuietHoursParams(RuleParams):
    start: ClockTime = "21:00"
    end: ClockTime = "08:00"
    channels: Annotated[tuple[ContactChannel, ...], Field(min_length=1)] = (
        "phone",
        "sms",
        "email",
        "rm",
    )
    #: The bank's own zone, for customers whose zone is unknown: no default, the bank says.
    default_timezone: StrictStr
    applies_to: Kinds = ("sales", "service", "regulatory")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML 1.1 reads an unquoted 21:00 as the base-60 number 1260.
            raise ValueError("write times as quoted strings, e.g. '21:00'")
        return value

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if time_zone(value) is None:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Berlin)")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHoursParams:
        if self.start == self.end:
            raise ValueError("start and end are equal: quiet hours would be empty or all day")
        return self

    def is_quiet(self, local: time) -> bool:
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        if start < end:
            return start <= local < end
        return local >= start or local < end


#: A control group's generation: the salt of its assignment. A new generation reshuffles who is
#: held back (on purpose, e.g. once a year); the same generation keeps everyone where they are.
Generation = Annotated[StrictStr, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
#: The share of customers held back: at most half, since a control group is the minority.
Share = Annotated[StrictFloat, Field(ge=0.0, le=0.5, allow_inf_nan=False)]


class UniversalControlParams(RuleParams):
    generation: Generation
    share: Share


class HoldoutParams(RuleParams):
    generation: Generation
    default_share: Share
    #: Shares for particular actions (by catalog id); the others hold out ``default_share``.
    shares: dict[Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]*$")], Share] = {}

    def share(self, action_id: str) -> float:
        return self.shares.get(action_id, self.default_share)
