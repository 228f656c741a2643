"""The RM inbox page: a page and its script, no build step. The page holds no data: it signs
in with the RM's key and reads /v1/alerts like any client."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

#: The page runs only its own script and talks only to this API.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _static(name: str, media_type: str) -> Callable[[], Response]:
    content = resources.files("service.entrypoints").joinpath("static", name).read_bytes()

    def serve() -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return serve


def _pages() -> APIRouter:
    pages = APIRouter()
    for path, name, media_type in (
        ("/rm", "rm.html", "text/html; charset=utf-8"),
        ("/rm/inbox.js", "inbox.js", "text/javascript; charset=utf-8"),
        ("/rm/inbox.css", "inbox.css", "text/css; charset=utf-8"),
    ):
        pages.add_api_route(
            path, _static(name, media_type), methods=["GET"], include_in_schema=False
        )
    return pages


router = _pages()
