"""Scrubbing the probe's own addresses out of a measurement, everywhere.

Every string in the measurement is searched for each address (on address boundaries, so that
``10.1.2.3`` does not match inside ``110.1.2.34``) and the match replaced by ``[scrubbed]``; base64
payloads (``{"format": "base64", "data": ...}``) are decoded, scrubbed as bytes and re-encoded. IPv6
addresses are matched in their compressed and exploded forms, in either case. This runs once, on the
finished measurement, before it is written anywhere, with every address the whole run learned (the
runner waits for all services before it builds any measurement: see ``msgwatch.probe.runner``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

SCRUBBED = "[scrubbed]"


def _forms(address: str) -> set[str]:
    """The ways ``address`` may be written: as given, and for IPv6 also compressed and exploded
    (an IPv4-mapped IPv6 address contains the IPv4 text, which its own entry matches)."""
    text = address.strip().split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return {text} if text else set()
    if isinstance(ip, ipaddress.IPv6Address):
        return {text, ip.compressed, ip.exploded}
    return {text, str(ip)}


def _pattern(addresses: Iterable[str]) -> re.Pattern[str] | None:
    unique = sorted({f for a in addresses if a for f in _forms(a)}, key=len, reverse=True)
    v4 = "|".join(re.escape(a) for a in unique if ":" not in a)
    v6 = "|".join(re.escape(a) for a in unique if ":" in a)
    parts = []
    if v4:
        parts.append(r"(?<![\d.])(?:" + v4 + r")(?!\d|\.\d)")
    if v6:
        parts.append(r"(?<![0-9A-Fa-f:])(?:" + v6 + r")(?![0-9A-Fa-f:])")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def scrub(value: Any, addresses: Iterable[str]) -> Any:
    """A copy of ``value`` (JSON-like) with every address in ``addresses`` scrubbed."""
    pattern = _pattern(addresses)
    if pattern is None:
        return value
    byte_pattern = re.compile(pattern.pattern.encode("ascii"), re.IGNORECASE)
    return _walk(value, pattern, byte_pattern)


def _walk(value: Any, pattern: re.Pattern[str], byte_pattern: re.Pattern[bytes]) -> Any:
    if isinstance(value, str):
        return pattern.sub(SCRUBBED, value)
    if isinstance(value, list):
        return [_walk(v, pattern, byte_pattern) for v in value]
    if isinstance(value, dict):
        if value.get("format") == "base64" and isinstance(value.get("data"), str):
            try:
                raw = base64.b64decode(value["data"], validate=True)
            except (binascii.Error, ValueError):
                return dict(value)
            cleaned = byte_pattern.sub(SCRUBBED.encode("ascii"), raw)
            return {**value, "data": base64.b64encode(cleaned).decode("ascii")}
        return {k: _walk(v, pattern, byte_pattern) for k, v in value.items()}
    return value
