"""The error hierarchy: every error has a stable code and an HTTP status; messages are safe to
show to clients (no internals).

Every error response, ours or the framework's (unknown route, wrong method, oversized body),
has the shape ``{"error": {"code", "message", "details"?}}`` with one of ``ERROR_CODES``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

ErrorCode = Literal[
    "invalid_request",
    "invalid_event",
    "unauthenticated",
    "forbidden",
    "not_found",
    "conflict",
    "method_not_allowed",
    "request_too_large",
    "rate_limited",
    "consent_unavailable",
    "audit_unavailable",
    "store_unavailable",
    "transport_unavailable",
    "overloaded",
    "internal_error",
]

#: Codes of the framework's own HTTP errors (routing, body parsing, size). Their text is
#: replaced by ours: a framework's detail is not a promise we can keep stable.
HTTP_STATUS_CODES: dict[int, tuple[ErrorCode, str]] = {
    400: ("invalid_request", "the request body could not be read"),
    404: ("not_found", "not found"),
    405: ("method_not_allowed", "this method is not allowed here"),
    413: ("request_too_large", "the request body is too large"),
}


class NextBestError(Exception):
    code: ErrorCode = "internal_error"
    status = 500
    message = "internal error"
    #: Response headers the error carries (e.g. Retry-After).
    headers: dict[str, str] | None = None

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details


def error_document(code: ErrorCode, message: str, details: Any = None) -> dict[str, Any]:
    """The body of every error response."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


class InvalidRequest(NextBestError):
    code, status, message = "invalid_request", 422, "the request is not valid"


class InvalidEvents(NextBestError):
    code, status, message = "invalid_event", 422, "some events are not valid"


class NotFound(NextBestError):
    code, status, message = "not_found", 404, "not found"


class Conflict(NextBestError):
    """The request is valid but the resource is not in a state that allows it."""

    code, status, message = "conflict", 409, "not possible in the resource's current state"


class ConsentUnavailable(NextBestError):
    """The operational store cannot be read: consent cannot be checked, so nothing is delivered."""

    code, status = "consent_unavailable", 503
    message = "consent cannot be checked right now; no recommendation was delivered"


class AuditUnavailable(NextBestError):
    code, status = "audit_unavailable", 503
    message = "the decision could not be recorded in the audit log; nothing was delivered"


class TransportUnavailable(NextBestError):
    code, status = "transport_unavailable", 503
    message = "the event transport is unavailable; the events were not accepted"


class Unauthenticated(NextBestError):
    code, status = "unauthenticated", 401
    message = "a valid API key is required (X-API-Key header or Authorization: Bearer)"


class Forbidden(NextBestError):
    code, status, message = "forbidden", 403, "this key's role may not do that"


class RateLimited(NextBestError):
    """The key spent its requests for now; ``Retry-After`` says when the next one is there."""

    code, status, message = "rate_limited", 429, "too many requests for this API key; slow down"

    def __init__(self, retry_after: float) -> None:
        super().__init__()
        # Retry-After takes whole seconds; rounding down would invite a retry that fails again.
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


class StoreUnavailable(NextBestError):
    """A write to the operational store failed; the client may safely send it again."""

    code, status = "store_unavailable", 503
    message = "the operational store is unavailable; nothing was changed, send it again"


class Overloaded(NextBestError):
    """The process has as many decisions in flight as it may, or one did not finish in time
    (a database that stalled): nothing was delivered, and ``Retry-After`` says when to retry."""

    code, status = "overloaded", 503
    message = "too many decisions are in progress; nothing was delivered, try again shortly"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}
