"""Errors to responses, in one place: every error a client gets has the shape of
``ErrorResponse`` and a code from ``service.errors``.

Our own errors (``NextBestError``) carry their status, code and message; the framework's (no
route, wrong method, unreadable or oversized body, invalid request) are answered in the same
shape with our wording; anything else is a 500 that tells nothing. A store's or transport's own
exception never reaches a client: ``unavailable`` turns it into the 503 the operation declares.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.errors import HTTP_STATUS_CODES, ErrorCode, NextBestError, error_document

log = logging.getLogger(__name__)


@contextmanager
def unavailable(what: str, error: NextBestError) -> Iterator[None]:
    """Run the block; any exception but one of ours (already safe to show, with its own code)
    is logged as ``what`` failing and answered as ``error``."""
    try:
        yield
    except NextBestError:
        raise
    except Exception as cause:
        log.error("%s failed: %s", what, cause)
        raise error from cause


def error_response(
    status: int,
    code: ErrorCode,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_document(code, message, details), status, headers=headers)


def allowed_methods(request: Request) -> str:
    """Every method the routes on the request's path take."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        if (
            isinstance(route.original_route, APIRoute)
            and route.matches(request.scope)[0] != Match.NONE
        ):
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


async def _nextbest_error(_: Request, error: NextBestError) -> JSONResponse:
    return error_response(error.status, error.code, error.message, error.details, error.headers)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    # The framework's own errors (no route, wrong method, unreadable or oversized body) in our
    # shape, with our wording: their detail texts are not ours to keep stable.
    code, message = HTTP_STATUS_CODES.get(
        error.status_code,
        ("internal_error", "internal error")
        if error.status_code >= 500
        else ("invalid_request", "the request is not valid"),
    )
    headers = error.headers
    if error.status_code == 405:
        # Starlette names the methods of the first route on the path; a path served by several
        # routes (GET and PUT consents) takes all of them (RFC 9110, 15.5.6).
        headers = {**(headers or {}), "Allow": allowed_methods(request)}
    return error_response(error.status_code, code, message, headers=headers)


async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
    details = [
        {"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()
    ]
    return error_response(422, "invalid_request", "the request is not valid", details)


async def _unexpected(_: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.exception_handler(NextBestError)(_nextbest_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(Exception)(_unexpected)
