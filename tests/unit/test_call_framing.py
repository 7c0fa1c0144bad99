"""Each service's own call framing: modelled, counted apart by the replays, judged, and recognised
by the lab censor's signatures (issue 9, item 11)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from aioice import stun

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.catalogue import load_catalogue
from msgwatch.lab.censor.addresses import SIGNATURES, Pattern
from msgwatch.probe.calls import MARKERS, downstream_plans, plans
from msgwatch.steps.replay import ReplayOptions, ReplayResult, replay
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from msgwatch.wire import packets as P
from tests.unit.servers import Reply, deadline, udp_server
from tests.unit.test_call_judge import _measurement

CALLS = ("voice", "video")
SERVICE_SIGNATURES = {
    "whatsapp": "whatsapp_relay",
    "teams": "teams_media",
    "zoom": "zoom_media",
    "telegram": "telegram_reflector",
    "viber": "viber_udp",
    "discord": "discord_voice",
    "messenger": "messenger_ice",
    "signal": "signal_turn",
}
"""The lab's signature for each marker: what a DPI of that service's own call traffic keys on."""


def _call_services() -> dict[str, Any]:
    catalogue = load_catalogue()
    return {
        s.id: s
        for s in catalogue.services
        if any(f.function in CALLS and f.call_ports for f in s.functions)
    }


# -- the catalogue and the probe's markers -----------------------------------------------------


def test_the_call_holes_of_the_catalogue_are_filled() -> None:
    services = _call_services()
    for name in ("telegram", "viber", "facebook_messenger", "discord"):
        assert name in services, f"{name} lists no call ports"
        for function in services[name].functions:
            if function.function in CALLS:
                assert function.call_ports, (name, function.function)


def test_every_service_with_call_ports_replays_its_own_traffic() -> None:
    for name in _call_services():
        assert name in MARKERS, f"{name} has call ports but no marker: its replay is generic"


def test_imo_has_no_call_function_without_a_sourced_port() -> None:
    imo = load_catalogue().service("imo")
    assert imo is not None
    assert not [f for f in imo.functions if f.function in CALLS]


# -- the profiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("marker", C.MARKERS)
def test_framings_of_an_original_and_never_of_its_control(marker: C.Marker) -> None:
    for make, seconds in ((C.voice_profile, 3.0), (C.video_profile, 1.0)):
        packets = make(seconds, 5, marker)
        kinds = C.framings(packets, marker)
        assert kinds["stun"] or kinds["signature"], marker
        assert not kinds["stun"] & kinds["signature"]
        control = C.control(packets)
        assert all(C.framing(p.payload, marker) == "media" for p in control)
        for index in kinds["stun"]:
            assert P.read_stun(packets[index].payload) is not None


def test_the_services_own_first_packets() -> None:
    messenger = C.voice_profile(1.0, 1, "messenger")[0].payload
    assert struct.unpack("!HH", messenger[:4]) == (0x0001, 100)  # nDPI: length 100 with 0xC057
    assert "USERNAME" in stun.parse_message(messenger).attributes
    assert messenger[60:62] == b"\xc0\x57"
    signal = stun.parse_message(C.voice_profile(1.0, 1, "signal")[0].payload)
    assert signal.message_method == stun.Method.ALLOCATE
    assert signal.attributes["REALM"] == "signal.org"
    viber = C.voice_profile(3.0, 1, "viber")
    signed = [viber[i].payload for i in sorted(C.framings(viber, "viber")["signature"])]
    assert [(len(p), p[2:4].hex()) for p in signed[:3]] == [(20, "0900"), (34, "1900"),
                                                            (34, "1b00")]  # fmt: skip
    assert {(len(p), p[2:4].hex()) for p in signed[3:]} == {(12, "0300")}  # keep-alives
    telegram = C.voice_profile(1.0, 1, "telegram")
    assert sorted(C.framings(telegram, "telegram")["signature"]) == [0, 1]


def test_marker_variants_keep_the_media_sizes_and_times() -> None:
    generic = C.voice_profile(2.0, 9)
    media = sorted((p.offset, len(p.payload)) for p in generic if p.offset >= C.MEDIA_START
                   and len(p.payload) >= C.VOICE_MIN_BYTES and p.payload[0] == 0x80)  # fmt: skip
    for marker in ("viber", "messenger", "signal"):
        mine = C.voice_profile(2.0, 9, marker)
        sizes = {(p.offset, len(p.payload)) for p in mine}
        assert set(media) <= sizes, marker


# -- the probe's plans carry the framing -------------------------------------------------------


def test_plans_carry_the_signature_positions() -> None:
    service = load_catalogue().service("telegram")
    assert service is not None
    voice = next(f for f in service.functions if f.function == "voice")
    chosen = plans(service, voice, 1.5, 3)
    rounds = [p for p in chosen if p.role in ("replay_original", "replay_control")]
    assert rounds and all(p.signed == frozenset({0, 1}) and not p.marked for p in rounds)
    original = next(p for p in rounds if p.variant == "original")
    assert all(C.framing(original.packets[i].payload, "telegram") == "signature"
               for i in original.signed)  # fmt: skip
    down = downstream_plans(service, voice, 1.5, 3)
    assert down and all(p.signed == frozenset({0, 1}) for p in down)


# -- the replay counts the signature datagrams apart -------------------------------------------


def test_a_replay_counts_the_services_own_framing_by_content() -> None:
    packets = [(p.offset, p.payload) for p in C.voice_profile(1.2, 4, "telegram")]
    signed = C.framings(C.voice_profile(1.2, 4, "telegram"), "telegram")["signature"]

    def drop_reflector_header(data: bytes, reply: Reply) -> None:
        if data[16:28] != C.TG_FILLER:
            reply(data)

    trace = Trace()

    async def scenario() -> ReplayResult:
        async with udp_server(drop_reflector_header) as server:
            return await replay(trace, 2, server.ip, server.port, packets, deadline(4.0),
                                ReplayOptions(signed=signed))  # fmt: skip

    result = asyncio.run(scenario())
    record = trace.replays[0]
    assert (record["signature_sent"], record["signature_received"]) == (len(signed), 0)
    assert (record["marked_sent"], record["marked_received"]) == (0, 0)
    assert result.received_packets == len(packets) - len(signed)  # the rest came back


# -- the judge ---------------------------------------------------------------------------------


def _signed(m: dict[str, Any], original: tuple[int, int], control: tuple[int, int]) -> None:
    for record in m["test_keys"]["msgwatch_replays"]:
        pair = {"replay_original": original, "replay_control": control}.get(record["role"])
        if pair is not None:
            record["signature_sent"], record["signature_received"] = pair


def test_a_censor_that_kills_only_the_services_own_packets_is_seen() -> None:
    """Telegram's reflector pings die, the media passes: not ``ok`` (it was, when only
    STUN-framed datagrams counted as markers)."""
    m = _measurement((100, 96), (100, 100), (100, 100))
    _signed(m, (4, 0), (4, 4))
    (v,) = judge(m)
    assert (v["verdict"], v["mechanism"], v["rule_id"]) == (
        "blocked", "udp.dpi_service", "call.markers_service"
    )  # fmt: skip


def test_signature_loss_on_the_control_too_is_not_the_services() -> None:
    m = _measurement((100, 96), (100, 96), (100, 100))
    _signed(m, (4, 0), (4, 0))
    (v,) = judge(m)
    assert v["verdict"] == "ok"


def test_stun_failing_says_nothing_of_calls_that_carry_no_stun() -> None:
    """Discord's voice and Telegram's reflectors carry no STUN: a censor that drops STUN leaves
    their calls alone, and a failed STUN check must not make them ``blocked``."""
    m = _measurement((100, 100), (100, 100), (100, 100), stun_ok=False)
    _signed(m, (2, 2), (2, 2))  # the original carried the service's framing, and no STUN
    (v,) = judge(m)
    assert (v["verdict"], v["rule_id"]) == ("ok", "call.ok")
    m = _measurement((100, 100), (100, 100), (100, 100), stun_ok=False, marked=(3, 3))
    (v,) = judge(m)  # a service whose calls do carry STUN: still blocked
    assert (v["verdict"], v["mechanism"], v["rule_id"]) == ("blocked", "udp.dpi_call",
                                                            "call.dpi_stun")  # fmt: skip


# -- the lab censor's signatures ---------------------------------------------------------------


def _matches(patterns: tuple[Pattern, ...], payload: bytes) -> bool:
    header = struct.pack("!HHHH", 0, 0, len(payload) + 8, 0)  # the UDP header: offsets -8..-1
    for p in patterns:
        width = len(p.value) // 2
        start = p.offset + 8
        field = (header + payload)[start : start + width]
        if len(field) < width:
            return False
        low, high = bytes.fromhex(p.value), bytes.fromhex(p.value_max or p.value)
        if not low <= field <= high:
            return False
    return True


def _hit(name: str, payload: bytes) -> bool:
    return any(_matches(alt, payload) for alt in SIGNATURES[name][0])


@pytest.mark.parametrize("marker", sorted(SERVICE_SIGNATURES))
def test_each_signature_recognises_its_service_and_no_other(marker: C.Marker) -> None:
    name = SERVICE_SIGNATURES[marker]
    for make, seconds in ((C.voice_profile, 6.0), (C.video_profile, 1.0)):
        mine = make(seconds, 11, marker)
        assert any(_hit(name, p.payload) for p in mine), (name, make.__name__)
        assert not any(_hit(name, p.payload) for p in C.control(mine))
        for other in C.MARKERS:
            if other != marker:
                theirs = make(seconds, 11, other)
                assert not any(_hit(name, p.payload) for p in theirs), (name, other)
                if name != "telegram_reflector":  # port-scoped in the lab, as in nDPI
                    control = C.control(theirs)
                    assert not any(_hit(name, p.payload) for p in control), (name, other)


def test_the_matrix_scopes_telegrams_signature_to_its_ports() -> None:
    from msgwatch.lab.matrix import rows

    assert rows()["telegram"].dpi_ports == ("500-600",)


def test_the_helpers_default_ports_cover_every_call_port_of_the_catalogue() -> None:
    """A production helper must echo on every port the probe replays on (else: false loss)."""
    from msgwatch.cli.helper import default_ports, parse_ports
    from msgwatch.wire.helper_api import CALL_PORTS

    wanted = {p for s in _call_services().values() for f in s.functions for p in f.call_ports}
    assert wanted <= set(CALL_PORTS)
    assert set(parse_ports(default_ports())) == set(CALL_PORTS)
