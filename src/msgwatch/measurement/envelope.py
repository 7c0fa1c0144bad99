"""Building a measurement in OONI's df-000 envelope (``docs/spec/ts-msgwatch-service.md``)."""

from __future__ import annotations

import datetime as dt
import platform
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from msgwatch import __version__
from msgwatch.measurement.scrub import scrub

TEST_NAME = "msgwatch_service"
TEST_VERSION = "0.3.2"
DATA_FORMAT_VERSION = "0.2.0"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
EXTENSIONS = {
    "dnst": 0,
    "netevents": 0,
    "tcpconnect": 0,
    "tlshandshake": 0,
    "httpt": 0,
    "msgwatch_udpx": 0,
}

_ASN = re.compile(r"^AS\d{1,10}$")
_CC = re.compile(r"^[A-Z]{2}$")


def ooni_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(TIME_FORMAT)


def normalise_asn(value: str | int | None) -> str:
    """``AS<n>`` from ``AS123``, ``as123`` or ``123``; ``AS0`` when missing or malformed."""
    if value is None:
        return "AS0"
    text = str(value).strip().upper()
    if text.isdigit():
        text = f"AS{text}"
    return text if _ASN.match(text) else "AS0"


def normalise_cc(value: str | None) -> str:
    text = (value or "").strip().upper()
    return text if _CC.match(text) else "ZZ"


@dataclass(frozen=True)
class RunInfo:
    """What all measurements of one run share."""

    test_start: dt.datetime
    report_id: str
    probe_asn: str = "AS0"
    probe_cc: str = "ZZ"
    probe_network_name: str = ""
    resolver_ip: str = ""
    catalogue_version: str = ""
    annotations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        probe_asn: str | None = None,
        probe_cc: str | None = None,
        probe_network_name: str = "",
        resolver_ip: str = "",
        catalogue_version: str = "",
        now: dt.datetime | None = None,
    ) -> RunInfo:
        start = now or dt.datetime.now(dt.UTC)
        asn, cc = normalise_asn(probe_asn), normalise_cc(probe_cc)
        rand = "".join(secrets.choice(string.ascii_letters) for _ in range(16))
        report_id = f"{start.strftime('%Y%m%dT%H%M%SZ')}_msgwatch_{cc}_{asn[2:]}_n1_{rand}"
        return cls(
            test_start=start,
            report_id=report_id,
            probe_asn=asn,
            probe_cc=cc,
            probe_network_name=probe_network_name,
            resolver_ip=resolver_ip,
            catalogue_version=catalogue_version,
        )


def build_measurement(
    info: RunInfo,
    *,
    service_id: str,
    start: dt.datetime,
    runtime: float,
    test_keys: dict[str, Any],
    probe_addresses: set[str],
) -> dict[str, Any]:
    """The whole measurement, scrubbed of the probe's addresses."""
    measurement: dict[str, Any] = {
        "annotations": {
            "engine_name": "msgwatch",
            "engine_version": __version__,
            "platform": platform.system().lower() or "unknown",
            "catalogue_version": info.catalogue_version,
            **info.annotations,
        },
        "data_format_version": DATA_FORMAT_VERSION,
        "extensions": dict(EXTENSIONS),
        "input": service_id,
        "measurement_start_time": ooni_time(start),
        "options": [],
        "probe_asn": info.probe_asn,
        "probe_cc": info.probe_cc,
        "probe_ip": "127.0.0.1",
        "probe_network_name": info.probe_network_name,
        "report_id": info.report_id,
        "resolver_asn": "AS0",
        "resolver_ip": info.resolver_ip,
        "resolver_network_name": "",
        "software_name": "msgwatch",
        "software_version": __version__,
        "test_helpers": {},
        "test_keys": test_keys,
        "test_name": TEST_NAME,
        "test_runtime": round(runtime, 6),
        "test_start_time": ooni_time(info.test_start),
        "test_version": TEST_VERSION,
    }
    scrubbed: dict[str, Any] = scrub(measurement, probe_addresses)
    scrubbed["probe_ip"] = "127.0.0.1"
    return scrubbed
