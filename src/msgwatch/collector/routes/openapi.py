"""``/openapi.json``: FastAPI's document, completed with what the routes do by hand.

- The submission routes read their bodies as bytes (orjson and top-level checks, not a pydantic
  body: :mod:`msgwatch.collector.handlers`), so FastAPI knows no request model for them: the routes name theirs
  in ``openapi_extra`` (:func:`.common.body_schema`), and :data:`REQUEST_MODELS` are added to the
  document's schemas here.
- FastAPI documents 422 for its parameter validation; the collector answers that 400
  ``bad_query`` (:mod:`.errors`), so 422 becomes 400 with the error body, and FastAPI's
  validation-error schemas go.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from msgwatch.collector import models
from msgwatch.collector.handlers import JSON

REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    models.OpenReportRequest,
    models.AddMeasurementRequest,
    models.BatchRequest,
)


def document(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document plus the request bodies the routes read as bytes."""
    found = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = found.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    error = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in found.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": "Bad Request",
                    "content": {JSON: {"schema": error}},
                }
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return found


def install(app: FastAPI) -> None:
    """Serve :func:`document` (made once, on first use) as ``app``'s ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
