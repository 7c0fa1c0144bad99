"""``msgwatch report``: a real lake (tests.collector.analysis_data: Skype's calls on AS64512
blocked after 64 working hours, two network events and a country event), the file it writes,
and its exit statuses: a missing analysis and an unknown event are explained (2), a filter it
cannot read is a usage error of its option (2), an output it cannot write is 4. And what the demo
keeps of the lab timeline's run for the report and the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from msgwatch.analysis.inputs import Item
from msgwatch.analysis.query import Filters, Lake
from msgwatch.cli.main import cli
from msgwatch.cli.report import keep_story
from msgwatch.collector.store.feed import ArchiveSource
from msgwatch.dashboard.measurements import JsonlMeasurements
from tests.cli.demo_stub import stub_lab_runs
from tests.collector.analysis_data import LAB, analysed
from tests.collector.test_feed import store


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return analysed(tmp_path_factory.mktemp("report-cli"))


def report(*args: str) -> Result:
    return CliRunner().invoke(cli, ["report", *args])


def events_in(document: str) -> list[str]:
    return re.findall(r'<section class="event"[^>]*data-event="([^"]*)"', document)


def test_a_period_report(lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = report("--analysis-dir", str(lake), "--since", "2026-05-20", "--until", "2026-05-24",
                    "--cc", "AZ", "--output", str(out), "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip())["output"] == str(out)
    held = Lake(lake).events(Filters(), limit=100).results
    assert len(held) == 3
    assert sorted(events_in(out.read_text())) == sorted(e["event_id"] for e in held)


def test_a_report_of_one_event(lake: Path, tmp_path: Path) -> None:
    network = Lake(lake).events(Filters(level="network"), limit=100).results[0]
    out = tmp_path / "event.html"
    result = report(
        "--analysis-dir", str(lake), "--event", network["event_id"], "--output", str(out)
    )
    assert result.exit_code == 0, result.output
    assert events_in(out.read_text()) == [network["event_id"]]
    assert str(out) in result.stdout


def test_no_analysis_is_explained(tmp_path: Path) -> None:
    for where in (tmp_path, tmp_path / "missing"):
        result = report("--analysis-dir", str(where), "--output", str(tmp_path / "r.html"))
        assert result.exit_code == 2
        assert "holds no analysis (run msgwatch analyse first)" in result.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_lake_without_events(tmp_path: Path) -> None:
    from msgwatch.analysis.inputs.jsonl import jsonl_sources
    from msgwatch.analysis.passes import PassConfig, run_pass

    quiet = tmp_path / "quiet"
    run_pass(PassConfig(sources=jsonl_sources([LAB]), out_dir=quiet, workers=1))
    out = tmp_path / "r.html"
    assert report("--analysis-dir", str(quiet), "--output", str(out)).exit_code == 0
    document = out.read_text()
    assert "The analysis found no blocking event in this scope." in document
    assert events_in(document) == [] and 'data-view="overview"' in document


def test_an_unknown_event_is_explained(lake: Path, tmp_path: Path) -> None:
    result = report(
        "--analysis-dir", str(lake), "--event", "net-0000", "--output", str(tmp_path / "r.html")
    )
    assert result.exit_code == 2
    assert "no event 'net-0000'" in result.stderr
    hostile = report("--analysis-dir", str(lake), "--event", "<script>", "--output", "r.html")
    assert hostile.exit_code == 2 and "Invalid value for --event" in hostile.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--cc", "Azerbaijan"), ("--asn", "65001x"), ("--since", "2026-13-01"), ("--until", "May"), ("--verdict", "bad"),
     ("--service", "<script>")],
)  # fmt: skip
def test_a_filter_it_cannot_read_is_a_usage_error(
    lake: Path, tmp_path: Path, option: str, value: str
) -> None:
    result = report(
        "--analysis-dir", str(lake), option, value, "--output", str(tmp_path / "r.html")
    )
    assert result.exit_code == 2
    assert f"Invalid value for {option}: " in result.stderr


def test_inconsistent_options_are_usage_errors(lake: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "r.html")
    backwards = report(
        "--analysis-dir",
        str(lake),
        "--since",
        "2026-05-22",
        "--until",
        "2026-05-21",
        "--output",
        out,
    )
    assert backwards.exit_code == 2 and "until must be after since" in backwards.stderr
    both = report("--analysis-dir", str(lake), "--event", "net-1", "--cc", "AZ", "--output", out)
    assert both.exit_code == 2 and "--event reports one event" in both.stderr
    missing = report("--analysis-dir", str(lake))
    assert missing.exit_code == 2 and "--output" in missing.stderr


def test_an_output_it_cannot_write(lake: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = report("--analysis-dir", str(lake), "--output", str(blocker / "r.html"))
    assert result.exit_code == 4
    assert "cannot write" in result.stderr


def test_the_demo_keeps_the_timeline_analysis_and_the_collected_measurements(
    lake: Path, tmp_path: Path
) -> None:
    data = tmp_path / "collector"
    store(data, [[0, 1, 2], [3]])
    run = {"analysis_dir": str(lake), "data_dir": str(data)}
    measurements = tmp_path / "out" / "timeline.jsonl"
    measurements.parent.mkdir()
    for _ in range(2):  # a second demo replaces the first one's analysis
        kept = keep_story(run, measurements)
        assert kept == {
            "analysis_dir": str(tmp_path / "out" / "timeline-analysis"),
            "collected": str(tmp_path / "out" / "timeline-collected.jsonl"),
        }
    held = Lake(lake).events(Filters(), limit=100).results
    assert Lake(Path(kept["analysis_dir"])).events(Filters(), limit=100).results == held
    uids = [i.measurement_uid for i in ArchiveSource(data).read(None) if isinstance(i, Item)]
    assert len(uids) == 4
    collected = JsonlMeasurements([Path(kept["collected"])])
    for uid in uids:
        found = collected.get(uid or "")
        assert found is not None and found["measurement_uid"] == uid
    (tmp_path / "out" / "other-analysis").mkdir()
    with pytest.raises(FileExistsError):  # never removes a directory that is not a lake
        keep_story(run, tmp_path / "out" / "other.jsonl")


def test_the_demo_ends_with_the_report_and_the_dashboard_command(
    monkeypatch: pytest.MonkeyPatch, lake: Path, tmp_path: Path
) -> None:
    """``msgwatch demo`` (its lab runs stubbed, as tests/lab/test_timeline_compare.py does):
    the timeline's report is written beside its measurements and the serve command printed."""
    timeline = {"bucket_seconds": 60, "phases": [], "rows": [], "matched": 0, "total": 0,
                "events": [], "stories": [], "analysis_dir": str(lake)}  # fmt: skip

    stub_lab_runs(monkeypatch, tmp_path, timeline)
    result = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    story = tmp_path / "az-2017-timeline-story.html"
    assert len(events_in(story.read_text())) == 3
    flat = " ".join(result.output.split())
    assert f"The story, as a report to publish: {story}" in flat
    measurements = tmp_path / "az-2017-timeline.jsonl"
    command = f"msgwatch dashboard serve --analysis-dir {lake} --measurements {measurements}"
    assert f"See it in the dashboard: {command}" in flat
