"""Downstream replays in the lab: the helper's own call traffic, policed on the way down only.

Scenario ``calls-download-policed``: ISP 1 polices UDP from abroad on 3478 (``police``,
``direction = "down"``). The helper sends every datagram of the downstream pairs, and a share of
them does not arrive; the verdict's explanation says "download" from that evidence. ISP 2 is
unfiltered: what the helper sends arrives, give or take what a busy machine's kernel drops (no
exact count: the lab's veths and the probe's socket may drop a datagram under load, which is not
the path's doing and stays under the 10 % that makes a direction).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.lab.run import run_scenario
from msgwatch.lab.scenario import load_scenario
from tests.lab.conftest import lab_unavailable

pytestmark = [pytest.mark.netns, pytest.mark.timeout(300)]


def test_downstream_pair_and_the_download_direction(tmp_path: Path) -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    run = run_scenario(load_scenario("calls-download-policed"), tmp_path)
    assert run.matched == len(run.rows)
    for phase in run.runs:
        whatsapp = next(m for m in phase.measurements if m["input"] == "whatsapp")
        keys = whatsapp["test_keys"]
        for function in ("voice", "video"):
            down = [r for r in keys["msgwatch_replays"]
                    if r["profile"] == function and r.get("direction") == "down"]  # fmt: skip
            roles = sorted(r["role"] for r in down)
            # Two rounds of the pair, the second as the deadline allows.
            assert set(roles) == {"replay_down_control", "replay_down_original"}
            assert len(roles) <= 4
            for r in down:
                # The helper sent all it announced, on the first call port, from its own count.
                assert r["send"]["packets"] == r["sent_packets"] > 0 and r["port"] == 3478
                assert r["helper"]["originated"]["tx_packets"] == r["sent_packets"]
                assert r["helper"]["upstream_loss"] is None
                # The probe's own drops are counted apart from the path's.
                assert {"socket_drops", "queue_drops", "cut"} <= set(r["probe"])
                if phase.isp == "isp2":
                    assert r["helper"]["downstream_loss"] < 0.1
            if phase.isp == "isp1":
                originals = [r for r in down if r["role"] == "replay_down_original"]
                lost = sum(r["sent_packets"] - r["received_packets"] for r in originals)
                assert lost >= 0.1 * sum(r["sent_packets"] for r in originals)
            (verdict,) = [v for v in judge(whatsapp) if v["function"] == function]
            if phase.isp == "isp1":
                assert verdict["explanation"].endswith("(download).")
                assert "on the way to the test helper" not in verdict["explanation"]
            else:
                assert verdict["verdict"] == "ok"
