"""Where a change came from (kept in decision records): an event, with its Kafka coordinates,
or a timer, the midnight at which a customer's features changed with no new event."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Origin:
    """The event that last changed a customer's features."""

    event_id: str
    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def in_trigger(self) -> dict[str, Any]:
        """What a decision's trigger says of where it came from."""
        return {"event": self.as_dict()}


@dataclass(frozen=True)
class TimerOrigin:
    """A timer that moved a customer's features to ``as_of`` (epoch µs) with no new event:
    a window let a day go, a day count ticked, an expected payment did not come."""

    as_of_us: int

    def as_dict(self) -> dict[str, Any]:
        moment = datetime.fromtimestamp(self.as_of_us / 1e6, UTC)
        return {"timer": moment.isoformat().replace("+00:00", "Z")}

    def in_trigger(self) -> dict[str, Any]:
        return self.as_dict()
