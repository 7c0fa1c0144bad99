"""The censor's on-path injector: forged DNS answers and HTTP block pages, sent from the censor.

Run inside the censor's namespace by :func:`msgwatch.lab.censor.apply`::

    python -m msgwatch.lab.censor.injector --iface LAN_IF --ready FILE --spec JSON

It reads every frame arriving on the LAN interface with an AF_PACKET socket — which sees a packet
before netfilter does, so it also sees the queries and requests the censor's iptables rules drop —
and answers the ones the spec names with a frame of its own, spoofed from the destination the client
was talking to, written straight back out of the LAN interface (no routing, no netfilter).

- ``kind = "dns"``: a UDP query to port 53 for one of ``names`` (or a name under one) gets an answer
  with ``address`` (A) or ``address6`` (AAAA). When ``hold_ms`` > 0 the censor's raw-table rule
  dropped the query; it is re-sent (raw IP socket, the client's own packet) ``hold_ms`` after the
  forged answer, so the real answer always arrives second.
- ``kind = "http"``: a TCP segment to one of ``ports`` whose payload contains a keyword (the filter
  rule dropped it) is answered in the server's name with a 403 block page or a 302 to the block page
  server, and a FIN.

Bounded: frames are read into a 64 KiB buffer, at most :data:`MAX_HELD` queries are held (beyond
that they are re-sent at once), at most :data:`MAX_PER_SECOND` answers are injected per second, and
the log stops after :data:`MAX_LOG_LINES` lines. Every frame is hostile input: a frame that does not
parse is skipped, and no exception from one frame ends the loop.
"""

from __future__ import annotations

import argparse
import heapq
import ipaddress
import json
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
import dns.rrset

from msgwatch.lab.censor.packets import (
    ACK,
    FIN,
    PSH,
    TCP,
    UDP,
    Frame,
    parse,
    resend_packet,
    tcp_frame,
    udp_frame,
)

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_HELD = 1024
MAX_PER_SECOND = 500
MAX_LOG_LINES = 1000

BLOCKPAGE_HTML = (
    "<!DOCTYPE html><html><head><title>Access restricted</title></head><body>"
    "<h1>Access restricted</h1><p>Access to this resource has been blocked by order of the "
    "authorities (msgwatch lab censor).</p></body></html>"
)


def in_window(hours: list[str] | None, now: time.struct_time | None = None) -> bool:
    """Whether local time ``now`` lies in ``hours`` (``[start, end]``, may wrap past midnight)."""
    if not hours:
        return True
    t = now or time.localtime()
    minute = t.tm_hour * 60 + t.tm_min
    start, end = (int(h[:2]) * 60 + int(h[3:]) for h in hours)
    return start <= minute <= end if start <= end else minute >= start or minute <= end


def _networks(prefixes: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p) for p in prefixes]


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    ip = ipaddress.ip_address(address)
    return not networks or any(ip in n for n in networks)


class Injector:
    """Common state: the frames to send now and the IP packets to re-send later."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.hours: list[str] | None = spec.get("hours")
        self.send: list[bytes] = []
        self.later: list[tuple[float, int, str, bytes]] = []
        """(due, version, destination, IP packet): a heap of held packets."""
        self._budget = float(MAX_PER_SECOND)
        self._refilled = time.monotonic()

    def allowed(self) -> bool:
        """One injection from the per-second budget (a flood is answered only in part)."""
        now = time.monotonic()
        self._budget = min(MAX_PER_SECOND, self._budget + (now - self._refilled) * MAX_PER_SECOND)
        self._refilled = now
        if self._budget < 1:
            return False
        self._budget -= 1
        return True

    def hold(self, frame: Frame, delay: float) -> None:
        if len(self.later) >= MAX_HELD:
            delay = 0.0
        packet = resend_packet(frame)
        heapq.heappush(self.later, (time.monotonic() + delay, frame.version, frame.dst, packet))

    def handle(self, frame: Frame) -> str | None:
        raise NotImplementedError


class DnsInjector(Injector):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.names: list[str] = [n.lower() for n in spec["names"]]
        self.address: str = spec["address"]
        self.address6: str | None = spec.get("address6")
        self.ttl: int = int(spec.get("ttl", 60))
        self.hold_s: float = int(spec.get("hold_ms", 0)) / 1000
        self.resolvers = _networks(spec.get("resolvers") or [])
        # What the raw-table rule matches: the name's wire form, case-insensitively.
        self.patterns = [b"".join(bytes([len(x)]) + x.encode() for x in n.split(".")) + b"\0"
                         for n in self.names]  # fmt: skip

    def _matches(self, qname: str) -> bool:
        return any(qname == n or qname.endswith("." + n) for n in self.names)

    def handle(self, frame: Frame) -> str | None:
        if frame.proto != UDP or frame.dport != 53 or not _within(frame.dst, self.resolvers):
            return None
        active = in_window(self.hours)
        held = self.hold_s > 0 and active and any(p in frame.payload.lower() for p in self.patterns)
        try:
            answer = self._forge(frame.payload) if active else None
        except Exception:  # hostile input: anything that does not parse is not answered
            answer = None
        if answer is not None and self.allowed():
            wire, what = answer
            self.send.append(udp_frame(frame.eth_dst, frame.eth_src, frame.dst, frame.src, 53,
                                       frame.sport, wire))  # fmt: skip
            if held:
                self.hold(frame, self.hold_s)
            return f"forged {what} for {frame.src}:{frame.sport} -> {frame.dst}"
        if held:
            self.hold(frame, 0.0)  # held by the rule but not answered: let it through now
        return None

    def _forge(self, payload: bytes) -> tuple[bytes, str] | None:
        query = dns.message.from_wire(payload[:4096])
        if query.flags & dns.flags.QR or query.opcode() != dns.opcode.QUERY:
            return None
        if len(query.question) != 1:
            return None
        question = query.question[0]
        qname = question.name.to_text(omit_final_dot=True).lower()
        if not self._matches(qname):
            return None
        if question.rdtype == dns.rdatatype.A:
            address = self.address
        elif question.rdtype == dns.rdatatype.AAAA and self.address6:
            address = self.address6
        else:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.RA
        rdtype = dns.rdatatype.to_text(question.rdtype)
        response.answer.append(dns.rrset.from_text(question.name, self.ttl, "IN", rdtype, address))
        return response.to_wire(), f"{qname} {rdtype} {address}"


def _ports(specs: list[str]) -> list[tuple[int, int]]:
    ranges = []
    for text in specs:
        low, _, high = text.partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


class HttpInjector(Injector):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.keywords = [k.lower().encode() for k in spec["keywords"]]
        self.ports = _ports(spec["ports"])
        self.to = _networks(spec.get("to") or [])
        if spec.get("respond") == "redirect":
            self.response = (f"HTTP/1.1 302 Found\r\nLocation: http://{spec['blockpage_ip']}/\r\n"
                             "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
        else:
            body = BLOCKPAGE_HTML.encode()
            self.response = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\n"
                             b"Content-Length: " + str(len(body)).encode() +
                             b"\r\nConnection: close\r\n\r\n" + body)  # fmt: skip

    def handle(self, frame: Frame) -> str | None:
        if frame.proto != TCP or not frame.payload or not frame.flags & ACK:
            return None
        if not any(low <= frame.dport <= high for low, high in self.ports):
            return None
        if not _within(frame.dst, self.to) or not in_window(self.hours):
            return None
        payload = frame.payload.lower()
        if not any(k in payload for k in self.keywords) or not self.allowed():
            return None
        self.send.append(tcp_frame(frame.eth_dst, frame.eth_src, frame.dst, frame.src, frame.dport,
                                   frame.sport, frame.ack, frame.seq + len(frame.payload),
                                   PSH | ACK | FIN, self.response))  # fmt: skip
        return f"block page for {frame.src}:{frame.sport} -> {frame.dst}:{frame.dport}"


def _reinject(raw: dict[int, socket.socket], version: int, dst: str, packet: bytes) -> None:
    try:
        raw[version].sendto(packet, (dst, 0))
    except OSError as exc:
        print(f"re-send to {dst} failed: {exc}", flush=True)  # noqa: T201 (the injector's log)


def serve(iface: str, ready: Path, injector: Injector, stop: Callable[[], bool]) -> None:
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, 0))
    raw = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
           6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}  # fmt: skip
    ready.write_text(f"{os.getpid()}\n")
    logged = 0
    while not stop():
        timeout = 0.5
        if injector.later:
            timeout = max(0.0, min(timeout, injector.later[0][0] - time.monotonic()))
        readable, _, _ = select.select([sniff], [], [], timeout)
        if readable:
            data, address = sniff.recvfrom(65536)
            note = None
            if address[2] != PACKET_OUTGOING:
                try:
                    frame = parse(data)
                    note = injector.handle(frame) if frame is not None else None
                except Exception as exc:  # one bad frame never ends the injector
                    note = f"skipped a frame: {type(exc).__name__}"
            for out in injector.send:
                sniff.send(out)
            injector.send.clear()
            if note and logged < MAX_LOG_LINES:
                logged += 1
                print(note, flush=True)  # noqa: T201 (the injector's log)
        while injector.later and injector.later[0][0] <= time.monotonic():
            _, version, dst, packet = heapq.heappop(injector.later)
            _reinject(raw, version, dst, packet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--ready", required=True, type=Path)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    kinds: dict[str, type[Injector]] = {"dns": DnsInjector, "http": HttpInjector}
    injector = kinds[spec["kind"]](spec)
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"injector {spec['kind']} on {args.iface}: {args.spec}", flush=True)  # noqa: T201
    try:
        serve(args.iface, args.ready, injector, lambda: stopping)
    finally:
        args.ready.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
