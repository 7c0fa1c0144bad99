"""``POST /api/v1/submit``: msgwatch's batch submission, item by item.

Up to 500 measurements, each with its idempotency key; each is accepted or refused on its own
(the answer's ``results``, in order), and the request fails as a whole only for what concerns it
all (authorisation, rate limit, size, encoding, storage). The other hot route: the fast path
usually serves it, with the same handler (:func:`~msgwatch.collector.handlers.submit_batch`).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from msgwatch.collector import models
from msgwatch.collector.handlers import BATCH_ROUTE, submit_batch
from msgwatch.collector.routes.common import (
    body_schema,
    client_of,
    collector_of,
    errors,
    json_response,
    reader,
)

router = APIRouter()


@router.post(
    BATCH_ROUTE,
    summary="Submit up to 500 measurements, accepted or refused item by item",
    response_model=None,
    responses={200: {"model": models.BatchResponse}, **errors(400, 401, 413, 429, 503)},
    openapi_extra=body_schema(models.BatchRequest),
)
async def batch_route(request: Request) -> Response:
    answer = await submit_batch(
        collector_of(request), request.headers, reader(request), client_of(request)
    )
    return json_response(answer)
