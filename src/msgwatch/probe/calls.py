"""The call path measured with call-shaped traffic (``docs/method/calls.md``).

For a voice or video function with ``call_ports``, and a test helper, the probe replays to the
helper's echo on the service's first call port:

- the **original**: the function's profile (voice: ~50 packets/s of 60-200 bytes; video: bursts of
  1,200-byte packets at ~1 Mbit/s) carrying the service's markers where they are documented;
- the **control**: the same schedule with every payload bit inverted (Wehe's control: identical
  sizes and timing, no protocol a classifier could recognise);

one after the other, in an order drawn at random — and once more, in the other order, when the
comparison is unclear (a confirmation run) — and, at the same time, a **plain** replay of
random bytes with the same sizes on a neutral port. Each becomes a target of its own
(roles ``replay_original``, ``replay_control``, ``replay_neutral``) whose record is in
``msgwatch_replays``; the judge compares them (``msgwatch.verdicts.calls``).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from msgwatch.analysis.stats import ReplayStats, compare_replays
from msgwatch.catalogue import Endpoint, FunctionTargets, Service
from msgwatch.probe import failures as F
from msgwatch.probe.chains import ChainOutcome
from msgwatch.probe.steps.control import helper_measure
from msgwatch.probe.steps.replay import GRACE, ReplayResult, replay
from msgwatch.probe.trace import Trace
from msgwatch.wire import calltraffic as C

NEUTRAL_PORT = 40000
"""A port no messenger uses for calls (the helper echoes on it)."""
MARKERS: dict[str, C.Marker] = {
    "whatsapp": "whatsapp",
    "teams": "teams",
    "skype": "teams",
    "zoom": "zoom",
    "telegram": "telegram",
    "discord": "discord",
}
COOKIE = bytes.fromhex("2112a442")
LOST = 0.5
"""A replay that got less than half of its datagrams back failed."""


@dataclass(frozen=True)
class ReplayPlan:
    role: str
    variant: str
    profile: str
    port: int
    packets: list[C.Packet]
    marker: str | None
    marked: frozenset[int] = frozenset()
    """Indices of the original's STUN-framed datagrams (the same positions in its control)."""


def stun_framed(packets: list[C.Packet]) -> frozenset[int]:
    """Datagrams carrying STUN's magic cookie where STUN puts it (RFC 5389: bytes 4-7)."""
    return frozenset(
        i for i, p in enumerate(packets) if len(p.payload) >= 20 and p.payload[4:8] == COOKIE
    )


def plans(
    service: Service,
    function: FunctionTargets,
    seconds: float,
    seed: int,
    domestic: bool = False,
) -> list[ReplayPlan]:
    """What to replay for one function (nothing when it has no call ports)."""
    if function.function not in ("voice", "video") or not function.call_ports or seconds <= 0:
        return []
    marker = MARKERS.get(service.id)
    make = C.voice_profile if function.function == "voice" else C.video_profile
    original = make(seconds, seed, marker)
    port = function.call_ports[0]
    profile = function.function
    marked = stun_framed(original)
    return [
        ReplayPlan("replay_original", "original", profile, port, original, marker, marked),
        ReplayPlan("replay_control", "control", profile, port, C.control(original), marker, marked),
        ReplayPlan(
            "replay_neutral", "plain", profile, NEUTRAL_PORT, C.random_payload(original, seed), None
        ),
        # The same call to a helper inside the country: "calls abroad blocked" or "calls blocked".
        *(
            [ReplayPlan("replay_domestic", "original", profile, port, original, marker, marked)]
            if domestic
            else []
        ),
    ]


def _endpoint(plan: ReplayPlan, helper: str, service: Service) -> Endpoint:
    source = service.sources[0]
    return Endpoint(
        id=f"{plan.role.replace('_', '/')}:{plan.port}",
        host=None,
        address=helper,
        port=plan.port,
        transport="udp",
        protocol="stun",
        path="/",
        source=source.id,
        checked=source.checked,
        note=f"{plan.variant} {plan.profile} replay to the test helper",
    )


async def _one(
    trace: Trace,
    function: str,
    helper: str,
    service: Service,
    plan: ReplayPlan,
    deadline: float,
    attempt: int = 1,
) -> tuple[str, ChainOutcome, ReplayResult]:
    """One replay to ``helper`` as a target of its own."""
    txid = trace.new_transaction()
    outcome = ChainOutcome(function, _endpoint(plan, helper, service), [txid], address=helper)
    label = {"profile": plan.profile, "variant": plan.variant, "marker": plan.marker,
             "role": plan.role, "port": plan.port, "attempt": attempt}  # fmt: skip
    result = await replay(
        trace, txid, helper, plan.port, plan.packets, deadline, label=label, marked=plan.marked
    )
    if result.sent_packets == 0 or result.loss > LOST:
        outcome.failure = result.failure or F.TIMEOUT
        outcome.failed_step = "replay"
    return plan.role, outcome, result


def unclear(original: ReplayResult, control: ReplayResult, interval: float = 0.1) -> bool:
    """Whether original against control is unclear enough to be run again (a confirmation run,
    as Wehe does): the statistics disagree (area without KS, or loss against throughput)."""
    if not original.sent_packets or not control.sent_packets:
        return False

    def stats(r: ReplayResult) -> ReplayStats:
        rates = [row["rx_bytes"] * 8 / interval for row in r.intervals]
        return ReplayStats(rates, r.sent_packets, r.received_packets)

    decision = compare_replays(stats(original), stats(control))
    return decision.verdict == "inconclusive" and decision.reason in ("area_only", "conflict")


async def run_replays(
    trace: Trace,
    service: Service,
    function: FunctionTargets,
    helper: str,
    seconds: float,
    seed: int,
    deadline: float,
    domestic_helper: str | None = None,
) -> list[tuple[str, ChainOutcome]]:
    """Original and control one after the other (random order); the neutral replay, and the one
    to the domestic helper, alongside."""
    chosen = plans(service, function, seconds, seed, domestic=domestic_helper is not None)
    if not chosen:
        return []
    pair, others = chosen[:2], chosen[2:]
    random.Random(f"msgwatch-order-{seed}-{service.id}-{function.function}").shuffle(pair)
    name = function.function

    loop = asyncio.get_running_loop()

    async def in_turn() -> list[tuple[str, ChainOutcome]]:
        done = [await _one(trace, name, helper, service, p, deadline) for p in pair]
        results = {role: result for role, _, result in done}
        room = deadline - loop.time() > 2 * (seconds + GRACE)
        if room and unclear(results["replay_original"], results["replay_control"]):
            again = list(reversed(pair))  # the other order: the confirmation run
            done += [await _one(trace, name, helper, service, p, deadline, 2) for p in again]
        return [(role, outcome) for role, outcome, _ in done]

    alongside = [
        _one(trace, name, domestic_helper if p.role == "replay_domestic" and domestic_helper
             else helper, service, p, deadline)
        for p in others
    ]  # fmt: skip
    pair_done = asyncio.ensure_future(in_turn())
    view = asyncio.ensure_future(_helper_view(trace, service, function, helper, deadline))
    rest = [(role, outcome) for role, outcome, _ in await asyncio.gather(*alongside)]
    return [*(await pair_done), *rest, *(await view)]


async def _helper_view(
    trace: Trace, service: Service, function: FunctionTargets, helper: str, deadline: float
) -> list[tuple[str, ChainOutcome]]:
    """The helper's own STUN/TURN exchanges with the function's UDP relays, at the same time:
    a relay down for everyone is not blocked here (role ``helper_view``)."""
    relays = [e for e in function.endpoints
              if e.transport == "udp" and e.protocol in ("stun", "turn")]  # fmt: skip
    if not relays:
        return []
    steps: list[dict[str, Any]] = [
        {"kind": e.protocol, "port": e.port,
         **({"address": e.address} if e.address else {"host": e.host})}
        for e in relays[:16]
    ]  # fmt: skip
    txid = trace.new_transaction()
    record = await helper_measure(trace, txid, helper, steps, deadline)
    endpoint = relays[0].model_copy(update={"id": "helper-view", "address": helper})
    outcome = ChainOutcome(function.function, endpoint, [txid], address=helper)
    if record["failure"] is not None:
        outcome.failure, outcome.failed_step = record["failure"], "helper_view"
    return [("helper_view", outcome)]
