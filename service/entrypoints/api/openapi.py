"""What the published OpenAPI document says beyond what FastAPI writes from the routes: the
errors each operation declares, the catalog's action ids and the event contract."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from consent.rules.catalog import Catalog
from feature_repo.events import Event
from service.entrypoints.api.schemas import ErrorResponse

#: Every /v1 operation authenticates, authorizes, rate-limits and validates.
V1_ERRORS = (401, 403, 422, 429)
#: And those with a body may get one that is not JSON (400) or too large (413).
BODY_ERRORS = (400, 413)


def declared(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error responses an operation can give."""
    return {status: {"model": ErrorResponse} for status in statuses}


def publish_catalog_and_events(app: FastAPI, catalog: Catalog) -> None:
    """What the request models cannot say by themselves, added to the published document: the
    action ids feedback may name (the catalog is data, loaded at start), and the event
    contract (``feature_repo.events.Event``, by which each event of a batch is validated)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document["components"]["schemas"]
        schemas["FeedbackIn"]["properties"]["action_id"]["enum"] = sorted(catalog.actions)
        event = TypeAdapter(Event).json_schema(ref_template="#/components/schemas/{model}")
        definitions = event.pop("$defs")
        if set(definitions) & set(schemas):
            raise RuntimeError(f"event schemas clash with {set(definitions) & set(schemas)}")
        schemas.update(definitions)
        schemas["Event"] = event
        events = schemas["EventsIn"]["properties"]["events"]
        events["items"] = {"$ref": "#/components/schemas/Event"}
        return document

    app.openapi = openapi  # type: ignore[method-assign]
