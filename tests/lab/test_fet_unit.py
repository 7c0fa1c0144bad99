"""The fully-encrypted-traffic classifier and watcher (:mod:`msgwatch.lab.censor.fet`), without root.

Each exemption Ex1-Ex5 is checked at its boundary with a payload that no other exemption covers; the
watcher's flow table is driven with frames built by :mod:`msgwatch.lab.censor.packets` and a clock
passed in; hostile frames are skipped, never raised on.
"""

from __future__ import annotations

import random
import time

import pytest

from msgwatch.lab.censor.fet import Watcher, classify, in_window
from msgwatch.lab.censor.packets import ACK, PSH, SYN, Frame, parse, tcp_frame, udp_frame

# Non-printable bytes (≥ 0x7f) by their number of set bits: a payload of them alone is exempt by no
# rule but Ex1, whose value is set by the mix.
P1, P2, P3, P4, P5 = 0x80, 0x81, 0x83, 0x87, 0x8F


def mix(**counts: int) -> bytes:
    """``mix(p4=5, p3=5)``: that many bytes of each popcount, one kind after the other."""
    table = {"p1": P1, "p2": P2, "p3": P3, "p4": P4, "p5": P5}
    return b"".join(bytes([table[k]]) * n for k, n in counts.items())


@pytest.mark.parametrize(
    ("payload", "exemption"),
    [
        (mix(p4=4, p3=6), "ex1"),  # 3.4 exactly: exempt
        (mix(p4=5, p3=5), None),  # 3.5
        (mix(p5=6, p4=4), "ex1"),  # 4.6 exactly: exempt
        (mix(p5=5, p4=5), None),  # 4.5
        (b"", "ex1"),  # nothing to measure: popcount 0
    ],
)
def test_ex1_popcount_bounds(payload: bytes, exemption: str | None) -> None:
    assert classify(payload).exemption == exemption


def test_ex2_first_six_printable() -> None:
    assert classify(b"ABCDEF" + mix(p4=20)).exemption == "ex2"
    assert classify(b"ABCDE" + mix(p4=21)).exemption is None
    assert classify(b"ABCDE").exemption != "ex2"  # fewer than six bytes


def test_ex3_more_than_half_printable() -> None:
    half = bytes([P4, ord("U")]) * 10  # 'U' has four bits set, like P4; runs of one
    assert classify(half).printable_fraction == 0.5
    assert classify(half).exemption is None
    assert classify(half + b"U").exemption == "ex3"


def test_ex4_a_run_of_more_than_twenty_printable() -> None:
    twenty = bytes([P4]) + b"U" * 20 + mix(p4=21)
    assert classify(twenty).longest_printable == 20 and classify(twenty).exemption is None
    twenty_one = bytes([P4]) + b"U" * 21 + mix(p4=22)
    assert classify(twenty_one).printable_fraction < 0.5
    assert classify(twenty_one).exemption == "ex4"


@pytest.mark.parametrize(
    ("prefix", "exemption"),
    [
        (b"\x16\x03\x01", "ex5"),
        (b"\x17\x03\x09", "ex5"),
        (b"\x16\x03\x00", "ex5"),
        (b"\x16\x03\x0a", None),
        (b"\x18\x03\x01", None),
        (b"\x15\x03\x01", None),
        (b"GET", "ex5"),
        (b"POST", "ex5"),
        (b"CONNECT", "ex2"),  # seven printable bytes: Ex2 holds first
        (b"GEX", None),
    ],
)
def test_ex5_tls_or_http_prefix(prefix: bytes, exemption: str | None) -> None:
    assert classify(prefix + mix(p4=20)).exemption == exemption


def test_random_bytes_are_fully_encrypted_most_of_the_time() -> None:
    rng = random.Random(13)
    blocked = sum(classify(rng.randbytes(200)).exemption is None for _ in range(200))
    assert blocked > 150  # random bytes are exempt only by chance (mostly Ex1 on short ones)


C, S, S2 = "198.18.200.2", "198.18.201.2", "198.18.202.2"
MAC = b"\x02" * 6


def seg(flags: int, payload: bytes = b"", dst: str = S, dport: int = 40000, sport: int = 50000,
        src: str = C) -> Frame:  # fmt: skip
    frame = parse(tcp_frame(MAC, MAC, src, dst, sport, dport, 1, 1, flags, payload))
    assert frame is not None
    return frame


RANDOM = random.Random(7).randbytes(300)
assert classify(RANDOM).exemption is None


def test_watcher_blocks_on_the_first_payload_only() -> None:
    watcher = Watcher()
    assert watcher.handle(seg(SYN), 0.0) == (None, None)
    assert watcher.handle(seg(ACK), 0.01) == (None, None)
    block, note = watcher.handle(seg(PSH | ACK, RANDOM), 0.02)
    assert block is not None and (block.version, block.client, block.server, block.port) == (
        4, C, S, 40000,
    )  # fmt: skip
    assert note is not None and note.startswith(f"blocked {C} -> {S}:40000 (popcount")
    assert watcher.handle(seg(PSH | ACK, RANDOM), 0.03) == (None, None)  # later payloads: no
    assert not watcher.flows


def test_an_exempt_first_payload_lets_the_flow_be() -> None:
    watcher = Watcher()
    watcher.handle(seg(SYN), 0.0)
    block, note = watcher.handle(seg(PSH | ACK, b"\x16\x03\x01" + RANDOM), 0.1)
    assert block is None and note is not None and note.startswith("exempt") and "ex5" in note
    assert watcher.handle(seg(PSH | ACK, RANDOM), 0.2) == (None, None)


def test_flows_whose_start_was_not_seen_are_ignored() -> None:
    assert Watcher().handle(seg(PSH | ACK, RANDOM), 0.0) == (None, None)


def test_to_and_ports_narrow_what_is_watched() -> None:
    watcher = Watcher(to=["198.18.202.0/24"], ports=["8388", "40000-40001"])
    for dst, port in ((S, 40000), (S2, 443)):
        watcher.handle(seg(SYN, dst=dst, dport=port), 0.0)
    assert not watcher.flows
    watcher.handle(seg(SYN, dst=S2, dport=40001), 0.0)
    assert watcher.handle(seg(ACK | PSH, RANDOM, dst=S2, dport=40001), 0.0)[0] is not None


def test_probability_spares_some_flows_repeatably() -> None:
    def blocked(seed: int) -> list[bool]:
        watcher = Watcher(probability=0.3, rng=random.Random(seed))
        out = []
        for sport in range(1000, 1200):
            watcher.handle(seg(SYN, sport=sport), 0.0)
            out.append(watcher.handle(seg(ACK, RANDOM, sport=sport), 0.0)[0] is not None)
        return out

    assert blocked(1) == blocked(1)
    assert 30 <= sum(blocked(1)) <= 90
    spared = Watcher(probability=0.0)
    spared.handle(seg(SYN), 0.0)
    block, note = spared.handle(seg(ACK, RANDOM), 0.0)
    assert block is None and note is not None and note.startswith("spared")


def test_the_flow_table_is_bounded_and_forgets() -> None:
    watcher = Watcher(max_flows=4, flow_ttl=5.0)
    for sport in range(10):
        watcher.handle(seg(SYN, sport=sport), float(sport) / 100)
    assert [key[1] for key in watcher.flows] == [6, 7, 8, 9]  # the oldest went first
    assert watcher.handle(seg(ACK, RANDOM, sport=9), 5.2)[0] is None  # older than its ttl
    watcher.handle(seg(SYN, sport=20), 20.0)
    assert [key[1] for key in watcher.flows] == [20]  # the stale ones expired


def test_blocks_are_rate_limited() -> None:
    watcher = Watcher(max_blocks_per_second=2)
    results = []
    for sport in range(3):
        watcher.handle(seg(SYN, sport=sport), 0.0)
        results.append(watcher.handle(seg(ACK, RANDOM, sport=sport), 0.0))
    assert [r[0] is not None for r in results] == [True, True, False]
    assert results[2][1] is not None and results[2][1].startswith("over the block rate")
    watcher.handle(seg(SYN, sport=9), 1.0)
    assert watcher.handle(seg(ACK, RANDOM, sport=9), 1.0)[0] is not None  # refilled


def test_ipv6_flows_are_blocked_in_the_ipv6_set() -> None:
    watcher = Watcher()
    watcher.handle(seg(SYN, src="2001:db8:200::2", dst="2001:db8:200:1::2"), 0.0)
    block, _ = watcher.handle(seg(ACK, RANDOM, src="2001:db8:200::2", dst="2001:db8:200:1::2"), 0)
    assert block is not None and block.version == 6


def test_hostile_frames_are_skipped() -> None:
    watcher = Watcher()
    rng = random.Random(99)
    good = tcp_frame(MAC, MAC, C, S, 1, 2, 3, 4, SYN)
    frames: list[bytes] = [rng.randbytes(rng.randrange(0, 120)) for _ in range(3000)]
    for _ in range(2000):  # a valid SYN with three bytes changed anywhere
        mutated = bytearray(good)
        for _ in range(3):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        frames.append(bytes(mutated))
    frames += [good[:n] for n in range(len(good))]
    for data in frames:
        parsed = parse(data)
        if parsed is not None:
            watcher.handle(parsed, 0.0)
    udp = parse(udp_frame(MAC, MAC, C, S, 1, 2, RANDOM))
    assert udp is not None and watcher.handle(udp, 0.0) == (None, None)
    assert len(watcher.flows) <= 4096


def test_in_window() -> None:
    noon = time.struct_time((2024, 1, 1, 12, 0, 0, 0, 1, 0))
    assert in_window(None, noon) and in_window(["11:00", "13:00"], noon)
    assert not in_window(["13:00", "11:00"], noon)
    assert in_window(["23:00", "12:30"], noon)
