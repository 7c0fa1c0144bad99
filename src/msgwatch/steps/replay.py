"""Call-traffic replay over UDP to a test helper's echo port.

The probe sends a schedule of datagrams (``(offset_seconds, payload)``, e.g. a voice or video
profile from :mod:`msgwatch.wire.calltraffic`) to the helper, which echoes each one back unchanged.
Every datagram thus crosses the censor twice, once in each direction. The step records, per
interval (100 ms by default), what was sent and what came back, and overall loss and
RFC 3550 interarrival jitter of the echoes. Datagrams are not traced one by one (a 10-second video
replay is over a thousand of them): the replay's record summarises them, and the trace carries one
``write_to``/``read_from`` pair of summary events per replay.

An echo is matched to its datagram by content (the payloads of a profile are distinct), so late or
reordered echoes count for the datagram they belong to.

The probe's own lag is measured and kept apart from the network's (``probe`` in the record, from
:mod:`msgwatch.steps.lag` and the socket's counters): a late event loop sends late and reads late,
and a datagram the kernel dropped from a full receive buffer arrived, so none of it is loss on the
path. Hence (:func:`listen_out`):

- the socket asks for a large receive buffer (:data:`RECEIVE_BUFFER`, capped by the system), so
  that echoes wait in the kernel while the loop is late;
- datagrams are sent on their schedule even when late (until the deadline), and their lateness is
  recorded (``late_sends`` above :data:`LATE_SEND`, ``send_lag`` the worst);
- listening ends :data:`GRACE` after the last datagram actually left (not after its schedule),
  never past the deadline (``cut`` when the deadline ended it first, or ended the sending before
  the schedule's last datagram: a loop late by seconds sends a few and stops); then whatever
  already arrived is read, the queue and the kernel's buffer (:func:`drain`): a datagram that
  arrived while the loop was stalled waits there, so the stall costs no echo, only time;
- the kernel's drops for the socket (``socket_drops``, ``SO_MEMINFO``) and the probe's own queue's
  (``queue_drops``) are counted: those datagrams arrived;
- an echo replay that came back short listens :data:`LATE_WINDOW` longer and counts what comes
  then apart (``late_echoes``, never received): on a machine that stalls, the kernel's own work
  stalls too, and a helper that stalled works through the backlog in its socket afterwards (its
  loop on time, so it sees no stall of its own) and echoes late. A censor does not deliver late
  what it dropped; the judge leaves such a round out like a ``cut`` one.

A replay is labelled and counted as its :class:`ReplayOptions` say. The listening, the ``probe``
record and the finishing (:class:`Tally`, :func:`settle`, :func:`record_replay`) are shared with
the downstream replay (:mod:`msgwatch.steps.downstream`), so both directions' records have one
shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgwatch import failures as F
from msgwatch.steps import lag
from msgwatch.steps.net import UDPSocket, endpoint, udp_open
from msgwatch.steps.trace import Trace

Packet = tuple[float, bytes]
GRACE = 0.5
"""Seconds to wait for echoes after the last datagram was sent (of a responsive event loop)."""
LATE_WINDOW = 0.5
"""Seconds an echo replay that came back short listens on for late echoes (``late_echoes``,
module notes); never past the deadline."""
RECEIVE_BUFFER = 4 * 1024 * 1024
"""Bytes of kernel receive buffer a replay socket asks for (the system may give less)."""
LATE_SEND = 0.05
"""A datagram sent more than this after its schedule is a late send (the probe's lag)."""
MAX_DRAIN = 100_000
"""At most this many datagrams are read after listening ended."""


@dataclass(frozen=True)
class ReplayOptions:
    """How a replay (either direction) is labelled, counted and received."""

    label: Mapping[str, Any] = field(default_factory=dict)
    """Keys copied into the record first (profile, variant, role...)."""
    interval: float = 0.1
    """Seconds of each row of the record's ``intervals``."""
    marked: frozenset[int] = frozenset()
    """Indices of datagrams counted apart: the ones carrying a protocol's framing, e.g. STUN
    (``marked_sent``/``marked_received``). A censor that drops only those (a handful among
    thousands of media packets) shows there, not in the overall loss."""
    signed: frozenset[int] = frozenset()
    """Likewise, the datagrams carrying the service's own non-STUN framing (Telegram's reflector
    header, Viber's, Discord's: :func:`msgwatch.wire.calltraffic.framings`), matched by content
    (``signature_sent``/``signature_received``)."""
    avoid_ports: frozenset[int] = frozenset()
    """The helper's ports this run uses; the replay never sends from one of them (the helper would
    not answer, :func:`msgwatch.steps.net.udp_open`)."""
    receive_buffer: int = RECEIVE_BUFFER
    """The kernel receive buffer to ask for (module notes)."""
    open_udp: Callable[[Trace, int, str, int], Awaitable[UDPSocket]] | None = None
    """``open_udp(trace, txid, ip, port)`` opens the replay's socket in place of
    :func:`~msgwatch.steps.net.udp_open` (a tunnel's socket: :mod:`msgwatch.circumvention`);
    None: a socket of the probe's own. ``avoid_ports`` is then the opener's business."""


DEFAULT_OPTIONS = ReplayOptions()


@dataclass
class ReplayResult:
    sent_packets: int = 0
    sent_bytes: int = 0
    received_packets: int = 0
    received_bytes: int = 0
    jitter_ms: float = 0.0
    failure: str | None = None
    intervals: list[dict[str, Any]] = field(default_factory=list)
    local_port: int | None = None
    """The probe's source port (the helper names the flow by it); None when no socket opened."""
    record: dict[str, Any] = field(default_factory=dict)
    """The replay's entry in ``msgwatch_replays`` (the helper's counts are added to it later)."""

    @property
    def loss(self) -> float:
        return 1.0 - self.received_packets / self.sent_packets if self.sent_packets else 1.0


def interval_rows(
    sends: list[tuple[float, int]], echoes: list[tuple[float, int]], width: float
) -> list[dict[str, Any]]:
    end = max([t for t, _ in sends] + [t for t, _ in echoes] + [0.0])
    count = int(end / width) + 1
    rows = [
        {"t": round(i * width, 3), "tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0}
        for i in range(count)
    ]
    for t, size in sends:
        row = rows[min(count - 1, int(t / width))]
        row["tx_packets"] += 1
        row["tx_bytes"] += size
    for t, size in echoes:
        row = rows[min(count - 1, int(t / width))]
        row["rx_packets"] += 1
        row["rx_bytes"] += size
    return rows


def interarrival_jitter(pairs: Sequence[tuple[float, float]]) -> float:
    """RFC 3550 §6.4.1 interarrival jitter (seconds) over (sent, received) time pairs."""
    jitter, previous = 0.0, None
    for sent, received in sorted(pairs):
        transit = received - sent
        if previous is not None:
            jitter += (abs(transit - previous) - jitter) / 16
        previous = transit
    return jitter


async def receive_until(
    sock: UDPSocket, until: float, result: ReplayResult, handle: Callable[[bytes], None]
) -> None:
    """``handle`` every datagram that arrives on ``sock`` until ``until`` (loop time). A receive
    error (an ICMP port unreachable and the like) is kept in ``result.failure`` if it is the
    first failure, and receiving goes on."""
    while True:
        try:
            data = await sock.recv(until, quiet=True)
        except TimeoutError:
            return
        except Exception as exc:
            result.failure = result.failure or F.classify(exc)
            continue
        handle(data)


async def drain(sock: UDPSocket, result: ReplayResult, handle: Callable[[bytes], None]) -> int:
    """Read what already arrived: the socket's queue, then the kernel's receive buffer (each
    turn of the event loop reads one more datagram from it), until both are empty. Returns how
    many datagrams it handed to ``handle``."""
    loop = asyncio.get_running_loop()
    idle = handled = 0
    for _ in range(MAX_DRAIN):
        try:
            data = await sock.recv(loop.time(), quiet=True)
        except TimeoutError:
            counters = sock.kernel_counters()
            idle = 0 if counters is not None and counters[0] > 0 else idle + 1
            if idle >= 3:
                break
            continue
        except Exception as exc:
            result.failure = result.failure or F.classify(exc)
            continue
        idle = 0
        handled += 1
        handle(data)
    return handled


@dataclass
class Listening:
    """How a replay's listening ended (the record's ``probe``)."""

    started: float
    """Loop time the replay started."""
    last_sent: float | None = None
    """Loop time the last datagram left."""
    ended: float = 0.0
    cut: bool = False
    late_sends: int = 0
    send_lag: float = 0.0
    late_echoes: int | None = None
    """Echoes read in the late window (None: it was not opened)."""

    def sent(self, now: float, due: float) -> None:
        self.last_sent = now
        late = now - due
        self.send_lag = max(self.send_lag, late)
        if late > LATE_SEND:
            self.late_sends += 1


async def listen_out(
    sock: UDPSocket,
    result: ReplayResult,
    handle: Callable[[bytes], None],
    receiver: asyncio.Task[None],
    listening: Listening,
    end: float,
    deadline: float,
    late: Callable[[], bool] | None = None,
) -> None:
    """Let ``receiver`` run until ``end`` (loop time), never past ``deadline``; then stop it and
    :func:`drain` the socket. Sets ``listening.ended`` and ``listening.cut`` (the deadline came
    first; a cut the sending already set stays). The end is wall-clock time: what arrived
    meanwhile waits in the kernel, read by the drain however late the loop came back. When
    ``late()`` says so, then listens :data:`LATE_WINDOW` more, if the deadline leaves room, and
    counts what comes as ``listening.late_echoes`` (module notes)."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(max(0.0, min(end, deadline) - loop.time()))
    finally:
        receiver.cancel()
    listening.cut = listening.cut or end > deadline
    await drain(sock, result, handle)
    listening.ended = loop.time()
    if late is not None and late() and deadline - listening.ended > LATE_WINDOW:
        await asyncio.sleep(LATE_WINDOW)
        listening.late_echoes = await drain(sock, result, lambda _data: None)


def probe_record(
    sock: UDPSocket | None, listening: Listening | None, start_drops: int | None
) -> dict[str, Any]:
    """The record's ``probe``: the probe's own lag and drops during the replay (module notes)."""
    if sock is None or listening is None:
        return {}
    monitor = lag.current()
    counters = sock.kernel_counters()
    end = listening.ended or listening.started
    return {
        "monitored": monitor is not None,
        "loop_lag": round(monitor.worst(listening.started, end), 6) if monitor else None,
        "stalled": round(monitor.stalled(listening.started, end), 6) if monitor else None,
        "late_sends": listening.late_sends,
        "send_lag": round(max(0.0, listening.send_lag), 6),
        "socket_drops": (
            counters[1] - (start_drops or 0)
            if counters is not None and start_drops is not None
            else None
        ),
        "queue_drops": sock.queue_drops,
        "listened": round(end - (listening.last_sent or listening.started), 6),
        "cut": listening.cut,
        **({"late_echoes": listening.late_echoes} if listening.late_echoes is not None else {}),
    }


def kernel_drops(sock: UDPSocket) -> int | None:
    counters = sock.kernel_counters()
    return counters[1] if counters is not None else None


@dataclass
class Tally:
    """What a replay counted: :func:`settle` makes its result of it, :func:`record_replay` its
    record (an echo replay's and a downstream replay's alike)."""

    t0: float
    """Trace time the replay started."""
    sends: list[tuple[float, int]] = field(default_factory=list)
    """(seconds from the start, bytes) of each datagram sent (for a downstream replay: as the
    helper's schedule has it)."""
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(seconds from the start, bytes) of each datagram received that belongs to the replay."""
    pairs: list[tuple[float, float]] = field(default_factory=list)
    """(sent, received) times, for the jitter."""
    marked: tuple[int, int] = (0, 0)
    """Marked datagrams (:attr:`ReplayOptions.marked`) sent and received."""
    signed: tuple[int, int] = (0, 0)
    """Datagrams with the service's own framing (:attr:`ReplayOptions.signed`) sent and received."""
    sent: tuple[int, int] | None = None
    """(datagrams, bytes) sent when not :attr:`sends` (a downstream replay: the helper's word)."""


def settle(result: ReplayResult, tally: Tally, interval: float) -> None:
    """Fill ``result``'s counts from ``tally`` (a replay that sent and got nothing back timed
    out, unless it failed otherwise)."""
    sends, arrivals = tally.sends, tally.arrivals
    sent = tally.sent if tally.sent is not None else (len(sends), sum(s for _, s in sends))
    result.sent_packets, result.sent_bytes = sent
    result.received_packets = min(len(arrivals), result.sent_packets)
    result.received_bytes = sum(s for _, s in arrivals)
    result.jitter_ms = round(interarrival_jitter(tally.pairs) * 1000, 3)
    result.intervals = interval_rows(sends, arrivals, interval)
    if result.failure is None and result.sent_packets and not result.received_packets:
        result.failure = F.TIMEOUT


def record_replay(
    trace: Trace,
    txid: int,
    result: ReplayResult,
    tally: Tally,
    head: dict[str, Any],
    tail: dict[str, Any],
) -> None:
    """Keep the settled ``result``'s ``msgwatch_replays`` entry: ``head`` are the keys before the
    counts (label, address...), ``tail`` those after them (``probe``...)."""
    result.record = trace.replay(
        {
            **head,
            "sent_packets": result.sent_packets,
            "sent_bytes": result.sent_bytes,
            "received_packets": result.received_packets,
            "received_bytes": result.received_bytes,
            "loss": round(result.loss, 4),
            "jitter_ms": result.jitter_ms,
            "marked_sent": tally.marked[0],
            "marked_received": tally.marked[1],
            "signature_sent": tally.signed[0],
            "signature_received": tally.signed[1],
            "intervals": result.intervals[:600],
            **tail,
            "failure": result.failure,
            "t0": tally.t0,
            "t": trace.now(),
            "transaction_id": txid,
        }
    )


async def replay(
    trace: Trace,
    txid: int,
    ip: str,
    port: int,
    packets: Sequence[Packet],
    deadline: float,
    options: ReplayOptions = DEFAULT_OPTIONS,
) -> ReplayResult:
    """Send ``packets`` on their schedule, collect the echoes; records a replay entry (never
    raises). A marked datagram came back if it was echoed or answered as STUN (its transaction
    id returns); a signed one if it was echoed unchanged."""
    loop = asyncio.get_running_loop()
    result = ReplayResult()
    tally = Tally(trace.now())
    address = endpoint(ip, port)
    pending: dict[bytes, float] = {}
    marked_payloads: dict[bytes, int] = {}  # STUN transaction id → index
    marked_back: set[int] = set()
    signed_payloads: dict[bytes, int] = {}  # the service's own framing: payload → index
    signed_back: set[int] = set()
    try:
        if options.open_udp is not None:
            sock = await options.open_udp(trace, txid, ip, port)
        else:
            sock = await udp_open(trace, txid, ip, port, avoid_ports=options.avoid_ports)
    except Exception as exc:
        result.failure = F.classify(exc)
        sock = None
    start_drops: int | None = None
    probe: dict[str, Any] = {}
    if sock is not None:
        result.local_port = sock.local_port
        sock.set_receive_buffer(options.receive_buffer)
        start_drops = kernel_drops(sock)
        start = loop.time()
        listening = Listening(start)

        def echoed(data: bytes) -> None:
            now = loop.time() - start
            tally.arrivals.append((now, len(data)))
            sent_at = pending.pop(data, None)
            if sent_at is not None:
                tally.pairs.append((sent_at, now))
            index = marked_payloads.get(data[8:20]) if len(data) >= 20 else None
            if index is not None:
                marked_back.add(index)
            if data in signed_payloads:
                signed_back.add(signed_payloads[data])

        receiver = asyncio.create_task(receive_until(sock, deadline, result, echoed))
        try:
            for index, (offset, payload) in enumerate(packets):
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if loop.time() >= deadline:
                    listening.cut = True  # the schedule was not sent: the probe's lag
                    break
                try:
                    sock.send(payload, quiet=True)
                except F.ProbeFailure as exc:  # the run's byte budget
                    result.failure = exc.failure
                    break
                listening.sent(loop.time(), start + offset)
                now = loop.time() - start
                tally.sends.append((now, len(payload)))
                pending.setdefault(payload, now)
                if index in options.marked and len(payload) >= 20:
                    marked_payloads.setdefault(payload[8:20], index)
                if index in options.signed:
                    signed_payloads.setdefault(payload, index)
            scheduled = start + (packets[-1][0] if packets else 0.0)
            end = max(scheduled, listening.last_sent or scheduled) + GRACE

            def late() -> bool:
                """Came back short (module notes)."""
                return len(tally.arrivals) < len(tally.sends)

            await listen_out(sock, result, echoed, receiver, listening, end, deadline, late)
        finally:
            receiver.cancel()
            probe = probe_record(sock, listening, start_drops)
            sock.close()
    tally.marked = (len(marked_payloads), len(marked_back))
    tally.signed = (len(signed_payloads), len(signed_back))
    settle(result, tally, options.interval)
    trace.event(
        "write_to",
        txid=txid,
        t0=tally.t0,
        address=address,
        proto="udp",
        num_bytes=result.sent_bytes,
    )
    trace.event(
        "read_from",
        txid=txid,
        t0=tally.t0,
        address=address,
        proto="udp",
        num_bytes=result.received_bytes,
        failure=result.failure,
    )
    head = {**options.label, "address": address, "transport": "udp"}
    record_replay(trace, txid, result, tally, head, {"probe": probe})
    return result
