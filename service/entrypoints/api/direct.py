"""A route class for the hot path, ``POST /v1/decisions``, that handles its request itself."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.entrypoints.api.security import authorize, credential
from service.entrypoints.api.state import shared
from service.entrypoints.auth import Role


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def direct_route(body_model: type[BaseModel], roles: tuple[Role, ...]) -> type[APIRoute]:
    """A route class whose operation is declared like the others (body model, security,
    responses: FastAPI writes its OpenAPI), but whose handler does what the operation needs
    itself: ``authorize`` as the dependencies do, the body parsed by the model's own JSON
    validator (422 in the same shape), then the endpoint, called as
    ``endpoint(body, shared, principal)``. FastAPI's generic request handling (dependency
    solving, a JSON parse and then a second validation of the body) does that work twice over,
    and on the path every decision takes that is CPU the process would rather spend deciding."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            endpoint = self.endpoint

            async def handle(request: Request) -> Response:
                principal = authorize(request, credential(request), roles)
                if not _is_json(request.headers.get("content-type", "")):
                    raise RequestValidationError(
                        [{"loc": ("body",), "msg": "the body must be JSON (application/json)"}]
                    )
                raw = await request.body()
                try:
                    raw.decode()
                except UnicodeDecodeError:  # not text at all: 400, as FastAPI answers it
                    raise StarletteHTTPException(400) from None
                try:
                    body = body_model.model_validate_json(raw)
                except ValidationError as error:
                    raise RequestValidationError(
                        [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
                    ) from None
                response: Response = await endpoint(body, shared(request), principal)
                return response

            return handle

    return DirectRoute
