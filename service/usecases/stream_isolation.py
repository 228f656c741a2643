"""Poison isolation: an exception raised while processing valid events is either a dependency's
failure (``service.adapters.deadletter.DEPENDENCY_ERRORS``: it goes up, for the batch to be tried
again) or the fault of some record in the batch. Then the batch is split in halves until the
record that fails alone is found; it is refused with the error and the rest is processed, so the
partition always moves on."""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.adapters.deadletter import dead_letter_key, is_dependency_failure
from service.usecases.stream_validation import Parsed, Refuse

log = logging.getLogger(__name__)


def isolated(step: Callable[[list[Parsed]], None], items: list[Parsed], refuse: Refuse) -> None:
    """Run ``step`` on ``items``; if it fails for a reason that is not a dependency's,
    split the items until the record that fails alone is found, refuse it with the
    error, and run the step on the rest. Steps are idempotent for what they did before
    failing (event ids, a consent batch in one transaction), so running a half again is
    safe."""
    if not items:
        return
    try:
        step(items)
    except Exception as error:
        if is_dependency_failure(error):
            raise
        if len(items) == 1:
            record = items[0].record
            log.warning(
                "record %s failed alone and is dead-lettered: %s: %s",
                dead_letter_key(record),
                type(error).__name__,
                error,
            )
            refuse(record, "processing_failed", f"{type(error).__name__}: {error}")
            return
        middle = len(items) // 2
        isolated(step, items[:middle], refuse)
        isolated(step, items[middle:], refuse)
