"""Measurements for the validator's tests: the committed demo run brought to the current version,
with one entry of every msgwatch key the demo does not exercise (replays, helper views,
throughput, application handshakes), each as docs/spec/ts-msgwatch-service.md describes it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from msgwatch.measurement.envelope import EXTENSIONS, TEST_VERSION

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "data" / "minilab-demo.jsonl"
OONI = Path("/work/shared/ooni-samples/real.jsonl")  # as in tests/collector: not in the repository

B64 = {"format": "base64", "data": "AAEC"}
INTERVAL = {"t": 0.0, "tx_packets": 1, "tx_bytes": 100, "rx_packets": 1, "rx_bytes": 100}
REPLAY: dict[str, Any] = {
    "transaction_id": 90, "role": "replay_original", "profile": "voice", "variant": "original",
    "marker": "whatsapp", "port": 3478, "address": "198.18.0.9:3478", "transport": "udp",
    "round": 1, "attempt": 1, "sent_packets": 10, "sent_bytes": 1000, "received_packets": 9,
    "received_bytes": 900, "loss": 0.1, "jitter_ms": 1.5, "marked_sent": 2, "marked_received": 2,
    "signature_sent": 0, "signature_received": 0, "intervals": [INTERVAL],
    "probe": {"monitored": True, "loop_lag": 0.001, "stalled": 0.0, "late_sends": 0,
              "send_lag": 0.0, "socket_drops": 0, "queue_drops": 0, "listened": 0.5, "cut": False},
    "failure": None, "t0": 1.0, "t": 3.0,
    "helper": {"transaction_id": 91, "failure": None, "rx_packets": 10, "rx_bytes": 1000,
               "tx_packets": 10, "tx_bytes": 1000, "interval": 0.1, "intervals": [],
               "truncated": False, "declined": None, "upstream_loss": 0.0,
               "downstream_loss": 0.1},
}  # fmt: skip
HELPER_VIEW: dict[str, Any] = {
    "transaction_id": 92, "helper": "198.18.0.9", "steps": [{"kind": "stun", "port": 3478}],
    "results": [{"kind": "stun", "transaction_id": 1, "failure": None}], "helper_trace": {},
    "failure": None, "t0": 1.0, "t": 2.0,
}  # fmt: skip
THROUGHPUT: dict[str, Any] = {
    "transaction_id": 93, "server_name": "media.example", "control": False,
    "address": "198.18.0.10", "path": "/x", "bytes": 65536, "seconds": 0.5, "kbit_s": 1048.5,
    "failure": None, "t0": 1.0, "t": 1.5,
}  # fmt: skip
APP_HANDSHAKE: dict[str, Any] = {
    "protocol": "mtproto", "address": "198.18.0.11:443", "failure": None, "t0": 1.0, "t": 1.2,
    "transaction_id": 94, "request_bytes": 48, "response_bytes": 84, "response": B64,
}  # fmt: skip
PROBE_LAG = {"interval": 0.02, "tolerance": 0.05, "samples": 100, "max_lag": 0.0, "stalled": 0.0,
             "stall_count": 0, "stalls": []}  # fmt: skip


def demo() -> list[dict[str, Any]]:
    """The committed demo run (test_version 0.1.0), as written."""
    return [json.loads(line) for line in DEMO.read_text().splitlines() if line.strip()]


def ooni(*, skip: bool = True) -> list[dict[str, Any]]:
    """The real OONI measurements of the shared samples. Where they are absent the test is skipped,
    or (``skip=False``) goes on without them."""
    if not OONI.exists():
        if not skip:
            return []
        pytest.skip(f"{OONI} is not there")
    return [json.loads(line) for line in OONI.read_text().splitlines() if line.strip()]


def current() -> dict[str, Any]:
    """A complete measurement of the current version, every msgwatch key with entries."""
    m = copy.deepcopy(demo()[4])  # whatsapp: every standard key and UDP exchanges
    m["test_version"] = TEST_VERSION
    m["extensions"] = dict(EXTENSIONS)
    keys = m["test_keys"]
    del keys["msgwatch_verdicts"]
    for target in keys["msgwatch_targets"]:
        target.update(attempt=1, not_measured=None)
    keys["msgwatch_probe_lag"] = dict(PROBE_LAG)
    keys["msgwatch_replays"] = [copy.deepcopy(REPLAY)]
    keys["msgwatch_helper_views"] = [copy.deepcopy(HELPER_VIEW)]
    keys["msgwatch_throughput"] = [dict(THROUGHPUT)]
    keys["msgwatch_app_handshakes"] = [copy.deepcopy(APP_HANDSHAKE)]
    return m
