"""The read API: summaries of the stored measurements, and one measurement as stored.

``GET /api/v1/measurements`` pages through the index (newest first by ``measurement_start_time``,
keyset cursors; :mod:`msgwatch.collector.store.index`); every query parameter is checked, and an
unknown or repeated one is 400 ``bad_query``, so a typo never widens the answer.
``GET /api/v1/measurements/{uid}`` reads one measurement from the archive, with the collector's
``measurement_uid`` set in it. A store that cannot be read answers 503 ``storage_unavailable``.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi import Query as QueryParam
from fastapi.responses import Response

from msgwatch.collector import models
from msgwatch.collector.models import Rejection
from msgwatch.collector.routes.common import collector_of, errors, json_response
from msgwatch.collector.store.base import BadCursor, Query, StoreUnavailable
from msgwatch.collector.summary import FunctionName

logger = logging.getLogger("msgwatch.collector")

router = APIRouter()


@router.get(
    "/api/v1/measurements",
    summary="Summaries of stored measurements, newest first",
    description="Every parameter is checked: an unknown or repeated parameter, or a value "
    "not of its documented form, is 400 `bad_query` (a typo never widens the answer). A "
    "page holds at most `limit` summaries and at most 1 MiB of JSON; when more follow, "
    "`next_cursor` is set.",
    response_model=None,
    responses={200: {"model": models.MeasurementsPage}, **errors(400, 503)},
)
async def list_measurements(
    request: Request,
    service: Annotated[
        str | None, QueryParam(pattern=models.SERVICE_QUERY, description="a catalogue id")
    ] = None,
    function: FunctionName | None = None,
    probe_asn: Annotated[
        str | None, QueryParam(pattern=models.ASN_QUERY, description="AS<n> or <n>")
    ] = None,
    probe_cc: Annotated[
        str | None, QueryParam(pattern=models.CC_QUERY, description="two letters, any case")
    ] = None,
    test_name: Annotated[
        str | None, QueryParam(min_length=1, max_length=models.QUERY_TEXT_LIMIT)
    ] = None,
    since: Annotated[
        str | None,
        QueryParam(
            pattern=models.TIME_QUERY,
            description="on measurement_start_time, inclusive: YYYY-MM-DD or "
            "YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|±hh:mm] (UTC without an offset)",
        ),
    ] = None,
    until: Annotated[
        str | None,
        QueryParam(pattern=models.TIME_QUERY, description="exclusive; as since"),
    ] = None,
    limit: Annotated[int, QueryParam(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None,
        QueryParam(
            pattern=models.CURSOR_QUERY,
            description="next_cursor of a page: <YYYYMMDDhhmmss>~<measurement_uid>, the "
            "position after which the page starts",
        ),
    ] = None,
) -> Response:
    models.check_query_parameters([name for name, _ in request.query_params.multi_items()])
    query = Query(
        service=models.query_text(service, "service"),
        function=function,
        probe_asn=models.query_asn(probe_asn),
        probe_cc=models.query_cc(probe_cc),
        test_name=models.query_text(test_name, "test_name"),
        since=models.query_time(since, "since"),
        until=models.query_time(until, "until"),
        limit=limit,
        cursor=cursor,
    )
    try:
        page = await collector_of(request).store.query(query)
    except BadCursor:
        raise Rejection("bad_query", "the cursor is not one this collector issued") from None
    except StoreUnavailable as exc:
        logger.warning("storage unavailable on query: %s", exc)
        raise Rejection("storage_unavailable", "the index cannot be read") from None
    return json_response({"results": page.results, "next_cursor": page.next_cursor})


@router.get(
    "/api/v1/measurements/{measurement_uid}",
    summary="One stored measurement, as stored, with the collector's measurement_uid",
    description="Raw data: what a probe judged itself (a 0.2.0 measurement's `msgwatch_verdicts`) "
    "is part of it, never the collector's verdict; that is `/api/v1/verdicts`, the analysis's.",
    response_model=None,
    responses={200: {"model": models.Measurement}, **errors(404, 503)},
)
async def get_measurement(
    request: Request, measurement_uid: Annotated[str, PathParam(max_length=256)]
) -> Response:
    try:
        measurement = await collector_of(request).store.get(measurement_uid)
    except StoreUnavailable as exc:
        logger.warning("storage unavailable on get: %s", exc)
        raise Rejection("storage_unavailable", "the archive cannot be read") from None
    if measurement is None:
        raise Rejection("not_found", "no measurement has this uid")
    # the collector's uid, as OONI's collector adds it (one sent by the probe is replaced,
    # as in the export)
    measurement["measurement_uid"] = measurement_uid
    return json_response(measurement)
