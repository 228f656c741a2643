"""Which of the stream's records are events. The others (invalid, tombstones, oversize ones and
events dated outside the time bounds) are refused with the reason, for the dead-letter topic."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple

from consent.stores.registry import recorder
from feature_repo.events import Event, InvalidEvent, TimeBounds, parse_event
from service.adapters.deadletter import is_dependency_failure, principal_of, refusal
from service.adapters.transport import Record

#: Told of a record that is not processed: the record, the error code and the reason.
Refuse = Callable[[Record, str, str], None]


class Parsed(NamedTuple):
    record: Record
    event: Event

    @property
    def sender(self) -> str | None:
        """``<role>:<key name>`` of the API key that sent the event (``POST /v1/events``), or
        None."""
        principal = principal_of(self.record)
        if principal is None:
            return None
        try:
            who = json.loads(principal)
            return recorder(str(who["role"]), str(who["name"]))
        except (ValueError, TypeError, KeyError):
            return None


def parse_records(records: list[Record], time_bounds: TimeBounds, refuse: Refuse) -> list[Parsed]:
    """The records' events; the others are refused with the reason."""
    parsed: list[Parsed] = []
    now = datetime.now(UTC)
    for record in records:
        refused = refusal(record)
        if refused is None:
            try:
                event = parse_event(record.value)  # type: ignore[arg-type]
            except InvalidEvent as error:
                refused = (InvalidEvent.code, error.reason)
            except Exception as error:  # the parser choked on these bytes
                if is_dependency_failure(error):
                    raise
                refused = (InvalidEvent.code, f"unreadable: {type(error).__name__}")
            else:
                violation = time_bounds.violation(event.occurred_at, now)
                if violation is None:
                    parsed.append(Parsed(record, event))
                    continue
                refused = ("out_of_bounds", f"occurred_at: {violation}")
        refuse(record, *refused)
    return parsed
