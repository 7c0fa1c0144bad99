"""The report's plain words: what a mechanism means, and what "worked elsewhere" the controls show.

Rules:

- Every sentence is built from the event's own fields (its mechanism, its ``controls`` JSON); an
  unknown mechanism falls back to its family (``dns.*``), then to the analysis's story phrase
  (:func:`msgwatch.analysis.events.story.mechanism_phrase`), so a new mechanism is never dropped.
- The result is plain text: the template escapes it. Figures are rounded to whole percent.
- ``controls`` is hostile JSON from the lake: every field is type-checked and anything of the wrong
  type is left out, never raised on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgwatch.analysis.events.story import SERVICE_NAMES, function_words, mechanism_phrase

MEANINGS = {
    "udp.dpi_call": (
        "Call traffic was recognised by deep packet inspection: the recorded call packets were "
        "dropped, while the same packets with every bit inverted (which no inspection recognises "
        "as a call) went through on the same path, to the same server and port."
    ),
    "udp.dpi_service": (
        "The service's own traffic was recognised by deep packet inspection and dropped, while "
        "neutral traffic on the same path went through."
    ),
    "udp.drop_relays": (
        "UDP to the service's call relays was dropped, while the relays answered the observatory's "
        "server abroad: they were up, but unreachable from this network."
    ),
    "udp.drop_ports": (
        "UDP on the service's call ports was dropped whatever it carried, while UDP on other "
        "ports went through."
    ),
    "udp.drop_all": "All UDP traffic to the outside was dropped, so no call could start.",
    "throttle": "The service was slowed down far below what the same path carried otherwise.",
    "http.blockpage": "Instead of the service's website, the network returned a block page.",
}
FAMILIES = {
    "dns": "The network's DNS gave a wrong answer or none for the service's names.",
    "tcp": "Connections to the service's servers were refused, reset or left unanswered.",
    "ip": "The service's server addresses could not be reached from this network.",
    "tls": (
        "Secure (TLS) connections to the service were cut or answered with a wrong certificate "
        "once the service's name was seen (SNI filtering)."
    ),
    "http": "Requests to the service's website failed or were answered by something else.",
    "udp": "UDP traffic of the service was lost on the way.",
    "app": "The service's own handshake was cut after the connection was made.",
    "stun": "The service's STUN/TURN servers did not answer over UDP.",
    "relay": "The service's call relays did not answer.",
}


def mechanism_words(mechanism: str | None) -> str:
    """What ``mechanism`` means, in a sentence a reader without networking knowledge follows."""
    if not mechanism:
        return "The measurements failed without one clear mechanism."
    family = mechanism.split(".")[0]
    known = MEANINGS.get(mechanism) or FAMILIES.get(family)
    return known or f"Blocked {mechanism_phrase(mechanism).removeprefix('by ')}."


def _percent(share: float) -> str:
    return f"{round(share * 100)} %"


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _share(value: Any) -> float | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if number and 0 <= value <= 1 else None


def function_name(function: str) -> str:
    """A function in words ("voice calls")."""
    return function_words(function)


def service_name(service: str) -> str:
    """A service's name ("WhatsApp")."""
    return SERVICE_NAMES.get(service, service)


def _other_networks(entries: Any) -> list[str]:
    lines = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        asn, ok, failing = (
            entry.get("probe_asn"),
            _count(entry.get("ok")),
            _count(entry.get("failing")),
        )
        if isinstance(asn, str) and ok is not None and failing is not None:
            lines.append(
                f"On the other network {asn}, {ok} of {ok + failing} measurements of the same "
                "service and function worked."
            )
    return lines


def _same_network(shares: Any) -> list[str]:
    if not isinstance(shares, Mapping):
        return []
    lines = []
    for function, share in sorted(shares.items(), key=lambda item: str(item[0])):
        value = _share(share)
        if isinstance(function, str) and value is not None:
            lines.append(
                f"On the same network, {_percent(value)} of the measurements of "
                f"{function_name(function)} worked."
            )
    return lines


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def elsewhere(level: str, controls: Mapping[str, Any]) -> list[str]:
    """What worked at the same time, sentence by sentence, from an event's ``controls``."""
    if level == "country":
        works = [w for w in _listed(controls.get("works")) if isinstance(w, str)]
        others = [n for n in _listed(controls.get("worked_elsewhere")) if isinstance(n, str)]
        lines = []
        if works:
            names = ", ".join(function_name(w) for w in works)
            lines.append(f"Meanwhile these functions of the same services kept working: {names}.")
        if others:
            lines.append(
                "Meanwhile the same services and functions worked on the country's other "
                f"network{'s' if len(others) > 1 else ''} {', '.join(others)}."
            )
        return lines
    lines = _other_networks(controls.get("other_networks"))
    lines += _same_network(controls.get("same_network"))
    control = _share(controls.get("control_ok_share"))
    if control is not None:
        lines.append(
            f"In {_percent(control)} of the failing measurements, the measurement's own control "
            "worked at the same moment (the observatory's server was reached, or the "
            "bit-inverted copy of the call got through)."
        )
    return lines
