"""Where a change came from: the event, with its Kafka coordinates (kept in decision records)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
