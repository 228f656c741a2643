"""What a synthetic bank is made of: its size, its people, its consents and its situations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from consent.rules.vocabulary import NEEDS

#: The product whose application or opening realises each need.
NEED_PRODUCT = {need: need for need in NEEDS}

DEFAULT_END = datetime(2026, 11, 1, tzinfo=UTC)
#: Customers per chunk. Part of the output's identity: the same spec gives the same bytes.
CHUNK_CUSTOMERS = 5_000


@dataclass(frozen=True)
class ConsentMix:
    """How customers answered the consent request (probabilities)."""

    never_answered: float = 0.08
    profiling: float = 0.92
    marketing: dict[str, float] = field(
        default_factory=lambda: {
            "mobile_app": 0.70,
            "web": 0.60,
            "email": 0.55,
            "sms": 0.30,
            "phone": 0.25,
            "rm": 0.65,
            "branch": 0.40,
        }
    )
    service: dict[str, float] = field(
        default_factory=lambda: {
            "mobile_app": 0.95,
            "web": 0.90,
            "email": 0.80,
            "sms": 0.60,
            "phone": 0.50,
            "rm": 0.70,
            "branch": 0.70,
        }
    )
    #: Share of grants withdrawn during the generated period.
    withdrawn: float = 0.04


@dataclass(frozen=True)
class Situation:
    """A latent life situation: how often it starts, how long it lasts, what it does."""

    #: Chance per 30 days that an eligible customer enters the situation.
    onset_per_month: float
    min_days: int
    max_days: int
    #: Extra daily hazard of an application, per need, at the situation's peak.
    needs: dict[str, float]


def default_situations() -> dict[str, Situation]:
    return {
        "home_purchase": Situation(0.010, 30, 90, {"mortgage": 0.020}),
        "windfall": Situation(0.008, 20, 60, {"investment": 0.025, "term_deposit": 0.015}),
        "family_change": Situation(0.008, 30, 90, {"protection": 0.025}),
        "travel_spending": Situation(0.015, 14, 45, {"credit_card": 0.030}),
        "cash_squeeze": Situation(0.012, 20, 60, {"personal_loan": 0.020}),
        "retirement_approach": Situation(0.030, 60, 180, {"pension": 0.012}),
        "idle_cash": Situation(0.015, 30, 90, {"term_deposit": 0.020, "investment": 0.006}),
    }


def busy_housing_market() -> dict[str, Situation]:
    """Three times as many home purchases under way: enough mortgage applications for a
    small demo bank to train on, with the mortgage base rate still about 1% a month."""
    situations = default_situations()
    situations["home_purchase"] = replace(situations["home_purchase"], onset_per_month=0.03)
    return situations


def lively(factor: float = 3.0) -> dict[str, Situation]:
    """Every situation ``factor`` times as frequent: a simulated bank of some thousands with
    enough of each need under way for its models to learn whom a need is driving."""
    return {
        name: replace(s, onset_per_month=min(1.0, s.onset_per_month * factor))
        for name, s in default_situations().items()
    }


@dataclass(frozen=True)
class BankSpec:
    seed: int = 7
    customers: int = 1_000
    days: int = 90
    end: datetime = DEFAULT_END
    consents: ConsentMix = field(default_factory=ConsentMix)
    situations: dict[str, Situation] = field(default_factory=default_situations)
    #: Share of events written deliberately malformed (for the dead-letter path).
    malformed_fraction: float = 0.0
    #: Ground truth: propensity of an application within this many days of each snapshot.
    truth_horizon_days: int = 30
    truth_every_days: int = 7
    #: After an application, that need's hazard is zero for this long (the case is in progress).
    cooldown_days: int = 90

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1:
            raise ValueError("a bank needs at least one customer and one day")
        if not 0.0 <= self.malformed_fraction < 0.5:
            raise ValueError("malformed_fraction must be in [0, 0.5)")
        if self.end.tzinfo is None:
            raise ValueError("end must be timezone-aware")

    @property
    def start(self) -> datetime:
        from datetime import timedelta

        return self.end - timedelta(days=self.days)

    @property
    def chunks(self) -> int:
        return -(-self.customers // CHUNK_CUSTOMERS)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["end"] = self.end.isoformat()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BankSpec:
        data = dict(data)
        data["end"] = datetime.fromisoformat(data["end"])
        data["consents"] = ConsentMix(**data["consents"])
        data["situations"] = {k: Situation(**v) for k, v in data["situations"].items()}
        return cls(**data)
