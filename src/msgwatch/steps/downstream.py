"""A downstream replay: the test helper sends call-shaped traffic to the probe, which counts it.

Every other replay is an echo (:mod:`msgwatch.steps.replay`): the way back carries only what
survived the way up. Here the helper originates the schedule (``POST /v1/udp/send``,
:mod:`msgwatch.helper.downstream`), so the download direction is measured with a full call of its
own. The procedure:

1. open a UDP socket to the helper's port (:func:`msgwatch.steps.net.udp_open`, never from one of
   the helper's ports);
2. send :data:`PINHOLES` small datagrams, :data:`PINHOLE_SPACING` apart: they open the NAT
   mapping and the firewall's state, and show the helper the flow (it sends only on a flow it
   received from in the last 10 s, from the control connection's address);
3. ask the helper over its control API to send the schedule (the probe builds the same one with
   :meth:`msgwatch.wire.helper_api.Schedule.packets`, so it knows every payload); the helper answers
   once the send is scheduled, with the datagrams and bytes it will send;
4. receive until the helper's own count says it sent the whole schedule (``GET /v1/udp/flows``:
   ``originated``, its datagrams sent and withheld, asked from the schedule's end on, at most
   :data:`SENT_POLLS` times :data:`SENT_POLL_SPACING` apart: a helper or a probe whose loop ran
   late starts and ends late), plus :data:`~msgwatch.steps.replay.GRACE` extended by the
   probe's own stalls, then read what already arrived
   (:func:`~msgwatch.steps.replay.listen_out`), counting the datagrams that belong to the
   schedule (matched by content: pinhole echoes and anything else are not counted) per 100 ms
   interval, with RFC 3550 jitter against the schedule. The record's ``probe`` has the probe's
   lag and drops as for an echo, and ``sent_confirmed``: whether the helper's count said so.

The record has the shape of an echo replay's (``msgwatch_replays``): ``sent_packets`` and
``sent_bytes`` are what the helper said it would send, ``received_*`` what arrived, ``intervals``
the schedule's ``tx`` and the arrivals' ``rx``; plus ``direction: "down"`` and ``send``, the
helper's answer or why there was none (``send_failure``). The helper's own counts of the flow
(what it did send, what it withheld for its limits) are added later, as for the echoes.
Received bytes count against the run's byte budget (:meth:`msgwatch.steps.trace.Trace.received`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from msgwatch import failures as F
from msgwatch.steps.control import HelperLink, helper_flows, helper_send
from msgwatch.steps.net import endpoint, udp_open
from msgwatch.steps.replay import (
    DEFAULT_OPTIONS,
    GRACE,
    Listening,
    ReplayOptions,
    ReplayResult,
    Tally,
    kernel_drops,
    listen_out,
    probe_record,
    receive_until,
    record_replay,
    settle,
)
from msgwatch.steps.trace import BUDGET_EXCEEDED, Trace
from msgwatch.wire import calltraffic as C
from msgwatch.wire.helper_api import Schedule, SendAnswer, SendRequest

PINHOLES = 3
PINHOLE_SPACING = 0.01
PINHOLE = b"msgwatch-pinhole"
"""The pinhole datagrams' prefix (then one byte: their number)."""
SENT_POLLS = 8
SENT_POLL_SPACING = 0.15


async def helper_done(
    trace: Trace,
    txid: int,
    link: HelperLink,
    flow: tuple[int, int],
    announced: int,
    deadline: float,
) -> bool:
    """Wait until the helper's count of ``flow`` says every announced datagram was sent or
    withheld (``originated``); False when it never said so (polls spent, or no answer)."""
    loop = asyncio.get_running_loop()
    for _ in range(SENT_POLLS):
        if loop.time() >= deadline:
            return False
        counts, _ = await helper_flows(trace, txid, link, [flow], deadline)
        originated = (counts[0] or {}).get("originated") if counts else None
        if isinstance(originated, dict):
            done = sum(
                int(originated.get(n) or 0)
                for n in ("tx_packets", "over_limits", "send_buffer_full")
            )
            if done >= announced:
                return True
        await asyncio.sleep(min(SENT_POLL_SPACING, max(0.0, deadline - loop.time())))
    return False


async def downstream(
    trace: Trace,
    txid: int,
    link: HelperLink,
    port: int,
    plan: Schedule,
    deadline: float,
    options: ReplayOptions = DEFAULT_OPTIONS,
    sent: asyncio.Event | None = None,
) -> ReplayResult:
    """One downstream replay of ``plan`` from the helper's ``port`` (module notes); never raises.
    ``options.marked``/``options.signed`` index the schedule's datagrams; ``sent``: set once the
    helper is done sending (or will not send), before the grace."""
    loop = asyncio.get_running_loop()
    result = ReplayResult()
    tally = Tally(trace.now())
    ip = link.address
    address = endpoint(ip, port)
    packets: Sequence[C.Packet] = plan.packets()
    expected = {p.payload: (i, p.offset) for i, p in reversed(list(enumerate(packets)))}
    got: set[int] = set()
    answer: SendAnswer | None = None
    send_failure: str | None = None
    try:
        sock = await udp_open(trace, txid, ip, port, avoid_ports=options.avoid_ports)
    except Exception as exc:
        result.failure = F.classify(exc)
        sock = None
    size = sum(len(p.payload) for p in packets)
    budget = trace.budget
    limit = budget.limit
    if sock is not None and limit is not None and budget.sent + budget.received + size > limit:
        result.failure = BUDGET_EXCEEDED  # what would arrive does not fit: not even asked
    start_drops: int | None = None
    probe: dict[str, Any] = {}
    confirmed = False
    if sock is not None:
        result.local_port = sock.local_port
        sock.set_receive_buffer(options.receive_buffer)
        start_drops = kernel_drops(sock)
        start = loop.time()
        listening = Listening(start)

        def arrived(data: bytes) -> None:
            found = expected.get(data)
            if found is None or found[0] in got:
                return  # a pinhole's echo, or a duplicate
            now = loop.time() - start
            got.add(found[0])
            tally.arrivals.append((now, len(data)))
            tally.pairs.append((found[1], now))

        receiver = asyncio.create_task(receive_until(sock, deadline, result, arrived))
        try:
            for number in range(PINHOLES if result.failure is None else 0):
                try:
                    sock.send(PINHOLE + bytes([number]), quiet=True)
                except F.ProbeFailure as exc:
                    result.failure = exc.failure
                    break
                await asyncio.sleep(PINHOLE_SPACING)
            if result.failure is None:
                request = SendRequest(result.local_port or 0, port, plan)
                start = loop.time()  # the helper starts as it accepts: about now
                answer, send_failure = await helper_send(trace, txid, link, request, deadline)
            if answer is not None:
                last = packets[-1].offset if packets else 0.0
                listening.started = start
                await asyncio.sleep(max(0.0, min(deadline, start + last) - loop.time()))
                flow = (result.local_port or 0, port)
                confirmed = await helper_done(
                    trace, txid, link, flow, int(answer["packets"]), deadline
                )
                if sent is not None:
                    sent.set()
                listening.last_sent = max(start + last, loop.time() if confirmed else 0.0)
                await listen_out(
                    sock,
                    result,
                    arrived,
                    receiver,
                    listening,
                    listening.last_sent + GRACE,
                    deadline,
                )
            else:
                result.failure = result.failure or send_failure
        finally:
            receiver.cancel()
            probe = probe_record(sock, listening, start_drops)
            sock.close()
    if sent is not None:
        sent.set()
    # Sent is what the helper said it would send (nothing, when it did not answer).
    tally.sent = (int(answer["packets"]), int(answer["bytes"])) if answer else (0, 0)
    tally.sends = [(p.offset, len(p.payload)) for p in packets] if answer else []
    tally.marked = (len(options.marked) if answer else 0, len(options.marked & got))
    tally.signed = (len(options.signed) if answer else 0, len(options.signed & got))
    settle(result, tally, options.interval)
    if answer is not None:  # something was to be read (a refused send is in the record only)
        trace.event(
            "read_from",
            txid=txid,
            t0=tally.t0,
            address=address,
            proto="udp",
            num_bytes=result.received_bytes,
            failure=result.failure,
        )
    head = {**options.label, "direction": "down", "address": address, "transport": "udp"}
    tail = {
        "send": answer,
        "send_failure": send_failure,
        "probe": {**probe, "sent_confirmed": confirmed} if probe else {},
    }
    record_replay(trace, txid, result, tally, head, tail)
    return result
