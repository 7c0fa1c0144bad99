"""The fully-encrypted-traffic watcher: the GFW's 2023 heuristics on each TCP flow's first payload.

Run inside the censor's namespace by :func:`msgwatch.lab.censor.apply` for a ``fully_encrypted``
rule (:class:`msgwatch.lab.censor.circumvention.FullyEncrypted`)::

    python -m msgwatch.lab.censor.fet --iface LAN_IF --ready FILE --spec JSON

How the GFW did it (Wu et al., "How the Great Firewall of China Detects and Blocks Fully Encrypted
Traffic", USENIX Security 2023; OpenGFW ``analyzer/tcp/fet.go``): the first data packet a client
sends on a TCP connection is examined once. It is *exempt* when any of these holds —

- Ex1: the average number of set bits per byte is ≤ 3.4 or ≥ 4.6 (random bytes average 4);
- Ex2: its first 6 bytes are printable ASCII (0x20-0x7e);
- Ex3: more than 50 % of its bytes are printable;
- Ex4: it holds a run of more than 20 contiguous printable bytes;
- Ex5: it opens like TLS (``[\\x16-\\x17]\\x03[\\x00-\\x09]``) or an HTTP request method;

— and otherwise the connection is blocked (with some probability): every later packet from the
client to that server address and port — the 3-tuple — is dropped for 180 s; the first packet itself
got through, and other ports of the same server stay open.

Here the pure part (:func:`classify`, :class:`Watcher`) takes frames and a time and returns
decisions; :func:`serve` does the I/O: an AF_PACKET socket on the LAN interface (it sees a packet
before netfilter does) and ``nft add element`` into the rule's set, whose timeout is the residual
and which the censor's forward chain drops.

Bounded: frames are read into a 64 KiB buffer; at most :data:`MAX_FLOWS` flows wait for their
first payload (the oldest is forgotten first, each after :data:`FLOW_TTL` s); at most
:data:`MAX_BLOCKS_PER_SECOND` blocks are added per second; the log stops after
:data:`MAX_LOG_LINES` lines. A frame that does not parse is skipped, and no exception from one
frame ends the loop.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.lab.censor.packets import ACK, SYN, TCP, Frame, parse

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FLOWS = 4096
FLOW_TTL = 30.0
MAX_BLOCKS_PER_SECOND = 50
MAX_LOG_LINES = 1000
NFT_TIMEOUT = 5.0

POPCOUNT_LOW, POPCOUNT_HIGH = 3.4, 4.6
"""Ex1's bounds: a payload averaging at most the first or at least the second is exempt."""
PRINTABLE_PREFIX = 6
PRINTABLE_FRACTION = 0.5
PRINTABLE_RUN = 20
TLS_PREFIX = re.compile(rb"[\x16-\x17]\x03[\x00-\x09]")
HTTP_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE",
                b"PATCH")  # fmt: skip
"""Ex5's request methods: the payload's first 3-7 bytes (the paper: its first 3 or 4 bytes)."""
_POPCOUNT = bytes(bin(i).count("1") for i in range(256))
_PRINTABLE = bytes(range(0x20, 0x7F))


@dataclass(frozen=True)
class Classification:
    """What the heuristics measured in one payload, and whether it is exempt."""

    popcount: float
    """Ex1: average set bits per byte."""
    first_six_printable: bool
    """Ex2."""
    printable_fraction: float
    """Ex3: the share of bytes in 0x20-0x7e."""
    longest_printable: int
    """Ex4: the longest run of printable bytes."""
    tls_or_http: bool
    """Ex5."""

    @property
    def exemption(self) -> str | None:
        """The first exemption that holds (``ex1`` … ``ex5``), or None: fully encrypted."""
        if self.popcount <= POPCOUNT_LOW or self.popcount >= POPCOUNT_HIGH:
            return "ex1"
        if self.first_six_printable:
            return "ex2"
        if self.printable_fraction > PRINTABLE_FRACTION:
            return "ex3"
        if self.longest_printable > PRINTABLE_RUN:
            return "ex4"
        if self.tls_or_http:
            return "ex5"
        return None

    def describe(self) -> str:
        return (
            f"popcount {self.popcount:.2f}, printable {self.printable_fraction:.2f}, "
            f"run {self.longest_printable}, "
            f"{self.exemption or 'not exempt'}"
        )


def classify(payload: bytes) -> Classification:
    """The Ex1-Ex5 measurements of a client's first payload (an empty one is exempt by Ex1)."""
    size = len(payload)
    popcount = sum(_POPCOUNT[b] for b in payload) / size if size else 0.0
    printable = [b in _PRINTABLE for b in payload]
    longest = run = 0
    for is_printable in printable:
        run = run + 1 if is_printable else 0
        longest = max(longest, run)
    return Classification(
        popcount=popcount,
        first_six_printable=size >= PRINTABLE_PREFIX and all(printable[:PRINTABLE_PREFIX]),
        printable_fraction=sum(printable) / size if size else 0.0,
        longest_printable=longest,
        tls_or_http=bool(TLS_PREFIX.match(payload)) or payload.startswith(HTTP_METHODS),
    )


@dataclass(frozen=True)
class Block:
    """A decision: drop the client → server:port 3-tuple (IP ``version`` 4 or 6)."""

    version: int
    client: str
    server: str
    port: int
    classification: Classification


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _port_ranges(specs: Sequence[str]) -> list[tuple[int, int]]:
    ranges = []
    for text in specs:
        low, _, high = str(text).partition("-")
        ranges.append((int(low), int(high or low)))
    return ranges


class Watcher:
    """The flow table and the decisions (pure: frames and times in, blocks and log notes out)."""

    def __init__(
        self,
        to: Sequence[str] = (),
        ports: Sequence[str] = (),
        probability: float = 1.0,
        rng: random.Random | None = None,
        max_flows: int = MAX_FLOWS,
        flow_ttl: float = FLOW_TTL,
        max_blocks_per_second: int = MAX_BLOCKS_PER_SECOND,
    ) -> None:
        self.to: list[Network] = [ipaddress.ip_network(p) for p in to]
        self.ports = _port_ranges(ports)
        self.probability = probability
        self.rng = rng or random.Random()
        self.max_flows = max_flows
        self.flow_ttl = flow_ttl
        self.max_blocks = max_blocks_per_second
        self.flows: OrderedDict[tuple[str, int, str, int], float] = OrderedDict()
        """(client, client port, server, server port) → when its SYN was seen."""
        self._budget = float(max_blocks_per_second)
        self._refilled: float | None = None

    def _watched(self, frame: Frame) -> bool:
        if self.ports and not any(low <= frame.dport <= high for low, high in self.ports):
            return False
        ip = ipaddress.ip_address(frame.dst)
        return not self.to or any(ip in n for n in self.to)

    def _expire(self, now: float) -> None:
        while self.flows:
            seen = next(iter(self.flows.values()))
            if now - seen <= self.flow_ttl and len(self.flows) <= self.max_flows:
                break
            self.flows.popitem(last=False)

    def _allowed(self, now: float) -> bool:
        """One block from the per-second budget (a flood of triggers is blocked only in part)."""
        if self._refilled is not None:
            self._budget = min(
                self.max_blocks, self._budget + (now - self._refilled) * self.max_blocks
            )
        self._refilled = now
        if self._budget < 1:
            return False
        self._budget -= 1
        return True

    def handle(self, frame: Frame, now: float) -> tuple[Block | None, str | None]:
        """(the block this client frame triggers, a note for the log); both None for most frames."""
        if frame.proto != TCP:
            return None, None
        key = (frame.src, frame.sport, frame.dst, frame.dport)
        if frame.flags & SYN and not frame.flags & ACK:  # a client opening a flow
            if self._watched(frame):
                self.flows[key] = now
                self.flows.move_to_end(key)
                self._expire(now)
            return None, None
        if not frame.payload or key not in self.flows:
            return None, None
        seen = self.flows.pop(key)
        if now - seen > self.flow_ttl:
            return None, None
        verdict = classify(frame.payload)
        flow = f"{frame.src}:{frame.sport} -> {frame.dst}:{frame.dport}"
        if verdict.exemption is not None:
            return None, f"exempt {flow} ({verdict.describe()})"
        if self.rng.random() >= self.probability:
            return None, f"spared {flow} ({verdict.describe()}; probability {self.probability})"
        if not self._allowed(now):
            return None, f"over the block rate, not blocked: {flow}"
        block = Block(frame.version, frame.src, frame.dst, frame.dport, verdict)
        return block, f"blocked {frame.src} -> {frame.dst}:{frame.dport} ({verdict.describe()})"


def in_window(hours: Sequence[str] | None, now: time.struct_time | None = None) -> bool:
    """Whether local time ``now`` lies in ``hours`` (``[start, end]``, may wrap past midnight)."""
    if not hours:
        return True
    t = now or time.localtime()
    minute = t.tm_hour * 60 + t.tm_min
    start, end = (int(h[:2]) * 60 + int(h[3:]) for h in hours)
    return start <= minute <= end if start <= end else minute >= start or minute <= end


def nft_add(table: str, sets: dict[str, str], block: Block) -> str | None:
    """Add the block's 3-tuple to the rule's set (its timeout is the residual); the error, or None."""
    name = sets[str(block.version)]
    element = f"{{ {block.client} . {block.server} . {block.port} }}"
    nft = shutil.which("nft", path="/usr/sbin:/usr/bin:/sbin:/bin") or "nft"
    try:
        done = subprocess.run([nft, "add", "element", "inet", table, name, element],
                              capture_output=True, text=True, timeout=NFT_TIMEOUT)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nft add element failed: {exc}"
    return None if done.returncode == 0 else f"nft add element failed: {done.stderr.strip()[:300]}"


def serve(
    iface: str, ready: Path, watcher: Watcher, spec: dict[str, Any], stop: Callable[[], bool]
) -> None:
    sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sniff.bind((iface, 0))
    hours = spec.get("hours")
    ready.write_text(f"{os.getpid()}\n")
    logged = 0
    with sniff:
        while not stop():
            readable, _, _ = select.select([sniff], [], [], 0.5)
            if not readable:
                continue
            data, address = sniff.recvfrom(65536)
            if address[2] == PACKET_OUTGOING or not in_window(hours):
                continue
            notes: list[str] = []
            try:
                frame = parse(data)
                block, note = watcher.handle(frame, time.monotonic()) if frame else (None, None)
                notes += [note] if note else []
                if block is not None:
                    problem = nft_add(spec["table"], spec["sets"], block)
                    notes += [problem] if problem else []
            except Exception as exc:  # one bad frame never ends the watcher
                notes.append(f"skipped a frame: {type(exc).__name__}")
            for note in notes:
                if logged < MAX_LOG_LINES:
                    logged += 1
                    print(note, flush=True)  # noqa: T201 (the watcher's log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iface", required=True)
    parser.add_argument("--ready", required=True, type=Path)
    parser.add_argument("--spec", required=True)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    seed = spec.get("seed")
    watcher = Watcher(spec.get("to") or (), spec.get("ports") or (),
                      float(spec.get("probability", 1.0)),
                      random.Random(seed) if seed is not None else None)  # fmt: skip
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"fet watcher on {args.iface}: {args.spec}", flush=True)  # noqa: T201
    try:
        serve(args.iface, args.ready, watcher, spec, lambda: stopping)
    finally:
        args.ready.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
