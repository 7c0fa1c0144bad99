"""The dashboard's web app over the fixture observatory, in process (tests/dashboard/client.py):
every page answers with the fixture's ground truth, the security headers, 400/404 on bad input,
never a 500, and hostile strings only as inert text."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgwatch.dashboard.app import CSP, DashboardConfig, create_app
from msgwatch.dashboard.measurements import JsonlMeasurements
from tests.browser import truth
from tests.dashboard import fixture
from tests.dashboard.client import Answer, request

W = truth.WINDOW


@pytest.fixture(scope="module")
def app(observatory_dir: fixture.Observatory) -> Any:
    source = JsonlMeasurements([observatory_dir.measurements])
    return create_app(DashboardConfig(observatory_dir.lake, source))


@pytest.fixture(scope="module")
def lake(observatory_dir: fixture.Observatory) -> Any:
    return observatory_dir.lake


def get(app: Any, url: str, status: int = 200, **kw: Any) -> Answer:
    answer = request(app, url, **kw)
    assert answer.status == status, (url, answer.status, answer.text[:500])
    return answer


def table_rows(html: str, view: str) -> int:
    """The body rows of the page's tables of ``view``."""
    tables = re.findall(rf'<table data-view="{view}">(.*?)</table>', html, re.S)
    return sum(len(re.findall(r"<tr[ >]", t.split("<tbody>", 1)[-1])) for t in tables)


def hostile_uid(lake: Any) -> str:
    source = f"read_parquet('{lake}/verdicts/*/*.parquet', hive_partitioning = true)"
    with duckdb.connect() as con:
        row = con.execute(
            f"SELECT measurement_uid FROM {source} WHERE probe_asn = ? LIMIT 1",
            [fixture.HOSTILE_ASN],
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_overview_shows_every_cell_of_the_window_with_state_as_text(app, lake) -> None:
    html = get(app, f"/?{W}").text
    cells = set(re.findall(r'data-cell="([A-Z]{2})\|([a-z0-9_]+)\|([a-z_]+)"', html))
    assert cells == truth.cells(lake)
    assert table_rows(html, "overview") == len(cells)
    states = re.findall(
        r'data-state="([a-z_]+)" class="cell state-\1">\s*<a href="[^"]+">(\w+)', html
    )
    assert states and all(word for _, word in states)  # every state is also written
    assert f"/network/{fixture.CC}/{fixture.CENSORED}" in html
    assert 'id="filters"' in html and 'name="since" ' in html


def test_network_page_has_heatmap_timeline_and_events(app, lake) -> None:
    html = get(app, f"/network/{fixture.CC}/{fixture.CENSORED}?{W}").text
    assert table_rows(html, "network") == truth.heat_marks(lake, fixture.CENSORED)
    assert 'data-chart="heatmap"' in html and 'data-chart="timeline"' in html
    ids = set(re.findall(r'<tr data-event="([^"]+)"', html))
    network_events = {e["event_id"] for e in truth.events(lake, fixture.CENSORED)}
    assert network_events <= ids
    assert table_rows(html, "events") == len(ids)


def test_events_page_lists_the_fixture_events_and_pages(app, lake) -> None:
    events = truth.events(lake)
    html = get(app, f"/events?{W}").text
    assert set(re.findall(r'<tr data-event="([^"]+)"', html)) == {e["event_id"] for e in events}
    first = get(app, f"/events?{W}&limit=2").text
    assert table_rows(first, "events") == 2
    after = re.search(r'rel="next" href="([^"]+)"', first)
    assert after is not None
    second = get(app, after.group(1).replace("&amp;", "&")).text
    shown = set(re.findall(r'<tr data-event="([^"]+)"', first + second))
    assert len(shown) == 4


def test_event_pages_tell_the_story_with_controls_and_evidence(app, lake) -> None:
    events = truth.events(lake)
    country = next(e for e in events if e["level"] == "country")
    html = get(app, f"/event/{country['event_id']}").text
    assert "DPI" in html and "What worked elsewhere" in html
    members = [e for e in events if e["level"] == "network"]
    for member in members:
        assert f"/event/{member['event_id']}" in html
    assert html.count('data-chart="share"') >= 1
    network = members[0]
    html = get(app, f"/event/{network['event_id']}").text
    links = re.findall(r'href="/measurement/(sha256-[0-9a-f]+)\?t=([^"]+)"', html)
    assert links and len(links) == table_rows(html, "event") > 0
    started = start_times(lake, [uid for uid, _ in links])
    assert all(unquote_plus(t) == started[uid] for uid, t in links)  # the day to read: fast
    uid, t = links[0]
    hinted, plain = (get(app, f"/measurement/{uid}{q}").text for q in (f"?t={t}", ""))
    assert main_of(hinted) == main_of(plain) and "test_keys" in main_of(hinted)
    get(app, f"/measurement/{uid}?t=" + "9" * 65, 400)
    assert "AS65002" in html  # the other network worked at the same time
    assert 'data-export="png"' in html and 'data-export="embed"' in html


def main_of(html: str) -> str:
    return html.split('<main id="main"', 1)[1].split("</main>", 1)[0]


def start_times(lake: Any, uids: list[str]) -> dict[str, str]:
    """The measurements' start times (``YYYY-MM-DD HH:MM:SS``) from the fixture's verdicts."""
    source = f"read_parquet('{lake}/verdicts/*/*.parquet', hive_partitioning = true)"
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT DISTINCT measurement_uid, strftime(measurement_start_time, '%Y-%m-%d %H:%M:%S')"
            f" FROM {source} WHERE list_contains(?, measurement_uid)",
            [uids],
        ).fetchall()
    return {str(uid): str(time) for uid, time in rows}


def test_measurement_page_shows_trace_replays_and_raw(app, lake) -> None:
    uid = truth.uid(lake, fixture.CENSORED, "blocked")
    html = get(app, f"/measurement/{uid}").text
    assert table_rows(html, "measurement") > 0
    assert 'data-chart="replay"' in html
    assert "<details>" in html and "test_keys" in html


def test_charts_export_embed_and_download(app) -> None:
    query = f"cc={fixture.CC}&asn={fixture.CENSORED}&service=whatsapp&function=voice&{W}"
    svg = get(app, f"/chart/share.svg?{query}")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg") and svg.text.count('class="mark') == fixture.HOURS
    assert "content-disposition" not in svg.headers
    download = get(app, f"/chart/share.svg?{query}&download=1")
    assert download.headers["content-disposition"].startswith("attachment;")
    embed = get(app, f"/embed/share?{query}")
    assert "frame-ancestors *" in embed.headers["content-security-policy"]
    assert 'data-chart="share"' in embed.text
    get(app, f"/chart/heatmap.svg?cc={fixture.CC}&asn={fixture.CENSORED}&{W}")
    get(app, f"/chart/timeline.svg?{W}")
    get(app, "/chart/pie.svg", 404)
    get(app, f"/chart/share.svg?cc={fixture.CC}", 400)


@pytest.mark.parametrize("url", ["/", "/events", "/static/dashboard.css", "/nope", "/?since=x"])
def test_security_headers_on_every_answer(app, url: str) -> None:
    answer = request(app, url)
    assert answer.headers["content-security-policy"] == CSP
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"


def test_pages_have_no_inline_script_or_style(app, lake) -> None:
    uid = truth.uid(lake, fixture.CENSORED, "blocked")
    event = truth.events(lake)[0]["event_id"]
    for url in (f"/?{W}", f"/events?{W}", f"/network/AZ/AS65001?{W}", f"/event/{event}",
                f"/measurement/{uid}"):  # fmt: skip
        html = get(app, url).text
        assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/dashboard.js" defer>']
        assert "<style" not in html and " style=" not in html and " on" + "click" not in html
        assert '<a class="skip" href="#main">' in html and '<main id="main"' in html
        assert '<html lang="en">' in html


@pytest.mark.parametrize(
    ("url", "status", "words"),
    [
        ("/?since=2026-99-01", 400, "since"),
        ("/?cc=A1", 400, "cc"),
        ("/events?limit=0", 400, "limit"),
        ("/events?cursor=zz", 400, "cursor"),
        ("/network/az/AS1", 400, "cc"),
        ("/network/AZ/65001", 400, "asn"),
        ("/event/" + "x" * 200, 400, "event_id"),
        ("/event/net-0000", 404, "no event"),
        ("/measurement/unknown-uid", 404, "no measurement"),
        ("/measurement/%3Cscript%3E", 400, "uid"),
        ("/measurement/unknown-uid?t=yesterday", 400, "t:"),
        ("/export/measurement.json?uid=unknown-uid&t=2026-13-45", 400, "t:"),
        ("/chart/replay.svg?uid=unknown-uid&t=%3Cb%3E", 400, "t:"),
        ("/nope", 404, "no such page"),
    ],
)
def test_bad_input_is_a_4xx_with_its_message(app, url: str, status: int, words: str) -> None:
    answer = get(app, url, status)
    assert words in answer.text


def test_only_get_and_head(app) -> None:
    assert request(app, "/", method="HEAD").status == 200
    for method in ("POST", "PUT", "DELETE"):
        assert request(app, "/", method=method).status == 405
        assert request(app, "/static/dashboard.js", method=method).status == 405


def test_hostile_strings_are_escaped(app, lake) -> None:
    uid = hostile_uid(lake)
    html = get(app, f"/measurement/{uid}").text
    assert "<script>window" not in html
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    assert fixture.HOSTILE["long"][:200] in html
    assert 'href="javascript' not in html
    assert "[U+202E]gpj.exe[U+202C]-rtl" in html  # an RTL override is shown, not obeyed
    network = get(app, f"/network/{fixture.CC}/{fixture.HOSTILE_ASN}?{W}").text
    assert "<script>window" not in network


def test_a_missing_lake_is_503_and_mounting_keeps_links_under_the_root(tmp_path, app) -> None:
    empty = create_app(DashboardConfig(tmp_path / "none"))
    assert "no analysis yet" in get(empty, "/", 503).text
    assert "no analysis yet" in get(empty, "/export/overview.json", 503).json()["error"]
    html = get(app, f"/events?{W}", root_path="/dashboard").text
    assert 'href="/dashboard/static/dashboard.css"' in html
    assert 'href="/dashboard/event/' in html


PARAMS = ("since", "until", "cc", "asn", "service", "function", "verdict", "grain", "limit",
          "cursor", "uid", "index", "id", "download")  # fmt: skip
URLS = ("/", "/events", "/export/events.json", "/export/overview.csv", "/feed.json", "/feed.atom",
        "/chart/timeline.svg", "/chart/replay.svg", "/export/event.csv", "/embed/heatmap")  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    url=st.sampled_from(URLS),
    params=st.lists(st.tuples(st.sampled_from(PARAMS), st.text(max_size=80)), max_size=4),
)
def test_no_query_string_makes_a_500(app, url: str, params: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode

    answer = request(app, url + "?" + urlencode(params))
    assert answer.status < 500, (url, params, answer.text[:300])
    assert b"<script>" not in answer.body.replace(b'<script src="/static/dashboard.js" defer>', b"")


def test_the_collector_mounts_the_dashboard(tmp_path, observatory_dir) -> None:
    from tests.collector.liveserver import make_settings, thread_server

    settings = make_settings(tmp_path / "data", analysis_dir=observatory_dir.lake, dashboard=True)
    with thread_server(settings) as server:
        client = server.client()
        try:
            page = client.get(f"/dashboard/events?{W}")
            css = client.get("/dashboard/static/dashboard.css")
            api = client.get("/health")
        finally:
            client.close()
    assert page.status == 200 and page.headers["content-security-policy"] == CSP
    assert b'href="/dashboard/event/' in page.body
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_store_measurements_reads_the_collectors_store() -> None:
    import anyio
    import anyio.to_thread

    from msgwatch.collector.dashboard import StoreMeasurements

    class Store:
        async def get(self, uid: str) -> dict[str, Any] | None:
            return {"measurement_uid": uid} if uid == "known" else None

    class Collector:
        opened: Any = Store()

    source = StoreMeasurements(Collector())  # type: ignore[arg-type]

    async def read(uid: str) -> Any:
        return await anyio.to_thread.run_sync(source.get, uid)

    assert anyio.run(read, "known") == {"measurement_uid": "known"}
    assert anyio.run(read, "other") is None
    Collector.opened = None
    assert anyio.run(read, "known") is None


def test_a_bug_is_a_500_with_a_fixed_message_and_the_headers(lake) -> None:
    class Broken:
        def get(self, uid: str) -> dict[str, Any] | None:
            raise RuntimeError("secret detail")

    uid = truth.uid(lake, fixture.CENSORED, "blocked")
    app = create_app(DashboardConfig(lake, Broken()))
    answer = request(app, f"/measurement/{uid}", reraise=False)
    assert answer.status == 500 and "secret detail" not in answer.text
    assert answer.headers["content-security-policy"] == CSP


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(
        (
            "/event/{}",
            "/measurement/{}",
            "/network/{}/AS1",
            "/network/AZ/{}",
            "/embed/{}",
            "/chart/{}.svg",
            "/export/{}.csv",
            "/static/{}",
        )
    ),
    value=st.text(min_size=1, max_size=300),
)
def test_no_path_makes_a_500(app, route: str, value: str) -> None:
    from urllib.parse import quote

    answer = request(app, route.format(quote(value, safe="")))
    assert answer.status < 500, (route, value, answer.text[:300])


def test_the_lake_is_warmed_in_the_background_once_per_committed_state(tmp_path, caplog) -> None:
    import threading

    from msgwatch.dashboard.pages_warm import Warmer

    state = tmp_path / "state.json"
    calls: list[str] = []
    release = threading.Event()

    def warm() -> None:
        calls.append(state.read_text())
        release.wait(10)
        if state.read_text() == "bad":
            raise RuntimeError("a pass replaced mid-read")

    warmer = Warmer(tmp_path, warm=warm)
    warmer.poke()  # no committed state: nothing to warm
    assert warmer.wait(10) and calls == []
    state.write_text("one")
    warmer.poke()
    warmer.poke()  # a running warming is not waited for, nor started twice
    assert not warmer.wait(0.05)
    release.set()
    assert warmer.wait(10) and calls == ["one"]
    warmer.poke()  # the same state: warmed already
    assert warmer.wait(10) and calls == ["one"]
    state.write_text("bad")
    warmer.poke()
    assert warmer.wait(10) and calls == ["one", "bad"]
    assert "warming" in caplog.text  # logged, never raised


def test_create_app_warms_and_the_views_poke(observatory_dir, monkeypatch) -> None:
    from msgwatch.dashboard.data import Observatory

    warmed: list[object] = []
    monkeypatch.setattr(Observatory, "warm", lambda self: warmed.append(self))
    app = create_app(DashboardConfig(observatory_dir.lake))
    assert app.state.warmer.wait(30) and len(warmed) == 1
    get(app, f"/?{W}")
    assert app.state.warmer.wait(30) and len(warmed) == 1  # the same committed state


def test_probes_unknown_are_a_dash_not_zero(app) -> None:
    html = get(app, f"/?{W}").text
    body = html.split('<table data-view="overview">', 1)[1].split("</table>", 1)[0]
    probes = [row.split("<td>")[6].split("</td>")[0] for row in body.split("<tr>")[2:]]
    assert probes and all(p == "–" or int(p) > 0 for p in probes), probes
