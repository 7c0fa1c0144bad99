"""The events feeds: ``/feed.atom`` (Atom 1.0, RFC 4287) and ``/feed.json`` (JSON Feed 1.1), so that
a newsroom subscribes to "a new blocking event in my country".

Rules:

- A feed holds the newest :data:`FEED_SIZE` events (newest start first) of the observatory's
  window, filtered by the page filters (``cc``, ``asn``, ``service``, ``function``, …).
- An entry's id is stable: ``urn:msgwatch:event:<event_id>`` (the analysis's id, the same on every
  host and every pass); its link is absolute, on the request's base URL.
- The Atom document is built with :mod:`xml.etree.ElementTree` (it escapes); characters XML 1.0
  cannot carry are removed from every text first. Times are RFC 3339 UTC.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from msgwatch.dashboard.filters import ViewFilters
from msgwatch.dashboard.model import EventRow
from msgwatch.dashboard.pages_base import (
    base_url,
    blocking,
    config_of,
    filters_of,
    now_text,
    observatory,
)

FEED_SIZE = 50
ATOM = "http://www.w3.org/2005/Atom"
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def clean(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot carry."""
    return _NOT_XML.sub("", text)


def rfc3339(lake_time: str) -> str:
    """A lake time (``YYYY-MM-DD HH:MM:SS``) as RFC 3339 UTC."""
    return lake_time[:19].replace(" ", "T") + "Z"


def entry_id(event: EventRow) -> str:
    return f"urn:msgwatch:event:{event.event_id}"


def title_of(event: EventRow) -> str:
    """A one-line title: what, where."""
    what = " ".join(x for x in (event.service, event.function) if x) or "services"
    return f"{what} {event.verdict} on {event.probe_asn or event.probe_cc}"


def updated_of(event: EventRow) -> str:
    return rfc3339(event.end or event.start)


def _events(request: Request) -> tuple[list[EventRow], ViewFilters]:
    f = filters_of(request)
    rows, _ = observatory(request).events(f, FEED_SIZE)
    return rows, f


def atom_document(request: Request, events: list[EventRow], f: ViewFilters) -> bytes:
    """The Atom 1.0 feed of ``events``."""
    base = base_url(request)
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed")

    def add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: clean(v) for k, v in attrs.items()})
        if text is not None:
            element.text = clean(text)
        return element

    query = f.query_string()
    add(feed, "id", f"urn:msgwatch:feed:events{query}")
    add(feed, "title", f"{config_of(request).title}: blocking events {query}".strip())
    add(feed, "updated", max((updated_of(e) for e in events), default=now_text()))
    add(feed, "link", rel="self", href=f"{base}/feed.atom{query}")
    add(feed, "link", rel="alternate", type="text/html", href=f"{base}/events{query}")
    author = add(feed, "author")
    add(author, "name", "msgwatch")
    add(feed, "generator", "msgwatch")
    for event in events:
        entry = add(feed, "entry")
        add(entry, "id", entry_id(event))
        add(entry, "title", title_of(event))
        add(entry, "published", rfc3339(event.start))
        add(entry, "updated", updated_of(event))
        add(entry, "link", rel="alternate", type="text/html", href=f"{base}/event/{event.event_id}")
        add(entry, "summary", event.story, type="text")
        for term in (event.probe_cc, event.probe_asn, event.service, event.function, event.verdict):
            if term:
                add(entry, "category", term=term)
    document: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return document


def json_feed(request: Request, events: list[EventRow], f: ViewFilters) -> dict[str, Any]:
    """The JSON Feed 1.1 of ``events``."""
    base, query = base_url(request), f.query_string()
    return {
        "version": "https://jsonfeed.org/version/1.1",
        "title": f"{config_of(request).title}: blocking events {query}".strip(),
        "home_page_url": f"{base}/events{query}",
        "feed_url": f"{base}/feed.json{query}",
        "items": [
            {
                "id": entry_id(event),
                "url": f"{base}/event/{event.event_id}",
                "title": title_of(event),
                "content_text": event.story,
                "date_published": rfc3339(event.start),
                "date_modified": updated_of(event),
                "tags": [
                    t for t in (event.probe_cc, event.probe_asn, event.service, event.function) if t
                ],
                "_msgwatch": {
                    "event_id": event.event_id,
                    "level": event.level,
                    "verdict": event.verdict,
                    "mechanism": event.mechanism,
                    "ongoing": event.ongoing,
                    "confidence": event.confidence,
                },
            }
            for event in events
        ],
    }


async def atom_feed(request: Request) -> Response:
    events, f = await blocking(_events, request)
    return Response(atom_document(request, events, f), media_type="application/atom+xml")


async def json_feed_view(request: Request) -> Response:
    events, f = await blocking(_events, request)
    body = orjson.dumps(json_feed(request, events, f))
    return Response(body, media_type="application/feed+json")
