"""What the export controls of a page download, clicked in Chromium and parsed: CSV, JSON (the
app's document: view, filters, columns, rows), SVG as XML (its marks and text), PNG by its
signature and header."""

from __future__ import annotations

import csv
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

PNG = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def download(page, control) -> bytes:
    with page.expect_download() as info:
        control.click()
    return Path(info.value.path()).read_bytes()


def table_rows(page, view: str) -> int:
    return int(page.locator(f'table[data-view="{view}"] tbody tr').count())


def parse(kind: str, body: bytes) -> list[dict[str, str]]:
    if kind == "csv":
        return list(csv.DictReader(io.StringIO(body.decode("utf-8"))))
    document = json.loads(body)
    assert set(document) >= {"view", "filters", "columns", "rows"}
    rows: list[dict[str, str]] = document["rows"]
    return rows


def svg_marks(body: bytes) -> tuple[int, str]:
    root = ElementTree.fromstring(body)
    assert root.tag == f"{SVG}svg" and root.get("viewBox")
    marks = [e for e in root.iter() if "mark" in (e.get("class") or "").split()]
    text = " ".join(t.strip() for t in root.itertext())
    return len(marks), text


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == PNG and body[12:16] == b"IHDR"
    width, height = struct.unpack(">II", body[16:24])
    return width, height


def table_exports(page, expected: Callable[[str], int | None] = lambda view: None) -> None:
    """Every CSV/JSON export link downloads the rows of its table (and ``expected(view)`` rows
    when that is not None)."""
    links = page.locator("a[data-export=csv], a[data-export=json]").all()
    assert links, "the page has no table export"
    views = set()
    for link in links:
        kind = str(link.get_attribute("data-export"))
        path = urlsplit(str(link.get_attribute("href"))).path
        view = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert path == f"/export/{view}.{kind}"
        rows = parse(kind, download(page, link))
        views.add(view)
        if page.locator(f'table[data-view="{view}"]').count():
            assert len(rows) == table_rows(page, view), (view, kind)
        counted = expected(view)
        if counted is not None:
            assert len(rows) == counted, (view, kind)
    tables = page.eval_on_selector_all("table[data-view]", "ts => ts.map(t => t.dataset.view)")
    assert set(tables) <= views  # every table has its exports


def chart_exports(page) -> list[tuple[str, int, str]]:
    """Every chart has its SVG, PNG and embed controls; the first chart of each kind downloads
    an SVG holding its marks, caption and origin and a PNG at least its size (the others are
    drawn by the same code). Returns (kind, marks, embed link) of the charts downloaded."""
    done: list[tuple[str, int, str]] = []
    for figure in page.locator("figure.chart").all():
        kind = str(figure.get_attribute("data-chart"))
        svg, png = figure.locator("a[data-export=svg]"), figure.locator("button[data-export=png]")
        embed = figure.locator("a[data-export=embed]")
        assert svg.count() == png.count() == embed.count() == 1, kind
        if kind in {k for k, _, _ in done}:
            continue
        shown = figure.locator("svg .mark").count()
        caption = figure.locator("figcaption").inner_text().strip()
        count, text = svg_marks(download(page, svg))
        assert count == shown, kind
        assert "msgwatch" in text and "n = " in text  # origin and sample size travel with it
        assert caption.split(" · ")[0] in text
        width = int(float(str(figure.locator("svg").first.get_attribute("width"))))
        png_width, png_height = png_size(download(page, png))
        assert png_width >= width and png_height > 0
        done.append((kind, shown, str(embed.get_attribute("href"))))
    return done
