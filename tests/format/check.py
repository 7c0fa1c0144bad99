"""The format checks every measurement made by the tests goes through.

``problems(m)`` checks what OONI's reader does not (time format, ``AS<n>``, country code, the
standard entries' shapes, failure strings, msgwatch's keys as docs/spec/ts-msgwatch-service.md
defines them); ``read_with_oonidata(ms)`` runs OONI's own ``oonidata`` on them in its separate
environment and returns its per-measurement report.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
OONI_PYTHON = ROOT / ".venv-oonidata" / "bin" / "python"
READER = Path(__file__).with_name("ooni_reader.py")

TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
ASN = re.compile(r"^AS\d+$")
CC = re.compile(r"^[A-Z]{2}$")
FAILURES = {
    "connection_refused", "connection_reset", "eof_error", "generic_timeout_error",
    "host_unreachable", "network_unreachable", "dns_nxdomain_error", "dns_no_answer",
    "dns_refused_error", "dns_servfail_error", "dns_reply_with_wrong_query_id",
    "dns_invalid_response", "ssl_invalid_hostname", "ssl_unknown_authority",
    "ssl_invalid_certificate", "ssl_failed_handshake", "http_invalid_response",
    "stun_invalid_response", "stun_error_response", "turn_no_challenge",
    "destination_not_allowed", "budget_exceeded",
    "mtproto_invalid_response", "mtproto_truncated_response", "mtproto_nonce_mismatch",
    "mtproto_transport_error", "whatsapp_invalid_response", "whatsapp_truncated_response",
}  # fmt: skip
ENVELOPE = {
    "annotations": dict, "data_format_version": str, "extensions": dict,
    "measurement_start_time": str, "test_start_time": str, "probe_asn": str, "probe_cc": str,
    "probe_ip": str, "probe_network_name": str, "report_id": str, "resolver_asn": str,
    "resolver_ip": str, "resolver_network_name": str, "software_name": str,
    "software_version": str, "test_name": str, "test_version": str, "test_runtime": float,
    "test_keys": dict,
}  # fmt: skip
STANDARD = ("queries", "tcp_connect", "tls_handshakes", "requests", "network_events")
MECHANISM = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d])")


def _failure_ok(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    return (
        value in FAILURES
        or value.startswith("unknown_failure ")
        or (value.startswith("dns_server_failure_") and value[19:].isalpha())
    )


def problems(m: dict[str, Any], *, msgwatch: bool = True) -> list[str]:
    """Every way ``m`` departs from the format (empty when it conforms)."""
    out: list[str] = []
    for key, kind in ENVELOPE.items():
        if key not in m:
            out.append(f"missing {key}")
        elif not isinstance(m[key], kind) and not (kind is float and isinstance(m[key], int)):
            out.append(f"{key}: {type(m[key]).__name__}, not {kind.__name__}")
    if "input" not in m:
        out.append("missing input (must be present, null when there is none)")
    if out:
        return out
    for key in ("measurement_start_time", "test_start_time"):
        if not TIME.match(m[key]):
            out.append(f"{key}: {m[key]!r} is not 'YYYY-MM-DD hh:mm:ss'")
    if not ASN.match(m["probe_asn"]):
        out.append(f"probe_asn: {m['probe_asn']!r} is not AS<n>")
    if not CC.match(m["probe_cc"]):
        out.append(f"probe_cc: {m['probe_cc']!r} is not two upper-case letters")
    if m["data_format_version"] != "0.2.0":
        out.append("data_format_version is not 0.2.0")
    if not msgwatch:
        return out
    keys = m["test_keys"]
    if m["probe_ip"] != "127.0.0.1":
        out.append("probe_ip is not scrubbed")
    for name in (*STANDARD, "msgwatch_udp_exchanges", "msgwatch_targets", "msgwatch_verdicts"):
        if not isinstance(keys.get(name), list):
            out.append(f"test_keys.{name} is not a list")
    if out:
        return out
    for name in (*STANDARD, "msgwatch_udp_exchanges", "msgwatch_app_handshakes"):
        for i, entry in enumerate(keys.get(name) or []):
            where = f"test_keys.{name}[{i}]"
            t0, t = entry.get("t0"), entry.get("t")
            if not isinstance(t, float | int) or (t0 is not None and not 0 <= t0 <= t):
                out.append(f"{where}: times t0={t0!r} t={t!r}")
            if not isinstance(entry.get("transaction_id"), int):
                out.append(f"{where}: transaction_id missing")
            failure = entry["status"]["failure"] if name == "tcp_connect" else entry.get("failure")
            if not _failure_ok(failure):
                out.append(f"{where}: failure {failure!r} is not a known failure string")
    for i, request in enumerate(keys["requests"]):
        response = request.get("response")
        if response is not None and not isinstance(response.get("body_is_truncated"), bool):
            out.append(f"test_keys.requests[{i}].response.body_is_truncated missing")
    functions = {f["function"] for f in keys.get("msgwatch_functions", [])}
    for i, v in enumerate(keys["msgwatch_verdicts"]):
        where = f"test_keys.msgwatch_verdicts[{i}]"
        if v.get("verdict") not in (
            "ok", "blocked", "inconclusive", "throttled", "degraded", "not_measured",
        ):  # fmt: skip
            out.append(f"{where}: verdict {v.get('verdict')!r}")
        if v.get("verdict") == "ok" and v.get("mechanism") is not None:
            out.append(f"{where}: an ok verdict has a mechanism")
        if v.get("mechanism") is not None and not MECHANISM.match(str(v["mechanism"])):
            out.append(f"{where}: mechanism {v['mechanism']!r}")
        if v.get("function") not in functions:
            out.append(f"{where}: function {v.get('function')!r} not in msgwatch_functions")
        if not all(isinstance(e, int) for e in v.get("evidence", [None])):
            out.append(f"{where}: evidence must be transaction ids")
    if m["input"] != keys.get("msgwatch_service"):
        out.append("input differs from test_keys.msgwatch_service")
    return out


def read_with_oonidata(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OONI's reader's report for each measurement (runs ``oonidata`` in its own environment)."""
    if not OONI_PYTHON.exists():
        raise AssertionError(f"{OONI_PYTHON} is missing: run `make install`")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as handle:
        for m in measurements:
            handle.write(json.dumps(m) + "\n")
        path = handle.name
    try:
        done = subprocess.run(
            [str(OONI_PYTHON), str(READER), path],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        Path(path).unlink(missing_ok=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def assert_conforms(measurements: list[dict[str, Any]]) -> None:
    """Both checks, with every problem in the assertion message."""
    found = [f"measurement {i}: {p}" for i, m in enumerate(measurements) for p in problems(m)]
    assert not found, "\n".join(found)
    reports = read_with_oonidata(measurements)
    assert len(reports) == len(measurements)
    failed = [r for r in reports if not r["ok"]]
    assert not failed, failed
    for m, report in zip(measurements, reports, strict=True):
        counts = report["counts"]
        for name in STANDARD:
            assert counts[name] == len(m["test_keys"][name]), (name, counts, report)
