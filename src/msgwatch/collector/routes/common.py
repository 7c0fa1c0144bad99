"""What every route uses: the application's :class:`Collector`, the client, the body, the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from msgwatch.collector import models
from msgwatch.collector.handlers import JSON, BodyReader, Collector, read_limited


def json_response(
    value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``value`` as JSON (orjson), with ``status`` and ``headers``."""
    return Response(
        orjson.dumps(value), status_code=status, headers=dict(headers or {}), media_type=JSON
    )


def collector_of(request: Request) -> Collector:
    """The :class:`Collector` of the application serving ``request`` (``app.state.collector``)."""
    collector = request.app.state.collector
    assert isinstance(collector, Collector)
    return collector


def client_of(request: Request) -> str | None:
    """The client's address, as the transport gave it."""
    return request.client.host if request.client else None


def reader(request: Request) -> BodyReader:
    """The request's body, read with a limit (:func:`~msgwatch.collector.handlers.read_limited`)."""

    async def read(limit: int) -> bytes:
        return await read_limited(request.stream(), limit)

    return read


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a body read as bytes: the model it must match."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {JSON: {"schema": ref}}}}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses`` entries: each status answers :class:`~msgwatch.collector.models.ErrorBody`."""
    return {s: {"model": models.ErrorBody} for s in statuses}
