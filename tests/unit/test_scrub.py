"""The probe's own addresses never reach a measurement."""

from __future__ import annotations

import base64
import datetime as dt
import json

from msgwatch.measurement.envelope import RunInfo, build_measurement, normalise_asn, normalise_cc
from msgwatch.measurement.scrub import scrub
from msgwatch.steps.trace import Trace

PROBE = "198.18.7.7"
PROBE6 = "2001:db8:7::7"


def test_scrub_reaches_every_string_and_base64_body() -> None:
    body = f"your address is {PROBE}, not 198.18.7.70 nor 1{PROBE}".encode()
    value = {
        "a": [f"{PROBE}:443", f"[{PROBE6}]:443", "2001:db8:7::70"],
        "body": {"format": "base64", "data": base64.b64encode(body).decode()},
        "n": 3,
    }
    out = scrub(value, {PROBE, PROBE6})
    assert out["a"] == ["[scrubbed]:443", "[[scrubbed]]:443", "2001:db8:7::70"]
    decoded = base64.b64decode(out["body"]["data"]).decode()
    assert decoded == "your address is [scrubbed], not 198.18.7.70 nor 1198.18.7.7"
    assert out["n"] == 3


def test_loopback_is_not_a_secret_but_everything_else_is() -> None:
    trace = Trace()
    for address in ("127.0.0.1", "::1", PROBE, f"{PROBE6}%eth0", "0.0.0.0", "garbage"):
        trace.note_probe_address(address)
    assert trace.probe_addresses == {PROBE, PROBE6}


def test_measurement_is_scrubbed_and_probe_ip_fixed() -> None:
    info = RunInfo.new(
        probe_asn="as28787", probe_cc="az", now=dt.datetime(2017, 5, 26, tzinfo=dt.UTC)
    )
    keys = {
        "requests": [
            {"response": {"body": f"<p>IP {PROBE}</p>", "headers_list": [["X-Client", PROBE]]}}
        ],
        "msgwatch_udp_exchanges": [{"failure": f"unknown_failure sendto {PROBE} failed"}],
    }
    m = build_measurement(
        info, service_id="whatsapp", start=info.test_start, runtime=1.5, test_keys=keys,
        probe_addresses={PROBE},
    )  # fmt: skip
    assert PROBE not in json.dumps(m)
    assert m["probe_ip"] == "127.0.0.1"
    assert (m["probe_asn"], m["probe_cc"], m["measurement_start_time"]) == (
        "AS28787",
        "AZ",
        "2017-05-26 00:00:00",
    )
    assert m["report_id"].startswith("20170526T000000Z_msgwatch_AZ_28787_n1_")


def test_asn_and_cc_normalisation() -> None:
    assert [normalise_asn(v) for v in (None, "AS1", "as2", "3", "ASX", "", 4)] == [
        "AS0", "AS1", "AS2", "AS3", "AS0", "AS0", "AS4",
    ]  # fmt: skip
    assert [normalise_cc(v) for v in (None, "az", "AZE", "", "1A")] == [
        "ZZ",
        "AZ",
        "ZZ",
        "ZZ",
        "ZZ",
    ]
