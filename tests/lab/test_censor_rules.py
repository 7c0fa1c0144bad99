"""The censor rule library: what each rule compiles to, and what it does on the wire.

The first part needs nothing (validation, compilation, the injector's codecs). The second builds a
client — censor — server network of its own (``tests/lab/censornet.py``), applies one rule type at a
time in the censor namespace and checks what the client sees: a reset, a timeout, a forged answer
that arrives before the real one, a capped download.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun

from msgwatch.lab.censor import (
    RULE_TYPES,
    CensorContext,
    Compiled,
    Rule,
    apply,
    build_rule,
    compile_rules,
    installed,
    remove,
)
from msgwatch.lab.censor.dns import wire_name
from msgwatch.lab.censor.injector import DnsInjector, HttpInjector, in_window
from msgwatch.lab.censor.packets import ACK, FIN, PSH, TCP, UDP, parse, tcp_frame, udp_frame
from tests.lab import censornet as N

CTX = CensorContext(
    netns="mwc000000-censor", lan_if="mwc000000cl", wan_if="mwc000000cw",
    lan_prefix="198.18.200.0/24", lan_prefix6="2001:db8:200::/64", resolver_ip="198.18.200.1",
    blockpage_ip="198.18.200.80", run_dir=Path("/nonexistent/censor"),
)  # fmt: skip


def rules(*tables: dict[str, Any]) -> list[Rule]:
    return [build_rule(t) for t in tables]


# --- validation and compilation (no root needed) ---------------------------------------------


def test_every_rule_type_is_registered_under_its_name() -> None:
    assert set(RULE_TYPES) == {
        "dns_nxdomain", "dns_forge", "dns_inject", "blackhole", "reject_tcp", "reset_on_keyword",
        "drop_on_keyword", "http_redirect_blockpage", "drop_udp", "drop_stun",
        "drop_call_signature", "tcp_signature", "police", "shape", "random_drop",
        "openvpn_fingerprint", "wireguard_fingerprint", "fully_encrypted", "cut_after_bytes",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"type": "drop_tcp"}, "unknown censor rule type 'drop_tcp'; known types: dns_nxdomain"),
        ({"to": ["198.18.16.0/24"]}, "unknown censor rule type None"),
        ({"type": "drop_udp", "port": [3478]}, "censor rule drop_udp: port: unknown field"),
        ({"type": "drop_udp", "ports": [70000]}, "ports.0: port out of range"),
        ({"type": "drop_udp", "ports": ["a-b"]}, "ports.0: not a port or port range"),
        ({"type": "blackhole", "to": ["10.0.0.0/8"]}, "to.0: 10.0.0.0/8 is outside the lab's networks"),
        ({"type": "blackhole", "to": []}, "to: Tuple should have at least 1 item"),
        ({"type": "blackhole", "to": ["198.18.16.0/24"], "hours": ["8:00", "10:00"]}, "hours.0: hours are HH:MM"),
        ({"type": "dns_nxdomain", "names": ["x.example"], "hours": ["08:00", "10:00"]}, "cannot be limited to hours"),
        ({"type": "drop_stun", "hours": ["08:00", "08:00"]}, "start and end must differ"),
        ({"type": "drop_stun", "label": 'a "quoted" label'}, "label: label must be"),
        ({"type": "dns_forge", "names": ["bad name"]}, "names.0: not a DNS name"),
        ({"type": "reset_on_keyword", "keywords": ['a"b']}, "keywords.0: keyword must be"),
        ({"type": "reject_tcp"}, "reject_tcp needs `to` and/or `ports`"),
        ({"type": "random_drop", "percent": 101}, "percent: Input should be less than or equal to 100"),
        ({"type": "drop_call_signature", "signature": "skype"}, "signature: Input should be"),
        ({"type": "drop_call_signature"}, "needs exactly one of `signature`"),
        ({"type": "tcp_signature"}, "tcp_signature needs exactly one of `signature` (mtproto_"),
        ({"type": "tcp_signature", "signature": "mtproto_intermediate", "action": "tarpit"},
         "action: Input should be 'reset' or 'drop'"),
        ({"type": "police", "rate_kbit": 130}, "police needs `to`, `keywords` and/or `ports`"),
    ],
)  # fmt: skip
def test_bad_rules_are_refused_with_a_clear_message(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        build_rule(table)


def test_compile_is_pure_and_gives_one_table_replaced_atomically() -> None:
    compiled = compile_rules(rules(
        {"type": "blackhole", "to": ["198.18.16.0/24", "2001:db8:16::/48"], "label": "telegram"},
        {"type": "drop_udp", "to": ["198.18.16.0/24"], "ports": [3478, "3480-3481"]},
        {"type": "drop_stun", "hours": ["08:00", "10:00"]},
    ), CTX)  # fmt: skip
    lines = compiled.nft.splitlines()
    assert lines[-1] == "}"
    start = lines.index("table inet msgwatch_censor {}")
    assert lines[start + 1 : start + 3] == ["delete table inet msgwatch_censor",
                                            "table inet msgwatch_censor {"]  # fmt: skip
    assert 'ip daddr { 198.18.16.0/24 } drop comment "r0 blackhole telegram"' in compiled.nft
    assert "ip6 saddr { 2001:db8:16::/48 } drop" in compiled.nft
    assert (
        "ip daddr { 198.18.16.0/24 } meta l4proto udp th dport { 3478, 3480-3481 } drop"
        in compiled.nft
    )
    assert 'meta hour "08:00"-"10:00" meta l4proto udp @th,96,32 0x2112a442 drop' in compiled.nft
    assert "priority filter + 10" in compiled.nft
    assert (compiled.iptables, compiled.tc, compiled.resolver_lines, compiled.processes) == (
        [],
        [],
        [],
        [],
    )
    assert not CTX.run_dir.exists()


def test_keyword_rules_compile_to_string_matches_in_the_censors_own_chain() -> None:
    compiled = compile_rules(rules(
        {"type": "reset_on_keyword", "keywords": ["blocked.example"]},
        {"type": "drop_on_keyword", "keywords": ["dropped.example"], "ports": [443]},
        {"type": "police", "rate_kbit": 130, "keywords": ["twitter.com"]},
    ), CTX)  # fmt: skip
    first = compiled.iptables[0]
    assert first[:6] == ["iptables", "-w", "-t", "filter", "-A", "MSGWATCH_CENSOR"]
    assert first[-4:] == ["-j", "REJECT", "--reject-with", "tcp-reset"]
    at = first.index("--string")
    assert first[at - 2 : at + 5] == ["-m", "string", "--string", "blocked.example", "--algo", "bm",
                                      "--icase"]  # fmt: skip
    assert {argv[0] for argv in compiled.iptables} == {"iptables", "ip6tables"}  # the ISP has IPv6
    marks = [argv[-1] for argv in compiled.iptables if "CONNMARK" in argv]
    assert marks == ["0x1/0x1", "0x1/0x1", "0x2/0x2", "0x2/0x2"]  # one bit per rule
    assert "ct mark & 0x00000001 == 0x00000001 drop" in compiled.nft
    assert "limit rate over 16250 bytes/second" in compiled.nft


def test_one_direction_only_police_and_signatures() -> None:
    compiled = compile_rules(rules(
        {"type": "police", "rate_kbit": 20, "to": ["198.18.16.0/24"], "ports": [3478],
         "direction": "down"},
        {"type": "drop_call_signature", "signature": "whatsapp_relay", "to": ["198.18.16.0/24"],
         "direction": "down"},
        {"type": "drop_call_signature", "signature": "stun_binding", "direction": "up"},
    ), CTX)  # fmt: skip
    policed = [line for line in compiled.nft.splitlines() if "limit rate over" in line]
    assert len(policed) == 1 and "ip saddr { 198.18.16.0/24 }" in policed[0]
    assert "th sport { 3478 }" in policed[0] and "_down4" in policed[0]
    signature = [line for line in compiled.nft.splitlines() if "0x0800-0x0802" in line]
    assert len(signature) == 1 and "ip saddr { 198.18.16.0/24 }" in signature[0]
    assert "ct direction original @th,64,16 0x0001" in compiled.nft
    both = compile_rules(rules({"type": "police", "rate_kbit": 20, "ports": [3478]}), CTX)
    policers = sum("limit rate over" in line for line in both.nft.splitlines())
    assert policers == 4  # 2 ways × 2 families


def test_tcp_signatures_match_the_payload_after_the_tcp_header() -> None:
    compiled = compile_rules(rules(
        {"type": "tcp_signature", "signature": "mtproto_intermediate"},
        {"type": "tcp_signature", "patterns": [{"offset": 2, "value": "cafe"}], "ports": [443],
         "to": ["198.18.16.0/24"], "action": "drop"},
    ), CTX)  # fmt: skip
    assert (
        'meta l4proto tcp @ih,0,32 0xeeeeeeee reject with tcp reset comment "r0 tcp_signature"'
        in compiled.nft
    )
    assert (
        "ip daddr { 198.18.16.0/24 } meta l4proto tcp th dport { 443 } @ih,16,16 0xcafe drop"
        in compiled.nft
    )
    assert "saddr" not in compiled.nft  # the client's bytes only: nothing on the way back
    assert compiled.iptables == []


def test_resolver_lies_are_dnsmasq_lines() -> None:
    compiled = compile_rules(rules(
        {"type": "dns_nxdomain", "names": ["Blocked.Example."]},
        {"type": "dns_forge", "names": ["forged.example"]},
        {"type": "dns_forge", "names": ["six.example"], "address": "198.18.3.80", "address6": "2001:db8:3::80"},
    ), CTX)  # fmt: skip
    assert compiled.resolver_lines == [
        "address=/blocked.example/", "address=/forged.example/198.18.200.80",
        "local=/forged.example/", "address=/six.example/198.18.3.80",
        "address=/six.example/2001:db8:3::80",
    ]  # fmt: skip


def test_injection_compiles_to_a_hold_rule_and_a_helper() -> None:
    compiled = compile_rules(rules({"type": "dns_inject", "names": ["blocked.example"]}), CTX)
    assert wire_name("blocked.example") == "|07|blocked|07|example|00|"
    raw = compiled.iptables[0]
    assert raw[3] == "raw" and raw[raw.index("-i") + 1] == CTX.lan_if and raw[-2:] == ["-j", "DROP"]
    (process,) = compiled.processes
    assert process.name == "r0-dns"
    assert process.argv[1:3] == ["-m", "msgwatch.lab.censor.injector"]
    assert process.ready == CTX.run_dir / "censor-r0-dns.ready"


def test_hours_window_wraps_past_midnight() -> None:
    at = time.struct_time((2026, 1, 1, 23, 30, 0, 0, 1, 0))
    assert in_window(["22:00", "02:00"], at)
    assert not in_window(["08:00", "10:00"], at)
    assert in_window(None, at)


# --- the injector's codecs, on synthetic frames -----------------------------------------------

MAC_C, MAC_R = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def test_the_dns_injector_forges_an_answer_in_the_resolvers_name() -> None:
    import dns.message

    query = dns.message.make_query("www.blocked.example", "A")
    frame = parse(
        udp_frame(MAC_C, MAC_R, "198.18.200.2", "198.18.3.53", 40000, 53, query.to_wire())
    )
    assert frame is not None and frame.proto == UDP and frame.dport == 53
    injector = DnsInjector(
        {"names": ["blocked.example"], "address": "198.18.200.80", "hold_ms": 100}
    )
    assert injector.handle(frame) is not None
    (sent,) = injector.send
    answer = parse(sent)
    assert answer is not None
    assert (answer.src, answer.sport, answer.dst, answer.dport) == (
        "198.18.3.53",
        53,
        "198.18.200.2",
        40000,
    )
    assert (answer.eth_src, answer.eth_dst) == (MAC_R, MAC_C)
    message = dns.message.from_wire(answer.payload)
    assert message.id == query.id and [r.to_text() for r in message.answer[0]] == ["198.18.200.80"]
    assert len(injector.later) == 1  # the query, re-sent after hold_ms
    other = parse(udp_frame(MAC_C, MAC_R, "198.18.200.2", "198.18.3.53", 40001, 53,
                            dns.message.make_query("other.example", "A").to_wire()))  # fmt: skip
    assert other is not None and injector.handle(other) is None and len(injector.send) == 1


def test_the_injectors_survive_garbage() -> None:
    dns_injector = DnsInjector({"names": ["blocked.example"], "address": "198.18.200.80"})
    http_injector = HttpInjector({"keywords": ["blocked.example"], "ports": ["80"],
                                  "blockpage_ip": "198.18.200.80"})  # fmt: skip
    rng = __import__("random").Random(7)
    for size in range(0, 300, 3):
        junk = bytes(rng.randrange(256) for _ in range(size))
        for frame in (junk, udp_frame(MAC_C, MAC_R, "198.18.200.2", "198.18.3.53", 1, 53, junk),
                      tcp_frame(MAC_C, MAC_R, "198.18.200.2", "198.18.3.80", 1, 80, 1, 1, ACK, junk)):  # fmt: skip
            parsed = parse(frame)
            if parsed is not None:
                assert dns_injector.handle(parsed) is None
                assert http_injector.handle(parsed) is None
    assert parse(b"\x00" * 13) is None


def test_the_http_injector_answers_in_the_servers_name() -> None:
    request = b"GET / HTTP/1.1\r\nHost: www.Blocked.Example\r\n\r\n"
    frame = parse(tcp_frame(MAC_C, MAC_R, "198.18.200.2", "198.18.16.10", 50000, 80, 1000, 5000,
                            PSH | ACK, request))  # fmt: skip
    assert frame is not None and frame.proto == TCP
    injector = HttpInjector({"keywords": ["blocked.example"], "ports": ["80"], "respond": "redirect",
                             "blockpage_ip": "198.18.200.80"})  # fmt: skip
    assert injector.handle(frame) is not None
    answer = parse(injector.send[0])
    assert answer is not None
    assert (answer.src, answer.sport, answer.seq, answer.ack) == (
        "198.18.16.10",
        80,
        5000,
        1000 + len(request),
    )
    assert answer.flags == PSH | ACK | FIN
    assert answer.payload.startswith(b"HTTP/1.1 302 Found\r\nLocation: http://198.18.200.80/\r\n")


# --- on the wire -----------------------------------------------------------------------------


def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    for exe in ("ip", "nft", "iptables", "tc"):
        if shutil.which(exe, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            pytest.skip(f"needs {exe}")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[N.CensorNet]:
    _needs_root()
    os.environ["MSGWATCH_ALLOWED_NETWORKS"] = "127.0.0.0/8,::1/128,198.18.0.0/15,2001:db8::/32"
    with N.censornet(tmp_path_factory.mktemp("censornet")) as (network, _, _):
        yield network


@pytest.fixture
def censor(net: N.CensorNet) -> Iterator[Any]:
    """``censor(table, ...)``: compile and apply these rules; everything is removed afterwards."""

    def use(*tables: dict[str, Any]) -> Compiled:
        compiled = compile_rules(rules(*tables), net.ctx)
        apply(compiled, net.ctx)
        return compiled

    try:
        yield use
    finally:
        remove(net.ctx)


@pytest.mark.netns
def test_the_network_is_closed(net: N.CensorNet) -> None:
    for ns in net.namespaces:
        assert N.sh("ip", "-n", ns, "route", "show", "default") == ""
        assert N.sh("ip", "-n", ns, "-6", "route", "show", "default") == ""
    assert net.client(N.tls_hello, N.SERVER, "other.example") == "ok"
    assert net.client(N.tls_hello, N.SERVER6, "other.example") == "ok"


@pytest.mark.netns
def test_reset_on_keyword(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "reset_on_keyword", "keywords": ["blocked.example"]})
    assert net.client(N.tls_hello, N.SERVER, "www.blocked.example") == "reset"
    assert net.client(N.tls_hello, N.SERVER, "other.example") == "ok"
    assert net.client(N.tls_hello, N.SERVER6, "blocked.example") == "reset"
    assert net.client(N.http_get, N.SERVER, "blocked.example") == "reset"
    assert "real page for other.example" in net.client(N.http_get, N.SERVER, "other.example")


@pytest.mark.netns
def test_drop_on_keyword_blackholes_the_flow_and_for_a_while_the_server(
    net: N.CensorNet, censor: Any
) -> None:
    censor({"type": "drop_on_keyword", "keywords": ["dropped.example"], "residual_seconds": 60})
    assert net.client(N.tls_hello, N.SERVER_B, "other.example") == "ok"
    assert net.client(N.tls_hello, N.SERVER_B, "dropped.example", 443, 1.0) == "timeout"
    # Residual: the same client to the same server and port, now with an innocent SNI.
    assert net.client(N.tls_hello, N.SERVER_B, "other.example", 443, 1.0) == "timeout"
    assert net.client(N.tls_hello, N.SERVER_C, "other.example") == "ok"


@pytest.mark.netns
def test_http_redirect_blockpage(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "http_redirect_blockpage", "keywords": ["blocked.example"]},
        {"type": "http_redirect_blockpage", "to": ["198.18.203.0/24"]},
    )
    injected = net.client(N.http_get, N.SERVER, "www.blocked.example")
    assert injected.startswith("HTTP/1.1 403 Forbidden") and "blocked by order" in injected
    assert "real page for other.example" in net.client(N.http_get, N.SERVER, "other.example")
    assert N.BLOCKPAGE_BODY.decode() in net.client(N.http_get, N.SERVER_C, "anything.example")
    assert net.client(N.tls_hello, N.SERVER_C, "anything.example") == "ok"  # only port 80


@pytest.mark.netns
def test_blackhole(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "blackhole", "to": ["198.18.202.0/24", "2001:db8:200:1::2/128"]})
    assert net.client(N.tcp_exchange, N.SERVER_B, 443) == "timeout"
    assert net.client(N.udp_echo, N.SERVER_B, 3478, [b"x" * 20]) == 0
    assert net.client(N.tcp_exchange, N.SERVER6, 443) == "timeout"
    assert net.client(N.tcp_exchange, N.SERVER, 443) == "connected"


@pytest.mark.netns
def test_reject_tcp(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "reject_tcp", "to": ["198.18.202.0/24"], "ports": [443]},
        {"type": "reject_tcp", "to": ["198.18.203.0/24"], "stage": "data"},
    )
    assert net.client(N.tcp_exchange, N.SERVER_B, 443) == "refused"
    assert net.client(N.tcp_exchange, N.SERVER_B, 80) == "connected"
    assert net.client(N.tcp_exchange, N.SERVER_C, 80) == "connected"
    assert net.client(N.tcp_exchange, N.SERVER_C, 80, b"GET / HTTP/1.0\r\n\r\n") == "reset"
    assert net.client(N.tcp_exchange, N.SERVER, 80, b"GET / HTTP/1.0\r\n\r\n") == "sent"


@pytest.mark.netns
def test_drop_udp(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "drop_udp", "to": ["198.18.202.0/24"], "ports": ["3478-3478"]})
    assert net.client(N.udp_echo, N.SERVER_B, 3478, [b"x" * 20] * 2) == 0
    assert net.client(N.udp_echo, N.SERVER_B, 3479, [b"x" * 20] * 2) == 2
    assert net.client(N.udp_echo, N.SERVER, 3478, [b"x" * 20] * 2) == 2


@pytest.mark.netns
def test_drop_stun(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "drop_stun"})
    binding = bytes(stun.Message(message_method=stun.Method.BINDING,
                                 message_class=stun.Class.REQUEST))  # fmt: skip
    assert binding[4:8] == bytes.fromhex("2112a442")
    noise = os.urandom(len(binding))
    assert net.client(N.udp_echo, N.SERVER, 3478, [binding]) == 0
    assert net.client(N.udp_echo, N.SERVER, 5000, [binding]) == 0  # any port
    assert net.client(N.udp_echo, N.SERVER, 3478, [noise]) == 1


@pytest.mark.netns
def test_drop_call_signature(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "drop_call_signature", "signature": "whatsapp_relay", "ports": [3478]},
        {"type": "drop_call_signature", "signature": "rtp_dynamic"},
        {
            "type": "drop_call_signature",
            "patterns": [{"offset": 2, "value": "cafe"}],
            "ports": [5001],
        },
    )
    relay = bytes.fromhex("0801 0000 2112a442") + os.urandom(12)
    assert net.client(N.udp_echo, N.SERVER, 3478, [relay]) == 0
    binding = bytes.fromhex("0001 0000 2112a442") + os.urandom(12)
    assert net.client(N.udp_echo, N.SERVER, 3478, [binding]) == 1
    rtp = bytes.fromhex("80 6f 0001 00000000 deadbeef") + os.urandom(160)
    inverted = bytes(b ^ 0xFF for b in rtp)
    assert net.client(N.udp_echo, N.SERVER, 5000, [rtp]) == 0
    assert net.client(N.udp_echo, N.SERVER, 5000, [inverted]) == 1
    assert net.client(N.udp_echo, N.SERVER, 5001, [b"\x00\x00\xca\xfe" + os.urandom(8)]) == 0
    assert net.client(N.udp_echo, N.SERVER, 5001, [b"\xca\xfe\x00\x00" + os.urandom(8)]) == 1


@pytest.mark.netns
def test_tcp_signature(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "tcp_signature", "signature": "mtproto_intermediate"},
        {"type": "tcp_signature", "signature": "whatsapp_prologue", "to": ["198.18.202.0/24"],
         "action": "drop"},
    )  # fmt: skip
    request = b"GET / HTTP/1.0\r\n\r\n"  # the port 80 server answers once it sees the blank line
    mtproto = b"\xee\xee\xee\xee" + request
    assert net.client(N.tcp_exchange, N.SERVER, 80) == "connected"  # the handshake passes
    assert net.client(N.tcp_exchange, N.SERVER, 80, mtproto) == "reset"
    assert net.client(N.tcp_exchange, N.SERVER_C, 443, mtproto) == "reset"  # any address, port
    assert net.client(N.tcp_exchange, N.SERVER6, 80, mtproto) == "reset"
    assert net.client(N.tcp_exchange, N.SERVER, 80, request) == "sent"
    assert net.client(N.tcp_exchange, N.SERVER, 80, request + b"\xee\xee\xee\xee") == "sent"
    assert net.client(N.tcp_exchange, N.SERVER_B, 80, b"WA" + request) == "timeout"
    assert net.client(N.tcp_exchange, N.SERVER, 80, b"WA" + request) == "sent"  # not to `to`


@pytest.mark.netns
def test_random_drop(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "random_drop", "percent": 50, "to": ["198.18.202.0/24"], "protocol": "udp"},
        {"type": "random_drop", "percent": 50, "to": ["198.18.203.0/24"], "per": "packet"},
    )
    per_flow = net.client(N.udp_echo_many, N.SERVER_B, 5000, 200)
    assert 60 <= per_flow <= 140, per_flow
    # Per packet, both directions: a round trip survives with (1 - 0.5)² = 25 %.
    per_packet = net.client(N.udp_echo, N.SERVER_C, 5000, [b"y" * 32] * 100, 0.02, False)
    assert 8 <= per_packet <= 45, per_packet
    assert net.client(N.udp_echo_many, N.SERVER, 5000, 50) == 50


@pytest.mark.netns
def test_police_caps_a_download_near_the_rate(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "police", "rate_kbit": 800, "to": ["198.18.202.0/24"]})
    rate = net.client(N.download_rate, N.SERVER_B, 9000, 3.0) * 8 / 1000
    assert 800 * 0.7 <= rate <= 800 * 1.3, f"{rate:.0f} kbit/s"
    free = net.client(N.download_rate, N.SERVER, 9000, 1.0) * 8 / 1000
    assert free > 5 * 800, f"{free:.0f} kbit/s"


@pytest.mark.netns
def test_police_keyed_on_sni(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "police", "rate_kbit": 130, "keywords": ["twitter.com"], "ports": [443]})
    rate = net.client(N.download_rate, N.SERVER, 443, 3.0, 0.5, "abs.twitter.com") * 8 / 1000
    assert 130 * 0.7 <= rate <= 130 * 1.3, f"{rate:.0f} kbit/s"
    free = net.client(N.download_rate, N.SERVER, 443, 1.0, 0.5, "other.example") * 8 / 1000
    assert free > 5 * 130, f"{free:.0f} kbit/s"


@pytest.mark.netns
def test_shape(net: N.CensorNet, censor: Any) -> None:
    censor({"type": "shape", "rate_kbit": 2000, "to": ["198.18.202.0/24"]})
    # The client and the server are threads of this process: on a busy machine they may move
    # less than the cap by themselves, so the floor is what they move unshaped, up to the cap,
    # and a reading under it is taken again (up to three): a slow reading is the machine's, while
    # every reading must stay under the cap.
    free = net.client(N.download_rate, N.SERVER, 9000, 1.5, 0.5) * 8 / 1000
    rates: list[float] = []
    while len(rates) < 3 and (not rates or max(rates) < 0.7 * min(2000, free)):
        rates.append(net.client(N.download_rate, N.SERVER_B, 9000, 3.0, 1.0) * 8 / 1000)
    shown = ", ".join(f"{r:.0f}" for r in rates)
    assert 0.7 * min(2000, free) <= max(rates), f"{shown} kbit/s (free {free:.0f})"
    assert max(rates) <= 2000 * 1.3, f"{shown} kbit/s (free {free:.0f})"
    assert free > 2000 * 1.3, f"{free:.0f} kbit/s"  # the other prefix is not shaped


def _window(start_h: int, end_h: int) -> list[str]:
    now = time.localtime()
    return [f"{(now.tm_hour + start_h) % 24:02d}:{now.tm_min:02d}",
            f"{(now.tm_hour + end_h) % 24:02d}:{now.tm_min:02d}"]  # fmt: skip


@pytest.mark.netns
def test_hours(net: N.CensorNet, censor: Any) -> None:
    censor(
        {"type": "drop_udp", "ports": [3478], "hours": _window(-1, 1)},  # contains now
        {"type": "drop_udp", "ports": [3479], "hours": _window(2, 3)},  # does not
        {"type": "reset_on_keyword", "keywords": ["now.example"], "hours": _window(-1, 1)},
        {"type": "reset_on_keyword", "keywords": ["later.example"], "hours": _window(2, 3)},
    )
    assert net.client(N.udp_echo, N.SERVER, 3478, [b"z" * 8]) == 0
    assert net.client(N.udp_echo, N.SERVER, 3479, [b"z" * 8]) == 1
    assert net.client(N.tls_hello, N.SERVER, "now.example") == "reset"
    assert net.client(N.tls_hello, N.SERVER, "later.example") == "ok"


@pytest.mark.netns
def test_dns_inject_answers_first_and_the_real_answer_follows(
    net: N.CensorNet, censor: Any
) -> None:
    censor({"type": "dns_inject", "names": ["blocked.example"], "address6": "2001:db8:200::80"})
    first, second = net.client(N.dns_answers, N.SERVER, "www.blocked.example")
    assert first == ("NOERROR", [N.BLOCKPAGE]) and second == ("NOERROR", [N.REAL_A])
    assert net.client(N.dns_answers, N.SERVER, "other.example") == [("NOERROR", [N.REAL_A])]
    six = net.client(N.dns_answers, N.SERVER6, "blocked.example", "AAAA")
    assert six == [("NOERROR", ["2001:db8:200::80"]), ("NOERROR", [N.REAL_AAAA])]
    # Garbage to port 53 does not stop it.
    net.client(N.udp_echo, N.SERVER, 53, [os.urandom(n) for n in (0, 1, 12, 40, 300)], 0.05)
    assert net.client(N.dns_answers, N.SERVER, "blocked.example")[0] == ("NOERROR", [N.BLOCKPAGE])
    assert len(installed(net.ctx).processes) == 1


@pytest.mark.netns
def test_resolver_lies_and_injection_at_the_isp_resolver(net: N.CensorNet, censor: Any) -> None:
    dnsmasq = shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if dnsmasq is None:
        pytest.skip("needs dnsmasq")
    compiled = censor(
        {"type": "dns_nxdomain", "names": ["nx.example"]},
        {"type": "dns_forge", "names": ["forged.example"]},
        {"type": "dns_inject", "names": ["injected.example"]},
    )
    conf = net.ctx.run_dir / "censor-resolver.conf"
    assert conf.read_text().splitlines() == compiled.resolver_lines
    proc = subprocess.Popen(
        ["ip", "netns", "exec", net.censor_ns, dnsmasq, "-k", "--no-resolv", "--no-hosts",
         "--bind-interfaces", f"--listen-address={N.CENSOR_LAN}", f"--server={N.SERVER}",
         "--pid-file=", f"--conf-file={conf}", "--cache-size=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if net.client(N.dns_answers, N.CENSOR_LAN, "ready.example", "A", 0.05):
                break
        assert net.client(N.dns_answers, N.CENSOR_LAN, "www.nx.example") == [("NXDOMAIN", [])]
        assert net.client(N.dns_answers, N.CENSOR_LAN, "forged.example") == [
            ("NOERROR", [N.BLOCKPAGE])
        ]
        assert net.client(N.dns_answers, N.CENSOR_LAN, "forged.example", "AAAA") == [
            ("NOERROR", [])
        ]
        assert net.client(N.dns_answers, N.CENSOR_LAN, "other.example") == [("NOERROR", [N.REAL_A])]
        assert net.client(N.dns_answers, N.CENSOR_LAN, "injected.example") == [
            ("NOERROR", [N.BLOCKPAGE]), ("NOERROR", [N.REAL_A])]  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.netns
def test_apply_twice_replaces_and_remove_leaves_nothing(net: N.CensorNet, censor: Any) -> None:
    tables = (
        {"type": "blackhole", "to": ["198.18.202.0/24"]},
        {"type": "reset_on_keyword", "keywords": ["blocked.example"]},
        {"type": "dns_inject", "names": ["blocked.example"]},
        {"type": "shape", "rate_kbit": 10000},
    )
    censor(*tables)
    once = installed(net.ctx)
    censor(*tables)
    twice = installed(net.ctx)
    assert once.nft_rules == twice.nft_rules == 2
    assert sorted(once.iptables_rules) == sorted(twice.iptables_rules)
    assert (
        sum("-A MSGWATCH_CENSOR" in r for r in twice.iptables_rules) == 4
    )  # raw + filter, v4 + v6
    assert twice.qdiscs == [net.ctx.lan_if, net.ctx.wan_if]
    assert len(twice.processes) == 1 and once.processes != twice.processes  # restarted
    pid = int(twice.processes[0].split("pid ")[1].rstrip(")"))
    censor({"type": "drop_udp", "ports": [9]})  # a later phase: only this rule is left
    phase = installed(net.ctx)
    assert (phase.nft_rules, phase.iptables_rules, phase.qdiscs, phase.processes) == (2, [], [], [])
    remove(net.ctx)
    assert installed(net.ctx).empty
    assert net.censor("nft", "list", "ruleset").count("MSGWATCH") == 0
    assert "msgwatch_censor" not in net.censor("nft", "list", "tables")
    assert not list(net.ctx.run_dir.glob("censor-*.lab"))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    remove(net.ctx)  # twice is fine


@pytest.mark.netns
def test_service_call_signatures_on_the_wire(net: N.CensorNet, censor: Any) -> None:
    """Each service's own signature drops that service's framed datagrams of the probe's profile
    (nft's longest raw matches included: 96 bits for Telegram, the UDP length for Viber), and not
    their bit-inverted copies."""
    from msgwatch.wire import calltraffic as C

    signatures = {"telegram": "telegram_reflector", "viber": "viber_udp",
                  "discord": "discord_voice", "messenger": "messenger_ice",
                  "signal": "signal_turn", "zoom": "zoom_media", "teams": "teams_media"}  # fmt: skip
    censor(*({"type": "drop_call_signature", "signature": s}
             | ({"ports": [5001]} if s == "telegram_reflector" else {})  # nDPI: ports 500-600
             for s in signatures.values()))  # fmt: skip
    for marker in signatures:
        port = 5001 if marker == "telegram" else 5000
        packets = C.voice_profile(3.0, 7, marker)  # type: ignore[arg-type]
        kinds = C.framings(packets, marker)  # type: ignore[arg-type]
        framed = [packets[i].payload for i in sorted(kinds["stun"] | kinds["signature"])]
        if marker in ("zoom", "teams"):  # their signatures key on the media, not on STUN
            framed = [packets[i].payload for i in sorted(kinds["signature"])]
            framed.append(packets[-1].payload)
        if marker == "signal":
            framed = framed[:1]  # the Allocate; the ICE check that follows is generic
        if marker == "viber":
            framed = framed[1:]  # the Viber packets; the ICE check before them is generic
        assert net.client(N.udp_echo, N.SERVER, port, framed) == 0, marker
        inverted = [bytes(b ^ 0xFF for b in p) for p in framed]
        assert net.client(N.udp_echo, N.SERVER, port, inverted) == len(inverted), marker
