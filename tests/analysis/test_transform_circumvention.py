"""The analysis reads msgwatch's circumvention measurements: rows per stage, the judge's verdicts
recomputed on the reader side, and, through a whole pass, the circumvention scenarios' ground
truth matched from the lake.

tests/data/circumvention/ holds real measurements the lab's circumvention scenarios wrote
(``msgwatch circumvent`` inside the lab, tests/lab/circumvention/test_scenarios.py), one file per
``<scenario>@<phase>@<isp>``.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import random
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from msgwatch.analysis.inputs.jsonl import JsonlSource
from msgwatch.analysis.passes import PassConfig, run_pass
from msgwatch.analysis.transform import RULES_VERSION, Meta, transform
from msgwatch.analysis.verdicts.circumvention import judge
from msgwatch.cli.main import cli
from msgwatch.lab import circumvention_run
from msgwatch.lab.scenario import load_scenario
from tests.analysis.test_pass import table

DATA = Path(__file__).resolve().parents[1] / "data" / "circumvention"
FILES = sorted(DATA.glob("*.jsonl.gz"))


@cache
def lines(path: Path) -> tuple[bytes, ...]:
    return tuple(line for line in gzip.decompress(path.read_bytes()).splitlines() if line.strip())


def uid(line: bytes) -> str:
    return "sha256-" + hashlib.sha256(line).hexdigest()[:32]


def _all() -> list[tuple[Path, bytes]]:
    return [(path, line) for path in FILES for line in lines(path)]


def test_the_fixture_covers_every_transport_and_scenario() -> None:
    found = Counter(orjson.loads(line)["test_keys"]["transport"] for _, line in _all())
    assert set(found) == {"tor", "obfs4", "tor_reach", "openvpn", "wireguard", "shadowsocks",
                          "socks5", "http_connect"}  # fmt: skip
    assert len(FILES) == 8


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name.split(".")[0])
def test_rows_of_each_measurement(path: Path) -> None:
    for number, line in enumerate(lines(path), 1):
        measurement = orjson.loads(line)
        out = transform(measurement, Meta(where=f"{path.name}:{number}", measurement_uid="u"))
        keys = measurement["test_keys"]
        name = keys["entry"]["name"]
        assert out.skipped is None and out.problem is None
        assert {r["service"] for r in out.observations} == {name}
        stages = [r for r in out.observations if r["kind"] == "stage"]
        assert [r["role"] for r in stages] == [s["stage"] for s in keys["stages"]]
        assert [r["failure"] for r in stages] == [s["failure"] for s in keys["stages"]]
        for row, stage in zip(stages, keys["stages"], strict=True):
            if stage["stage"] in ("transfer", "sustain"):
                assert row["bytes_received"] == stage["bytes_received"]
        (boot,) = [r for r in out.observations if r["kind"] == "bootstrap" and r["target"] == name]
        assert boot["failure"] == keys["failure"] and boot["t"] == keys["bootstrap_time"]
        if keys["transport"] == "tor_reach":
            targets = [r for r in out.observations if r["kind"] == "bootstrap"][1:]
            assert len(targets) == len(keys["targets"])
        # the reader side's verdicts are the judge's on this measurement alone
        alone = [(v["service"], v["function"], v["verdict"], v["mechanism"])
                 for v in judge(measurement)]  # fmt: skip
        assert [(v["service"], v["function"], v["verdict"], v["mechanism"])
                for v in out.verdicts] == alone  # fmt: skip
        assert all(v["rules_version"] == RULES_VERSION for v in out.verdicts)
        control = keys["control"]
        expected = None if control is None else control["failure"] is None
        assert all(v["control_ok"] is expected for v in out.verdicts)
        assert all(v["source"] == "msgwatch" for v in out.verdicts)
        for item in keys["through"]:
            if item["measured"] and item.get("replays"):
                function = f"{item['service']}.{item['function']}"
                replays = [r for r in out.observations
                           if r["kind"] == "replay" and r["function"] == function]  # fmt: skip
                assert len(replays) == len(item["replays"])


def test_a_pass_over_the_lab_measurements_matches_each_scenarios_ground_truth(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    source = JsonlSource(FILES)
    report = run_pass(PassConfig(sources=[source], out_dir=out, bucket_seconds=60, workers=1))
    assert report.problems == 0 and not any(k.startswith("unknown_test") for k in report.skipped)
    verdicts = table(out, lake_files(out, "verdicts"))
    by_uid: dict[str, list[dict[str, Any]]] = {}
    for row in verdicts:
        by_uid.setdefault(row["measurement_uid"], []).append(row)
    for path in FILES:
        scenario_name, phase, isp = path.name.split(".")[0].split("@")
        scenario = load_scenario(scenario_name)
        found = [v for line in lines(path) for v in by_uid[uid(line)]]
        rows = circumvention_run.compare(scenario, phase, isp, found)
        missed = [r for r in rows if not r["match"]]
        assert rows and not missed, (path.name, missed)
    aggregates = table(out, lake_files(out, "aggregates"))
    tunnels = {(a["service"], a["function"]) for a in aggregates}
    assert ("wireguard", "tunnel") in tunnels and ("tor-reach", "reachability") in tunnels
    assert ("wireguard", "whatsapp.voice") in tunnels


def lake_files(out: Path, name: str) -> list[str]:
    return [str(p.relative_to(out)) for p in sorted((out / name).rglob("*.parquet"))]


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    junk = [None, True, -1, 2**70, 1e308, "", "x" * 3000, [], {}, [None] * 50, {"a": [1]}]
    if isinstance(value, dict) and depth < 6:
        return {k: (rng.choice(junk) if rng.random() < 0.15 else _mutate(v, rng, depth + 1))
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list) and depth < 6:
        return [rng.choice(junk) if rng.random() < 0.15 else _mutate(v, rng, depth + 1)
                for v in value]  # fmt: skip
    return value


def test_hostile_content_never_raises() -> None:
    rng = random.Random(7)
    measurements = [orjson.loads(line) for _, line in _all()]
    for round_ in range(300):
        m = copy.deepcopy(measurements[round_ % len(measurements)])
        m["test_keys"] = _mutate(m["test_keys"], rng)
        out = transform(m, Meta(where="x:1", measurement_uid="u"))
        assert out.skipped is None
        assert len(out.observations) <= 2000
    m = copy.deepcopy(measurements[0])
    m["test_keys"]["stages"] = [{"stage": "connect", "t0": 0, "t": 1, "failure": None}] * 10_000
    m["test_keys"]["through"] = [{"service": "s", "function": "text", "measured": True}] * 10_000
    out = transform(m, Meta(where="x:1", measurement_uid="u"))
    assert sum(r["kind"] == "stage" for r in out.observations) == 16


def test_analyse_reads_a_folder_of_circumvention_measurements(tmp_path: Path) -> None:
    args = ["analyse", str(tmp_path / "out"), "--jsonl", str(DATA), "--workers", "1", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    answer = orjson.loads(result.output)
    assert answer["measurements"] == len(_all()) and answer["problems"] == 0
    assert answer["skipped"] == {} and answer["verdicts"] > answer["measurements"]
