"""The error hierarchy: every error has a stable code and an HTTP status; messages are safe to
show to clients (no internals)."""

from __future__ import annotations

from typing import Any


class NextBestError(Exception):
    code = "internal_error"
    status = 500
    message = "internal error"

    def __init__(self, message: str | None = None, details: Any = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details


class InvalidRequest(NextBestError):
    code, status, message = "invalid_request", 422, "the request is not valid"


class InvalidEvents(NextBestError):
    code, status, message = "invalid_event", 422, "some events are not valid"


class NotFound(NextBestError):
    code, status, message = "not_found", 404, "not found"


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


class StoreUnavailable(NextBestError):
    """A write to the operational store failed; the client may safely send it again."""

    code, status = "store_unavailable", 503
    message = "the operational store is unavailable; nothing was changed, send it again"
