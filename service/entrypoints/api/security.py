"""Who is calling, within their rate, in a role the operation takes: the dependencies every
/v1 operation declares (``service/entrypoints/auth.py`` holds the keys and roles)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from service.entrypoints.api.state import shared
from service.entrypoints.auth import Principal, Role
from service.errors import Forbidden, RateLimited, Unauthenticated

_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)
_BEARER = HTTPBearer(auto_error=False)


def authorize(request: Request, credential: str | None, roles: tuple[Role, ...]) -> Principal:
    """Who is calling (401), within their rate (429), in one of ``roles`` (403)."""
    state = shared(request)
    principal = state.container.keyring.authenticate(credential)
    if principal is None:
        raise Unauthenticated()
    # Limited by key name after authentication: unauthenticated calls cannot spend a real
    # key's budget, and forbidden ones still count against the key that made them.
    wait = state.rate_limiter.take(principal.name)
    if wait:
        raise RateLimited(wait)
    if principal.role not in roles:
        raise Forbidden()
    return principal


def credential(request: Request) -> str | None:
    """The API key, or else the bearer token, as the declared security schemes read them."""
    key = request.headers.get(_API_KEY.model.name)
    if key:
        return key
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if scheme.lower() == "bearer" and token else None


def allow(*roles: Role) -> Any:
    """A dependency that lets only ``roles`` through. A coroutine although it does no I/O:
    FastAPI runs plain functions in its thread pool, and a thread hop costs more than it does."""

    async def check(
        request: Request,
        key: Annotated[str | None, Security(_API_KEY)],
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
    ) -> Principal:
        return authorize(request, key or (bearer.credentials if bearer else None), roles)

    return Depends(check)


DECIDING: tuple[Role, ...] = ("channel", "rm", "compliance")
Deciding = Annotated[Principal, allow(*DECIDING)]
Auditing = Annotated[Principal, allow("compliance")]
ReadingConsent = Annotated[Principal, allow("channel", "rm", "compliance")]
RecordingConsent = Annotated[Principal, allow("channel", "rm")]
SendingEvents = Annotated[Principal, allow("channel", "admin")]
GivingFeedback = Annotated[Principal, allow("channel", "rm")]
Erasing = Annotated[Principal, allow("compliance")]
ReadingAlerts = Annotated[Principal, allow("rm", "compliance", "admin")]
DisposingAlerts = Annotated[Principal, allow("rm", "admin")]
