"""The call path measured with call-shaped traffic (``docs/method/calls.md``).

For a voice or video function with ``call_ports``, and a test helper, the probe replays to the
helper's echo:

- on the service's first call port, in ``rounds`` rounds (3 by default), each round a pair of
  - the **original**: the function's profile (voice: ~50 packets/s of 60-200 bytes; video: bursts
    of 1,200-byte packets at ~1 Mbit/s) carrying the service's markers where they are documented,
  - the **control**: the same schedule with every payload bit inverted (Wehe's control: identical
    sizes and timing, no protocol a classifier could recognise),

  each replay ``seconds / rounds`` long, the two of a round one after the other in an order drawn
  for each round from the seed. The rounds follow each other: all of them take ``2 × seconds``
  (one replay's echoes are still awaited while the next one sends). When the comparison over all
  rounds is unclear and the deadline leaves room, the rounds are run once more (a confirmation);
- at the same time, **plain** echoes of random bytes over the voice profile's sizes and timing,
  as long as one round's replay (at most :data:`PLAIN_SECONDS`), on **each** of the service's
  call ports, and one of the function's full length on a **neutral** port (:data:`NEUTRAL_PORT`);
- at the same time, the original to the **domestic** helper, when there is one;
- at the same time, :data:`DOWN_ROUNDS` **downstream** pairs on the first call port: the helper
  sends the original and the control of one round towards the probe (``POST /v1/udp/send``,
  :mod:`msgwatch.steps.downstream`), one after the other, each round's order drawn from
  the seed, from the start (each once the helper counted the previous one sent; one that would
  not end before the deadline is not asked for). An echo carries back only what survived the way
  up; these measure the way down with a full-rate call of its own.

The event loop's lag is measured meanwhile (:mod:`msgwatch.steps.lag`) and each replay records
the probe's own lag and drops (``probe``); a round the probe's lag spoiled is measured again
when the deadline leaves room, like an unclear comparison (:func:`unclear`).

Each replay becomes a target of its own (roles ``replay_original``, ``replay_control``,
``replay_plain``, ``replay_neutral``, ``replay_domestic``, ``replay_down_original``,
``replay_down_control``) whose record is in
``msgwatch_replays``. When they are done, the probe asks each helper what it received from each
of these flows (``GET /v1/udp/flows``) and adds the helper's counts to the records: loss on the
way up (the helper's count against the probe's) and on the way down (the probe's echoes against
what the helper sent). The judge compares them (``msgwatch.analysis.verdicts.calls``).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, replace
from typing import Any

from msgwatch import failures as F
from msgwatch.analysis.rounds import LOST, compare_rounds, probe_trouble
from msgwatch.catalogue import Endpoint, FunctionTargets, Service
from msgwatch.measurement.vocab import DOWN_ROLES
from msgwatch.probe.chain import ChainOutcome
from msgwatch.steps import lag
from msgwatch.steps.control import HelperLink, helper_flows, helper_measure
from msgwatch.steps.downstream import downstream
from msgwatch.steps.replay import GRACE, ReplayOptions, ReplayResult, replay
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from msgwatch.wire.helper_api import MAX_SECONDS as DOWN_MAX_SECONDS
from msgwatch.wire.helper_api import NEUTRAL_PORT, Schedule, schedule
from msgwatch.wire.packets import STUN_COOKIE_BYTES as COOKIE

ROUNDS = 3
"""Original/control pairs per function (research note C2: at least 3 repeats)."""
PLAIN_SECONDS = 5.0
"""The plain echo on each call port lasts at most this long (a voice profile: 6.6 kB/s each way)."""
MARKERS: dict[str, C.Marker] = {
    "whatsapp": "whatsapp",
    "teams": "teams",
    "skype": "teams",
    "zoom": "zoom",
    "telegram": "telegram",
    "discord": "discord",
    "viber": "viber",
    "facebook_messenger": "messenger",
    "signal": "signal",
}


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
    signed: frozenset[int] = frozenset()
    """Indices of the original's datagrams in the service's own non-STUN framing (likewise)."""
    round: int | None = None
    """1, 2, ...: the round of an original/control pair; None for the others."""
    slot: int | None = None
    """Where the replay starts, in units of one round's replay length (None: at once)."""
    attempt: int = 1
    seconds: float = 0.0
    """A downstream replay's length (the helper builds its schedule from it and the seed)."""
    seed: int = 0


DOWN_ROUNDS = 2
DOWN_MARGIN = 0.3
"""Seconds beyond a downstream replay's length and grace that the deadline must leave for it."""
"""Downstream pairs per function: repeated like the echoes' rounds (one pair may be the probe's bad
moment), two rather than three because the helper allows a client 60 sends a minute."""


def downstream_plans(
    service: Service, function: FunctionTargets, seconds: float, seed: int, *, rounds: int = ROUNDS
) -> list[ReplayPlan]:
    """The downstream pairs of one function, :data:`DOWN_ROUNDS` rounds of them: the helper sends
    one round's original and control (each ``seconds / rounds`` long, at most the helper's 10 s)
    on the first call port, each round's order drawn from the seed, in slots 0, 1, 2, ... (each
    starts once the helper counted the previous one sent: one send of a function at a time).
    Nothing when the function has no call ports."""
    if function.function not in ("voice", "video") or not function.call_ports or seconds <= 0:
        return []
    marker = MARKERS.get(service.id)
    profile = function.function
    port = function.call_ports[0]
    length = min(seconds / max(1, rounds), DOWN_MAX_SECONDS)
    pair = []
    for role, variant in zip(DOWN_ROLES, ("original", "control"), strict=True):
        packets = schedule(profile, variant, length, seed, marker)
        original = packets if variant == "original" else C.control(packets)
        pair.append(ReplayPlan(role, variant, profile, port, packets, marker, stun_framed(original),
                               signed=C.framings(original, marker)["signature"],
                               seconds=length, seed=seed))  # fmt: skip
    rng = random.Random(f"msgwatch-down-order-{seed}-{service.id}-{profile}")
    out: list[ReplayPlan] = []
    for number in range(1, DOWN_ROUNDS + 1):
        ordered = pair[::-1] if rng.random() < 0.5 else pair
        out += [replace(p, round=number, slot=len(out) + i) for i, p in enumerate(ordered)]
    return out


def stun_framed(packets: list[C.Packet]) -> frozenset[int]:
    """Datagrams carrying STUN's magic cookie where STUN puts it (RFC 5389: bytes 4-7)."""
    return frozenset(
        i for i, p in enumerate(packets) if len(p.payload) >= 20 and p.payload[4:8] == COOKIE
    )


def round_pairs(
    original: list[C.Packet], marker: str | None, marked: frozenset[int], profile: str, port: int,
    rounds: int, order_seed: str, attempt: int = 1, signed: frozenset[int] = frozenset(),
) -> list[ReplayPlan]:  # fmt: skip
    """``rounds`` original/control pairs of the same schedule, each round's order drawn at random
    (a coin flip per round from ``order_seed``, as Wehe's ``runTest``), in slots 0, 1, 2, ..."""
    rng = random.Random(order_seed)
    control = C.control(original)
    out: list[ReplayPlan] = []
    for number in range(1, rounds + 1):
        pair = [
            ReplayPlan(
                "replay_original", "original", profile, port, original, marker, marked, signed
            ),
            ReplayPlan("replay_control", "control", profile, port, control, marker, marked, signed),
        ]
        if rng.random() < 0.5:
            pair.reverse()
        base = 2 * (number - 1)
        out += [
            replace(p, round=number, slot=base + i, attempt=attempt) for i, p in enumerate(pair)
        ]
    return out


def plans(
    service: Service,
    function: FunctionTargets,
    seconds: float,
    seed: int,
    domestic: bool = False,
    *,
    rounds: int = ROUNDS,
    neutral_port: int = NEUTRAL_PORT,
) -> list[ReplayPlan]:
    """What to replay for one function (nothing when it has no call ports)."""
    if function.function not in ("voice", "video") or not function.call_ports or seconds <= 0:
        return []
    rounds = max(1, rounds)
    marker = MARKERS.get(service.id)
    make = C.voice_profile if function.function == "voice" else C.video_profile
    profile = function.function
    port = function.call_ports[0]
    one_round = make(seconds / rounds, seed, marker)
    order = f"msgwatch-order-{seed}-{service.id}-{profile}"
    out = round_pairs(one_round, marker, stun_framed(one_round), profile, port, rounds, order,
                      signed=C.framings(one_round, marker)["signature"])  # fmt: skip
    full = make(seconds, seed, marker)
    # As long as one round's replay, so that a policer or a classifier that acts per flow treats
    # the plain echoes as it treats the rounds' flows.
    voice = C.voice_profile(min(seconds / rounds, PLAIN_SECONDS), seed)
    # Random bytes on each call port: "does UDP pass on this port", whatever it carries.
    out += [
        ReplayPlan("replay_plain", "plain", "voice", p, C.random_payload(voice, seed * 65536 + p),
                   None)
        for p in dict.fromkeys(function.call_ports)
    ]  # fmt: skip
    out.append(
        ReplayPlan("replay_neutral", "plain", profile, neutral_port, C.random_payload(full, seed),
                   None)
    )  # fmt: skip
    if domestic:  # the same call to a helper inside the country: "calls abroad blocked" or not
        signed = C.framings(full, marker)["signature"]
        out.append(ReplayPlan("replay_domestic", "original", profile, port, full, marker,
                              stun_framed(full), signed))  # fmt: skip
    return out


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


@dataclass
class Done:
    plan: ReplayPlan
    outcome: ChainOutcome
    result: ReplayResult
    link: HelperLink


async def _one(
    trace: Trace,
    function: str,
    link: HelperLink,
    service: Service,
    plan: ReplayPlan,
    deadline: float,
    start_at: float | None = None,
    avoid_ports: frozenset[int] = frozenset(),
    sent: asyncio.Event | None = None,
) -> Done:
    """One replay to the helper as a target of its own, started at ``start_at`` (loop time).
    ``sent`` (downstream only): set once the helper is done sending."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - asyncio.get_running_loop().time()))
    txid = trace.new_transaction()
    helper = link.address
    outcome = ChainOutcome(function, _endpoint(plan, helper, service), [txid], address=helper)
    label = {"profile": plan.profile, "variant": plan.variant, "marker": plan.marker,
             "role": plan.role, "port": plan.port, "round": plan.round,
             "attempt": plan.attempt}  # fmt: skip
    options = ReplayOptions(label, marked=plan.marked, signed=plan.signed, avoid_ports=avoid_ports)
    if plan.role in DOWN_ROLES:
        marker = MARKERS.get(service.id)
        down = Schedule.checked(plan.profile, plan.variant, plan.seconds, plan.seed, marker)
        result = await downstream(trace, txid, link, plan.port, down, deadline, options, sent)
    else:
        result = await replay(trace, txid, helper, plan.port, plan.packets, deadline, options)
    if result.sent_packets == 0 or result.loss > LOST:
        outcome.failure = result.failure or F.TIMEOUT
        outcome.failed_step = "replay"
    return Done(plan, outcome, result, link)


def unclear(originals: list[dict[str, Any]], controls: list[dict[str, Any]]) -> bool:
    """Whether the comparison of the originals' records with the controls', over all rounds, is
    unclear enough to run the rounds again (a confirmation, as Wehe does): the statistics disagree
    (area without KS, loss against throughput), or the rounds do (noisy controls, a difference
    that most rounds do not show: :func:`msgwatch.analysis.rounds.compare_rounds`)."""
    if not originals or not controls:
        return False
    if any(probe_trouble(r) for r in (*originals, *controls)):
        return True  # the probe's own lag spoiled a round: measure again
    _, reason = compare_rounds(originals, controls)
    return reason in ("area_only", "conflict", "rounds_disagree", "noisy_controls",
                      "probe_overloaded")  # fmt: skip


def _loss(sent: int, got: int) -> float | None:
    return round(1 - min(got, sent) / sent, 4) if sent > 0 else None


async def attach_helper_counts(
    trace: Trace, done: list[Done], deadline: float
) -> list[tuple[Done, int]]:
    """Ask each helper for its counts of the replays' flows; add them to the replay records
    (key ``helper``). Returns (replay, transaction id of the request) for each replay asked about."""
    by_link: dict[int, list[Done]] = {}
    links: dict[int, HelperLink] = {}
    for d in done:
        if d.result.local_port is not None and d.result.sent_packets:
            by_link.setdefault(id(d.link), []).append(d)
            links[id(d.link)] = d.link

    async def ask(link: HelperLink, replays: list[Done]) -> list[tuple[Done, int]]:
        txid = trace.new_transaction()
        flows = [(d.result.local_port or 0, d.plan.port) for d in replays]
        counts, failure = await helper_flows(trace, txid, link, flows, deadline)
        for d, seen in zip(replays, counts, strict=True):
            record = d.result.record
            entry: dict[str, Any] = {"transaction_id": txid, "failure": failure}
            if seen is None and failure is None:  # the helper has no such flow: nothing arrived
                seen = {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0,
                        "interval": None, "intervals": [], "truncated": False,
                        "declined": None, "stalls": None}  # fmt: skip
            if seen is not None and d.plan.role in DOWN_ROLES:
                # The helper originated the datagrams: only the way down has a loss.
                entry.update(seen)
                sent = (seen.get("originated") or {}).get("tx_packets", seen["tx_packets"])
                entry["upstream_loss"] = None
                entry["downstream_loss"] = _loss(sent, d.result.received_packets)
            elif seen is not None:
                entry.update(seen)
                entry["upstream_loss"] = _loss(d.result.sent_packets, seen["rx_packets"])
                entry["downstream_loss"] = _loss(seen["tx_packets"], d.result.received_packets)
            record["helper"] = entry
        return [(d, txid) for d in replays]

    asked = await asyncio.gather(*(ask(links[key], group) for key, group in by_link.items()))
    return [pair for group in asked for pair in group]


async def run_replays(
    trace: Trace,
    service: Service,
    function: FunctionTargets,
    helper: str | HelperLink,
    seconds: float,
    seed: int,
    deadline: float,
    domestic_helper: str | HelperLink | None = None,
    *,
    rounds: int = ROUNDS,
    neutral_port: int = NEUTRAL_PORT,
) -> list[tuple[str, ChainOutcome]]:
    """Every replay of one function (module notes), then the helpers' counts of them; the
    event loop's lag is measured meanwhile (:mod:`msgwatch.steps.lag`, the run's monitor when
    one runs) and each replay's record says what the probe's own lag and drops were."""
    async with lag.running():
        return await _run_replays(trace, service, function, helper, seconds, seed, deadline,
                                  domestic_helper, rounds=rounds,
                                  neutral_port=neutral_port)  # fmt: skip


async def _run_replays(
    trace: Trace,
    service: Service,
    function: FunctionTargets,
    helper: str | HelperLink,
    seconds: float,
    seed: int,
    deadline: float,
    domestic_helper: str | HelperLink | None = None,
    *,
    rounds: int = ROUNDS,
    neutral_port: int = NEUTRAL_PORT,
) -> list[tuple[str, ChainOutcome]]:
    """Every replay of one function (module notes), then the helpers' counts of them."""
    abroad = helper if isinstance(helper, HelperLink) else HelperLink(helper)
    domestic = (
        domestic_helper
        if isinstance(domestic_helper, HelperLink) or domestic_helper is None
        else HelperLink(domestic_helper)
    )
    chosen = plans(service, function, seconds, seed, domestic=domestic is not None,
                   rounds=rounds, neutral_port=neutral_port)  # fmt: skip
    if not chosen:
        return []
    chosen += downstream_plans(service, function, seconds, seed, rounds=rounds)
    name = function.function
    loop = asyncio.get_running_loop()
    length = seconds / max(1, rounds)
    helper_ports = frozenset(p.port for p in chosen)  # never a source port (the helper's own)

    def start(plans: list[ReplayPlan]) -> list[asyncio.Task[Done]]:
        t0 = loop.time()
        return [
            asyncio.ensure_future(
                _one(trace, name, domestic if p.role == "replay_domestic" and domestic else abroad,
                     service, p, deadline, None if p.slot is None else t0 + p.slot * length,
                     helper_ports)
            )
            for p in plans
        ]  # fmt: skip

    async def down_rounds(downs: list[ReplayPlan]) -> list[Done]:
        # One after the other: each starts when the helper counted the previous one sent (its
        # grace runs on meanwhile), so that a function never has two sends running at the helper
        # (it limits them a client); one that would not end before the deadline is not asked.
        tasks = []
        for p in sorted(downs, key=lambda p: p.slot or 0):
            if deadline - loop.time() < p.seconds + GRACE + DOWN_MARGIN:
                break
            sent = asyncio.Event()
            task = asyncio.ensure_future(
                _one(trace, name, abroad, service, p, deadline, None, helper_ports, sent)
            )
            tasks.append(task)
            waiter = asyncio.ensure_future(sent.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        return list(await asyncio.gather(*tasks))

    view = asyncio.ensure_future(_helper_view(trace, service, function, abroad, deadline))
    echoes = [p for p in chosen if p.role not in DOWN_ROLES]
    downs = asyncio.ensure_future(down_rounds([p for p in chosen if p.role in DOWN_ROLES]))
    done = list(await asyncio.gather(*start(echoes))) + await downs
    room = deadline - loop.time() > 2 * seconds + GRACE + 0.5
    records = {role: [d.result.record for d in done if d.plan.role == role]
               for role in ("replay_original", "replay_control")}  # fmt: skip
    if room and unclear(records["replay_original"], records["replay_control"]):
        first = next(p for p in chosen if p.role == "replay_original")
        again = round_pairs(
            first.packets, first.marker, first.marked, first.profile, first.port, rounds,
            f"msgwatch-order-{seed}-{service.id}-{name}-confirm", attempt=2, signed=first.signed,
        )  # fmt: skip
        done += await asyncio.gather(*start(again))
    for d, txid in await attach_helper_counts(trace, done, deadline):
        d.outcome.transaction_ids.append(txid)
    return [*((d.plan.role, d.outcome) for d in done), *(await view)]


VIEW_SHARE = 0.6
VIEW_MIN, VIEW_MAX = 1.0, 5.0
"""Seconds the helper's view of the relays may take: STUN's retransmissions at 0, 0.5 and 1.5 s
fit in a 3 s view of a 5 s deadline, which leaves 2 s for the answer to cross stalls."""


async def _helper_view(
    trace: Trace, service: Service, function: FunctionTargets, helper: HelperLink, deadline: float
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
    # The helper's steps get at most VIEW_SHARE of the time left: a relay down for everyone uses
    # all of it, and the answer must still arrive when the probe or the helper stalled a while.
    left = deadline - asyncio.get_running_loop().time()
    budget = max(VIEW_MIN, min(VIEW_MAX, left * VIEW_SHARE))
    record = await helper_measure(trace, txid, helper, steps, deadline, timeout=budget)
    endpoint = relays[0].model_copy(update={"id": "helper-view", "address": helper.address})
    outcome = ChainOutcome(function.function, endpoint, [txid], address=helper.address)
    if record["failure"] is not None:
        outcome.failure, outcome.failed_step = record["failure"], "helper_view"
    return [("helper_view", outcome)]
