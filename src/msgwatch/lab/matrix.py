"""The call-blocking matrix: every service with a call function × every way calls get blocked.

The table (:data:`TABLE`) is data: per service, the lab's DPI signature of its own call traffic
(:data:`msgwatch.lab.censor.addresses.SIGNATURES`) and, per mechanism, the ground truth the probe
must find for its voice and video functions. :func:`matrix_scenarios` turns it into a handful of
ordinary scenarios (:class:`msgwatch.lab.scenario.Scenario`, run by ``run_scenario``), grouping
cells so that the lab runs stay few:

- the two ISPs of one lab run carry two mechanisms (``ports`` on ISP 1 and ``stun`` on ISP 2;
  ``dpi`` on ISP 1 and ``relays`` on ISP 2), each aimed at every service of the run at once: the
  rules of one ISP never touch the other's probe;
- the services are split into two groups (:data:`GROUPS`) so that one run's replays stay well
  inside the probe's byte budget (20 MB) and its CPU;
- ``police`` needs replays of 6 s (:data:`POLICE`, as ``calls-throttled``: docs/lab.md says why),
  so its runs take three services each, ISP 2 uncensored.

Mechanisms (each a lab rule aimed at the services of the run):

``ports``   ``drop_udp`` to abroad on the services' call ports
``relays``  ``drop_udp`` to the services' own prefixes (``service:<id>``): their relays
``stun``    ``drop_stun`` to abroad (STUN's magic cookie, any port)
``dpi``     ``drop_call_signature`` with each service's own signature
``police``  ``police`` UDP to abroad on the services' call ports, 20 kbit/s per flow

A cell the probe cannot see has a ``gap``: the reason, and what the probe says instead (``seen``).
The relays of WhatsApp, Telegram, Viber and Discord are handed out per call and not published
(their catalogue files say so), so a block of their prefixes is invisible: the probe says ``ok``
with coverage ``signalling`` ("call set-up only"), which is what the test asserts for those cells,
and it fails the day the probe starts seeing them (the table must then be updated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.lab.scenario import Scenario

Mechanism = Literal["ports", "relays", "stun", "dpi", "police"]
MECHANISMS: tuple[Mechanism, ...] = ("ports", "relays", "stun", "dpi", "police")
CALL_FUNCTIONS = ("voice", "video")

REPLAY_SECONDS = 1.5
TIMEOUT = 5.0
POLICE = {"rate_kbit": 20, "burst_bytes": 2000, "replay_seconds": 6.0, "seed": 2017,
          "timeout": 15.0}  # fmt: skip
"""The ``calls-throttled`` scenario's policer and replays (docs/lab.md explains the numbers)."""


@dataclass(frozen=True)
class Cell:
    """The ground truth of one (service, mechanism), for voice and video unless ``video`` says."""

    verdict: str
    mechanism: str | None
    why: str
    video: tuple[str, str | None] | None = None
    """(verdict, mechanism) of video when it differs from voice."""
    gap: str = ""
    """Why this probe cannot see it (empty: it can); ``seen`` is then what it says instead."""
    seen: tuple[str, str | None] = ("ok", None)

    def truth(self, function: str) -> tuple[str, str | None]:
        if function == "video" and self.video is not None:
            return self.video
        return self.verdict, self.mechanism


@dataclass(frozen=True)
class Row:
    service: str
    signature: str
    """The lab's ``drop_call_signature`` for this service's own call traffic."""
    cells: dict[Mechanism, Cell] = field(default_factory=dict)
    dpi_ports: tuple[str, ...] = ()
    """Ports the signature is scoped to (none: any port)."""


def _police() -> Cell:
    return Cell("degraded", "udp.loss", "a good share of the voice packets are policed away, "
                "original and control alike; video gets through only as a steady trickle",
                video=("throttled", "throttle"))  # fmt: skip


def _relays_gap(service: str) -> Cell:
    return Cell("blocked", "udp.drop_relays", f"UDP to {service}'s relays is dropped",
                gap=f"{service}'s relays are handed out per call and not published: no relay "
                "endpoint to test, the probe says ok, call set-up only")  # fmt: skip


BLOCKED_PORTS = Cell("blocked", "udp.drop_ports", "UDP on the call ports dies whatever it carries; "
                     "the neutral port works")  # fmt: skip
FALLBACK = "; TURN over TCP to the relays is open: calls may connect, badly"
STUN_DPI = Cell("blocked", "udp.dpi_call", "STUN dies on the call ports while random bytes pass")
OWN_DPI = Cell("blocked", "udp.dpi_service", "the service's own call messages die, their "
               "bit-inverted copies (and plain STUN) pass")  # fmt: skip
NO_STUN = Cell("ok", None, "the service's calls carry no STUN (as modelled): a STUN filter leaves "
               "them alone")  # fmt: skip


def _degraded(cell: Cell) -> Cell:
    return Cell("degraded", cell.mechanism, cell.why + FALLBACK)


RELAYS = Cell("blocked", "udp.drop_relays", "the helper on the same ports is reached, the "
              "service's relays are not")  # fmt: skip

TABLE: tuple[Row, ...] = (
    Row("whatsapp", "whatsapp_relay", {"ports": BLOCKED_PORTS, "relays": _relays_gap("whatsapp"),
        "stun": STUN_DPI, "dpi": OWN_DPI, "police": _police()}),
    Row("teams", "teams_media", {"ports": _degraded(BLOCKED_PORTS), "relays": _degraded(RELAYS),
        "stun": _degraded(STUN_DPI), "dpi": _degraded(OWN_DPI), "police": _police()}),
    Row("skype", "teams_media", {"ports": BLOCKED_PORTS, "relays": RELAYS, "stun": STUN_DPI,
        "dpi": OWN_DPI, "police": _police()}),
    Row("signal", "signal_turn", {"ports": _degraded(BLOCKED_PORTS), "relays": _degraded(RELAYS),
        "stun": _degraded(STUN_DPI), "dpi": _degraded(OWN_DPI), "police": _police()}),
    Row("zoom", "zoom_media", {"ports": BLOCKED_PORTS, "relays": RELAYS, "stun": STUN_DPI,
        "dpi": OWN_DPI, "police": _police()}),
    Row("telegram", "telegram_reflector", {"ports": BLOCKED_PORTS,
        "relays": _relays_gap("telegram"), "stun": NO_STUN, "dpi": OWN_DPI, "police": _police()},
        # nDPI's telegram.c looks for the twelve 0xFF only on ports 500-600: so does the lab (on
        # any port it would also hit the bit-inverted NUL padding of Discord's IP discovery).
        dpi_ports=("500-600",)),
    Row("viber", "viber_udp", {"ports": BLOCKED_PORTS, "relays": _relays_gap("viber"),
        "stun": STUN_DPI, "dpi": OWN_DPI, "police": _police()}),
    Row("discord", "discord_voice", {"ports": BLOCKED_PORTS, "relays": _relays_gap("discord"),
        "stun": NO_STUN, "dpi": OWN_DPI, "police": _police()}),
    Row("facebook_messenger", "messenger_ice", {"ports": BLOCKED_PORTS, "relays": RELAYS,
        "stun": STUN_DPI, "dpi": OWN_DPI, "police": _police()}),
)  # fmt: skip
"""Every service with call ports, every mechanism (``tests/unit/test_call_matrix_table.py``
checks that nothing is missing)."""

GROUPS: tuple[tuple[str, ...], ...] = (
    ("whatsapp", "teams", "skype", "signal", "zoom"),
    ("telegram", "viber", "discord", "facebook_messenger"),
)
POLICE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("whatsapp", "teams", "skype"),
    ("signal", "zoom", "facebook_messenger"),
    ("telegram", "viber", "discord"),
)
PAIRS: tuple[tuple[Mechanism, Mechanism], ...] = (("ports", "stun"), ("dpi", "relays"))
"""The mechanisms of ISP 1 and ISP 2 in one lab run."""


def rows() -> dict[str, Row]:
    return {r.service: r for r in TABLE}


def _call_ports(services: tuple[str, ...], catalogue: Catalogue) -> list[int]:
    ports: dict[int, None] = {}
    for name in services:
        service = catalogue.service(name)
        assert service is not None, name
        for function in service.functions:
            if function.function in CALL_FUNCTIONS:
                ports.update(dict.fromkeys(function.call_ports))
    return sorted(ports)


def _rules(mechanism: Mechanism, isp: str, services: tuple[str, ...],
           catalogue: Catalogue) -> list[dict[str, Any]]:  # fmt: skip
    if mechanism == "ports":
        return [{"isp": isp, "type": "drop_udp", "to": ["abroad"],
                 "ports": _call_ports(services, catalogue)}]  # fmt: skip
    if mechanism == "relays":
        return [{"isp": isp, "type": "drop_udp", "to": [f"service:{s}" for s in services]}]
    if mechanism == "stun":
        return [{"isp": isp, "type": "drop_stun", "to": ["abroad"]}]
    if mechanism == "dpi":
        signatures = {rows()[s].signature: rows()[s].dpi_ports for s in services}
        return [{"isp": isp, "type": "drop_call_signature", "signature": name}
                | ({"ports": list(ports)} if ports else {})
                for name, ports in signatures.items()]  # fmt: skip
    return [{"isp": isp, "type": "police", "to": ["abroad"],
             "ports": _call_ports(services, catalogue), "rate_kbit": POLICE["rate_kbit"],
             "burst_bytes": POLICE["burst_bytes"]}]  # fmt: skip


def _expects(mechanism: Mechanism, isp: str, services: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for name in services:
        cell = rows()[name].cells[mechanism]
        for function in CALL_FUNCTIONS:
            verdict, mech = cell.truth(function)
            if verdict == "ok":
                continue
            out.append({"isp": isp, "service": name, "function": function, "verdict": verdict,
                        "mechanism": mech, "why": f"{mechanism}: {cell.why}"})  # fmt: skip
    return out


def _scenario(name: str, title: str, services: tuple[str, ...],
              mechanisms: dict[str, Mechanism], catalogue: Catalogue) -> Scenario:  # fmt: skip
    police = "police" in mechanisms.values()
    rules = [r for isp, m in mechanisms.items() for r in _rules(m, isp, services, catalogue)]
    expects = [e for isp, m in mechanisms.items() for e in _expects(m, isp, services)]
    return Scenario.model_validate({
        "name": name,
        "title": title,
        "description": "Generated from msgwatch.lab.matrix.TABLE: "
        + "; ".join(f"{isp}: {m}" for isp, m in mechanisms.items()) + ".",
        "services": list(services),
        "timeout": POLICE["timeout"] if police else TIMEOUT,
        "replay_seconds": POLICE["replay_seconds"] if police else REPLAY_SECONDS,
        "replay_seed": POLICE["seed"] if police else None,
        "phase": [{"name": "matrix", "rule": rules}],
        "expect": expects,
    })  # fmt: skip


def matrix_scenarios(catalogue: Catalogue | None = None) -> list[Scenario]:
    """The matrix as lab runs: 4 with two mechanisms each, 3 of policing (module notes)."""
    catalogue = catalogue or load_catalogue()
    out = []
    for number, group in enumerate(GROUPS, start=1):
        for first, second in PAIRS:
            out.append(_scenario(f"call-matrix-{first}-{second}-{number}",
                                 f"Call matrix: {first} on ISP 1, {second} on ISP 2, group {number}",
                                 group, {"isp1": first, "isp2": second}, catalogue))  # fmt: skip
    for number, group in enumerate(POLICE_GROUPS, start=1):
        out.append(_scenario(f"call-matrix-police-{number}", f"Call matrix: police, group {number}",
                             group, {"isp1": "police"}, catalogue))  # fmt: skip
    return out


def cell_for(scenario: Scenario, isp: str, service: str) -> tuple[Mechanism, Cell] | None:
    """The mechanism and cell a scenario of :func:`matrix_scenarios` aims at (isp, service)."""
    for rule in scenario.phase[0].rule:
        if rule.isp != isp:
            continue
        mechanism = _mechanism_of(rule.type, rule.fields())
        if service in scenario.services:
            return mechanism, rows()[service].cells[mechanism]
    return None


def gap_for(
    scenario: Scenario, isp: str, service: str, function: str
) -> tuple[Mechanism, Cell] | None:
    """The mechanism and cell when (isp, service)'s ``function`` is a call the probe cannot see
    there (the cell has a ``gap``); None for every other row."""
    found = cell_for(scenario, isp, service)
    if found is None or not found[1].gap or function not in CALL_FUNCTIONS:
        return None
    return found


def reads_as_documented(scenario: Scenario, row: dict[str, Any]) -> bool:
    """Whether a verdict row (``isp``, ``service``, ``function``, ``verdict``, ``mechanism``) is
    a call the probe cannot see, read as the table says it reads instead (``Cell.seen``)."""
    found = gap_for(scenario, row["isp"], row["service"], row["function"])
    return found is not None and (row["verdict"], row["mechanism"]) == found[1].seen


def _mechanism_of(kind: str, fields: dict[str, Any]) -> Mechanism:
    if kind == "drop_udp":
        return "ports" if fields.get("ports") else "relays"
    return {"drop_stun": "stun", "drop_call_signature": "dpi", "police": "police"}[kind]  # type: ignore[return-value]
