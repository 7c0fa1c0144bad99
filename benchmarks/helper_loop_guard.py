"""Benchmark: what the helper's loop guard costs per datagram, and what it stops.

1. The per-datagram decision (:meth:`msgwatch.helper.udp.UDPService.handle`, pure, no sockets)
   with the guard (:mod:`msgwatch.helper.loops`) and with it replaced by one that remembers
   nothing, over the same distinct 200-byte datagrams on 64 flows: microseconds a datagram, the
   best of ``--repeat`` interleaved runs (the machine may be shared).
2. Two real helpers (in-process, real sockets on loopback, disjoint ports) and one datagram from
   helper B's socket to helper A's port — what a forged source address makes — and the datagrams
   both sent in ``--settle`` seconds, with the guard and without.

    python benchmarks/helper_loop_guard.py [--datagrams 100000] [--repeat 5] [--settle 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from dataclasses import replace

from msgwatch.helper import loops
from msgwatch.helper.flows import FlowTable
from msgwatch.helper.limits import Limits
from msgwatch.helper.policy import Policy
from msgwatch.helper.server import Helper, HelperConfig
from msgwatch.helper.udp import UDPService


class NoGuard(loops.RecentReplies):
    """Remembers nothing: the helper as it was before the guard."""

    def digest(self, key: tuple[str, int, int], payload: bytes) -> int:
        return 0

    def times_sent(self, digest: int, now: float) -> int:
        return 0

    def sent(self, digest: int, now: float) -> None:
        pass


def per_datagram(payloads: list[bytes], replies: loops.RecentReplies) -> float:
    limits = Limits(budget_bytes=10**12, rate_pps=10**9)
    service = UDPService(FlowTable(), limits, frozenset({3478}), replies=replies)
    start = time.perf_counter()
    for i, payload in enumerate(payloads):
        service.handle(payload, ("203.0.113.5", 50000 + i % 64), 3478, i * 1e-5)
    return (time.perf_counter() - start) / len(payloads) * 1e6


async def ping_pong(settle: float, guard: bool) -> tuple[int, int]:
    base = HelperConfig(listen=("127.0.0.1",), udp_ports=(0,), tcp_ports=(), control_port=None,
                        policy=Policy.lab(["127.0.0.0/8"]))  # fmt: skip
    async with Helper(base) as a, Helper(replace(base, listen=("127.0.0.2",))) as b:
        if not guard:
            a.udp.replies, b.udp.replies = NoGuard(), NoGuard()
        [endpoint] = b.udp.endpoints.values()
        assert endpoint.transport is not None
        endpoint.transport.sendto(os.urandom(200), a.bound["udp"][0])
        await asyncio.sleep(settle)
        return a.udp.counters.tx_packets, b.udp.counters.tx_packets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datagrams", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--settle", type=float, default=1.0)
    args = parser.parse_args()
    payloads = [os.urandom(200) for _ in range(args.datagrams)]
    with_guard, without = [], []
    for _ in range(args.repeat):
        with_guard.append(per_datagram(payloads, loops.RecentReplies()))
        without.append(per_datagram(payloads, NoGuard()))
    print(f"decision per datagram: {min(with_guard):.2f} us with the guard, "
          f"{min(without):.2f} us without (best of {args.repeat})")  # fmt: skip
    for guard in (True, False):
        sent_a, sent_b = asyncio.run(ping_pong(args.settle, guard))
        print(
            f"one forged datagram between two helpers, {args.settle:g} s, "
            f"{'with' if guard else 'without'} the guard: {sent_a} + {sent_b} datagrams sent"
        )


if __name__ == "__main__":
    main()
