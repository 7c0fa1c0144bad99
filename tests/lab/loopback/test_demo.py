"""The demo end to end: the real probe against the real mini-Internet, verdicts = ground truth.

Every measurement it produces goes through the format checks (ours and OONI's reader).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from msgwatch.cli.main import cli
from msgwatch.lab.loopback import topology as T
from msgwatch.lab.loopback import unavailable
from tests.format.check import assert_conforms

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:  # type: ignore[type-arg]
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("demo") / "m.jsonl"
    result = CliRunner().invoke(
        cli, ["demo", "--mini", "--json", "--output", str(out), "--timeout", "3"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    measurements = [json.loads(line) for line in Path(out).read_text().splitlines()]
    return data, measurements


def test_every_verdict_matches_the_ground_truth(demo: tuple[dict, list[dict]]) -> None:  # type: ignore[type-arg]
    data, _ = demo
    mismatches = [r for r in data["results"] if not r["match"]]
    assert not mismatches, mismatches
    assert data["matched"] == data["total"] >= 15
    mechanisms = {r["mechanism"] for r in data["results"]}
    assert mechanisms >= {
        "dns.nxdomain", "dns.forged", "tls.cert_invalid", "tls.timeout", "http.blockpage",
        "udp.timeout", None,
    }  # fmt: skip


def test_measurements_conform_to_the_format(demo: tuple[dict, list[dict]]) -> None:  # type: ignore[type-arg]
    data, measurements = demo
    services = {r["service"] for r in data["results"]}
    assert {m["input"] for m in measurements} == services
    assert_conforms(measurements)


def test_evidence_points_at_recorded_transactions(demo: tuple[dict, list[dict]]) -> None:  # type: ignore[type-arg]
    data, measurements = demo
    by_service = {m["input"]: m for m in measurements}
    for row in data["results"]:
        keys = by_service[row["service"]]["test_keys"]
        recorded = {
            e["transaction_id"]
            for name in (
                "queries",
                "tcp_connect",
                "tls_handshakes",
                "requests",
                "msgwatch_udp_exchanges",
            )
            for e in keys[name]
        }
        assert row["evidence"] and set(row["evidence"]) <= recorded, row


def test_a_mismatch_exits_7_and_says_which(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    wrong = dataclasses.replace(T.EXPECTED[0], verdict="blocked", mechanism="tcp.reset")
    monkeypatch.setattr(T, "EXPECTED", (wrong, *T.EXPECTED[1:]))
    out = tmp_path / "m.jsonl"
    result = CliRunner().invoke(
        cli, ["demo", "--mini", "--json", "--output", str(out), "--timeout", "3"]
    )
    assert result.exit_code == 7, result.output
    data = json.loads(result.output)
    assert data["matched"] == data["total"] - 1
    (row,) = [r for r in data["results"] if not r["match"]]
    assert (row["service"], row["function"]) == (wrong.service, wrong.function)
    assert (row["expected"], row["verdict"]) == ("blocked", "ok")
