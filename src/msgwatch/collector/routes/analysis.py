"""The analysis's read API: events, aggregates, observations and verdicts of the last committed pass.

The collector serves what the analysis wrote into ``--analysis-dir`` (by its own scheduled pass,
``collector/analyser.py``, or by another process: ``msgwatch analyse OUT --archive DATA``), read
through :class:`msgwatch.analysis.query.Lake`: only the files of the committed pass, so a pass being
written is invisible. These are the verdicts the collector presents, recomputed on the reader side
and stamped with the rules' version; the probe's own judgement is never served as one.

Rules:

- ``GET /api/v1/events``, ``/aggregates``, ``/observations``, ``/verdicts``: rows of the tables of
  :mod:`msgwatch.analysis.schema` (times ``YYYY-MM-DD HH:MM:SS`` UTC, JSON-valued columns as JSON
  text), a page of at most ``limit`` (1-1000) rows and ``next_cursor`` (opaque: the Lake's) when
  more follow; every answer carries ``rules_version``, ``schema_version`` and ``pass_number``.
- Every query parameter is checked as ``/api/v1/measurements`` does: an unknown or repeated one, a
  value not of its documented form, a cursor the analysis did not issue: 400 ``bad_query``.
- No analysis directory, or no committed pass in it: 503 ``analysis_unavailable``
  (``Retry-After``), as when the lake cannot be read.
- DuckDB runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi import Query as QueryParam
from fastapi.responses import Response
from pydantic import BaseModel, Field, create_model
from starlette.concurrency import run_in_threadpool

from msgwatch.analysis import schema
from msgwatch.collector import models
from msgwatch.collector.models import Rejection
from msgwatch.collector.routes.common import collector_of, errors, json_response
from msgwatch.measurement.vocab import Verdict

logger = logging.getLogger("msgwatch.collector")

router = APIRouter()

RETRY_AFTER = {"Retry-After": "60"}
_TYPES: dict[str, tuple[type, str | None]] = {
    "VARCHAR": (str, None),
    "TIMESTAMP": (str, "UTC, YYYY-MM-DD HH:MM:SS"),
    "DATE": (str, "YYYY-MM-DD"),
    "DOUBLE": (float, None),
    "BIGINT": (int, None),
    "INTEGER": (int, None),
    "BOOLEAN": (bool, None),
}


def _page_model(name: str, columns: schema.Columns, doc: str) -> type[BaseModel]:
    """The page model of a table: its rows (one field per column, all nullable) and the stamps."""
    fields: dict[str, Any] = {}
    for column, kind in columns:
        python, description = _TYPES[kind]
        fields[column] = (python | None, Field(default=None, description=description))
    row: type[BaseModel] = create_model(f"{name}Row", __doc__=doc, **fields)
    page: type[BaseModel] = create_model(
        f"{name}Page",
        results=(list[row], ...),  # type: ignore[valid-type]
        next_cursor=(str | None, Field(description="the next page's cursor; null: the last page")),
        rules_version=(str | None, Field(description="the verdict rules that judged these rows")),
        schema_version=(str | None, Field(description="docs/spec/analysis.md's version")),
        pass_number=(int | None, Field(description="the committed pass served")),
    )
    return page


EventsPage = _page_model("Event", schema.EVENT_COLUMNS, "A blocking event (docs/method/events.md).")
AggregatesPage = _page_model("Aggregate", schema.AGGREGATE_COLUMNS, "Counts of one bucket.")
ObservationsPage = _page_model("Observation", schema.OBSERVATION_COLUMNS, "One network operation.")
VerdictsPage = _page_model(
    "Verdict", schema.VERDICT_COLUMNS, "One (measurement, service, function)."
)

COMMON = frozenset(
    ("since", "until", "probe_cc", "probe_asn", "service", "function", "limit", "cursor")
)
PARAMETERS = {
    "events": COMMON | {"verdict", "level"},
    "aggregates": COMMON | {"verdict"},
    "observations": COMMON | {"measurement_uid"},
    "verdicts": COMMON | {"verdict", "measurement_uid"},
}

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_TIME = "YYYY-MM-DD or YYYY-MM-DD[T ]HH:MM[:SS[.f]][Z|±hh:mm] (UTC without an offset)"


def _common(
    since: Annotated[str | None, QueryParam(pattern=models.TIME_QUERY, description=_TIME)] = None,
    until: Annotated[
        str | None, QueryParam(pattern=models.TIME_QUERY, description="exclusive; as since")
    ] = None,
    probe_cc: Annotated[
        str | None, QueryParam(pattern=models.CC_QUERY, description="two letters, any case")
    ] = None,
    probe_asn: Annotated[
        str | None, QueryParam(pattern=models.ASN_QUERY, description="AS<n> or <n>")
    ] = None,
    service: Annotated[
        str | None, QueryParam(pattern=_NAME, description="a catalogue id, or an OONI test's")
    ] = None,
    function: Annotated[
        str | None, QueryParam(pattern=_NAME, description="text, voice, …, reachability")
    ] = None,
    limit: Annotated[int, QueryParam(ge=1, le=1000)] = 100,
    cursor: Annotated[
        str | None,
        QueryParam(min_length=1, max_length=1024, description="next_cursor of a page (as issued)"),
    ] = None,
) -> dict[str, Any]:
    """The parameters every table takes, normalised (``Filters``' keys, and limit and cursor)."""
    return {
        "since": _moment(models.query_time(since, "since")),
        "until": _moment(models.query_time(until, "until")),
        "probe_cc": models.query_cc(probe_cc),
        "probe_asn": models.query_asn(probe_asn),
        "service": service,
        "function": function,
        "limit": limit,
        "cursor": cursor,
    }


Common = Annotated[dict[str, Any], Depends(_common)]
VerdictFilter = Annotated[Verdict | None, QueryParam(description="the analysis's verdict")]
Level = Annotated[Literal["network", "country"] | None, QueryParam()]
Uid = Annotated[str | None, QueryParam(min_length=1, max_length=128)]


def _moment(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


_EVENTS_NOTE = (
    " An event is a span: `since` keeps the events going on at or after it (ongoing, or ended"
    " after it), `until` those that started before it; `probe_asn`, `service` and `function` also"
    " keep the country events whose members list that network, service or function."
)


def _documented(table: str, page: type[BaseModel], summary: str, note: str = "") -> dict[str, Any]:
    return {
        "summary": summary,
        "description": f"Rows of the analysis's `{table}` table (docs/spec/analysis.md), from "
        f"its last committed pass.{note} Every parameter is checked: an unknown or repeated one, or a "
        "value not of its documented form, is 400 `bad_query`. 503 `analysis_unavailable` "
        "when the collector serves no analysis or no pass is committed yet.",
        "response_model": None,
        "responses": {200: {"model": page}, **errors(400, 503)},
    }


@router.get(
    "/api/v1/events",
    **_documented("events", EventsPage, "Blocking events, newest first", _EVENTS_NOTE),
)
async def list_events(
    request: Request, common: Common, verdict: VerdictFilter = None, level: Level = None
) -> Response:
    return await _answer(request, "events", {**common, "verdict": verdict, "level": level})


@router.get(
    "/api/v1/aggregates",
    **_documented("aggregates", AggregatesPage, "Counts per bucket, network, service, function"),
)
async def list_aggregates(
    request: Request, common: Common, verdict: VerdictFilter = None
) -> Response:
    return await _answer(request, "aggregates", {**common, "verdict": verdict})


@router.get(
    "/api/v1/observations",
    **_documented("observations", ObservationsPage, "Network operations, newest first"),
)
async def list_observations(
    request: Request, common: Common, measurement_uid: Uid = None
) -> Response:
    return await _answer(request, "observations", {**common, "measurement_uid": measurement_uid})


@router.get(
    "/api/v1/verdicts",
    **_documented("verdicts", VerdictsPage, "The analysis's verdicts, newest first"),
)
async def list_verdicts(
    request: Request, common: Common, verdict: VerdictFilter = None, measurement_uid: Uid = None
) -> Response:
    query = {**common, "verdict": verdict, "measurement_uid": measurement_uid}
    return await _answer(request, "verdicts", query)


async def _answer(request: Request, table: str, query: dict[str, Any]) -> Response:
    names = [name for name, _ in request.query_params.multi_items()]
    models.check_query_parameters(names, PARAMETERS[table])
    directory = collector_of(request).settings.analysis_dir
    if directory is None:
        detail = "this collector serves no analysis (collector serve --analysis-dir)"
        raise Rejection("analysis_unavailable", detail, headers=RETRY_AFTER)
    return json_response(await run_in_threadpool(read_page, directory, table, query))


def read_page(directory: Path, table: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """One page of ``table`` from the lake in ``directory``, with its stamps (a Rejection when
    there is none, or the cursor is not the lake's)."""
    import duckdb

    from msgwatch.analysis.query import Filters, Lake, LakeMissing

    filters = Filters(**{k: v for k, v in query.items() if k not in ("limit", "cursor")})
    try:
        lake = Lake(directory)
        page = getattr(lake, table)(filters, limit=query["limit"], cursor=query["cursor"])
    except LakeMissing:
        detail = "no analysis pass is committed yet"
        raise Rejection("analysis_unavailable", detail, headers=RETRY_AFTER) from None
    except Exception as exc:  # (the Lake re-reads a state whose files a newer pass removed)
        if query["cursor"] is not None and isinstance(exc, ValueError | duckdb.DataError):
            # a cursor that does not decode, or decodes to values that are not a key
            raise Rejection("bad_query", "the cursor is not one this analysis issued") from None
        logger.warning("the analysis in %s cannot be read: %s", directory, exc)
        detail = "the analysis cannot be read"
        raise Rejection("analysis_unavailable", detail, headers=RETRY_AFTER) from None
    state = lake.state
    return {
        "results": page.results,
        "next_cursor": page.next_cursor,
        "rules_version": state.get("rules_version"),
        "schema_version": state.get("schema_version"),
        "pass_number": state.get("pass"),
    }
