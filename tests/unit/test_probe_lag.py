"""The probe's own lag and drops, measured and kept apart from the network's.

The event loop is stalled on purpose (a blocking ``time.sleep`` inside it, as another program's
burst or the probe's own CPU work would), while an echo server in a thread of its own answers on
time: what the probe then misses is the probe's doing, never the path's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from msgwatch.steps import lag
from msgwatch.steps.replay import ReplayOptions, replay
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from tests.unit.servers import deadline


@contextmanager
def thread_echo(delay: float = 0.0) -> Iterator[tuple[str, int]]:
    """A UDP echo on loopback in a thread of its own: it answers while the probe's loop stalls
    (``delay`` seconds after each datagram came, as a machine whose kernel stalled would)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if delay:
                threading.Timer(delay, _send, (sock, data, peer)).start()
            else:
                sock.sendto(data, peer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def _send(sock: socket.socket, data: bytes, peer: Any) -> None:
    with contextlib.suppress(OSError):  # closed meanwhile
        sock.sendto(data, peer)


def test_the_monitor_sees_a_stall_and_where_it_was() -> None:
    async def scenario() -> tuple[float, float, float, dict[str, Any]]:
        origin = time.monotonic()
        async with lag.running() as monitor:
            assert lag.current() is monitor
            await asyncio.sleep(0.1)
            before = time.monotonic()
            time.sleep(0.4)  # the loop can run nothing of the probe's meanwhile
            await asyncio.sleep(0.1)
            after = time.monotonic()
            quiet = monitor.stalled(origin, before - 0.01)
            return (
                monitor.stalled(before, after),
                quiet,
                monitor.worst(before, after),
                (monitor.record(origin)),
            )

    stalled, quiet, worst, record = asyncio.run(scenario())
    assert stalled >= 0.3 and worst >= 0.3
    assert quiet < 0.1
    assert record["max_lag"] >= 0.3 and record["samples"] > 5
    start, seconds = max(record["stalls"], key=lambda s: s[1])
    assert seconds >= 0.3 and 0.05 <= start <= 0.4
    assert lag.current() is None  # stopped with its last user


def test_stall_overlap_is_counted_once_per_window() -> None:
    monitor = lag.LagMonitor()
    monitor.observe(10.0, 1.0)  # stalled over [9, 10]
    monitor.observe(12.0, 0.01)  # within tolerance: not a stall
    assert monitor.stalled(9.5, 11.0) == 0.5
    assert monitor.stalled(0.0, 9.0) == 0.0
    assert monitor.worst(9.9, 20.0) == 1.0 and monitor.worst(10.5, 20.0) == 0.0


def _stalled_replay(
    packets: list[C.Packet], stall_at: float, stall: float, *, delay: float = 0.0, **kwargs: Any
) -> dict[str, Any]:
    trace = Trace()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with lag.running():
            with thread_echo(delay) as (ip, port):
                if stall:  # timed from the replay's start, not the echo thread's (slow under load)
                    loop.call_later(stall_at, time.sleep, stall)
                options = ReplayOptions(label={"role": "replay_original"}, **kwargs)
                await replay(trace, 1, ip, port, [(p.offset, p.payload) for p in packets],
                             deadline(6.0), options)  # fmt: skip

    asyncio.run(scenario())
    (record,) = trace.replays
    return record


def test_a_stall_at_the_end_loses_no_echo() -> None:
    """The loop stalls across the replay's last datagrams and its grace: the echoes wait in the
    kernel and are read after it (before, listening stopped with them unread: 'lost')."""
    packets = C.voice_profile(0.6, 3)
    record = _stalled_replay(packets, 0.5, 1.0)
    assert record["sent_packets"] == len(packets)
    assert record["received_packets"] == record["sent_packets"]
    probe = record["probe"]
    assert probe["monitored"] is True and probe["stalled"] >= 0.5 and probe["loop_lag"] >= 0.5
    assert probe["late_sends"] > 0 and probe["send_lag"] >= 0.3  # the stall delayed sends too
    assert probe["cut"] is False and probe["socket_drops"] == 0


def test_kernel_drops_are_counted_as_the_probes() -> None:
    """With a small receive buffer, a stall makes the kernel drop echoes that did arrive: the
    record counts them (``socket_drops``), so that received + dropped is every echo."""
    packets = C.video_profile(0.8, 5)
    record = _stalled_replay(packets, 0.05, 1.2, receive_buffer=4096)
    probe = record["probe"]
    assert probe["socket_drops"] > 0
    arrived = record["received_packets"] + probe["socket_drops"] + probe["queue_drops"]
    assert arrived == record["sent_packets"] == len(packets)


def test_a_downstream_replay_listens_until_the_helper_has_sent_it_all() -> None:
    """The loop (the probe's and, in this test, the helper's too) stalls just after the send
    began: the helper sends the rest of its schedule late. Listening ends when the helper's own
    count says the schedule was sent, plus the grace; before, it ended at the schedule's end plus
    the grace by the probe's clock, before the late datagrams even left."""
    from msgwatch.steps.control import HelperLink
    from msgwatch.steps.downstream import downstream
    from msgwatch.wire.helper_api import Schedule, schedule
    from tests.helper.util import running

    plan = Schedule("voice", "original", 0.4, 3)
    trace = Trace()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with lag.running(), running() as helper:
            port = helper.bound["udp"][0][1]
            link = HelperLink("127.0.0.1", helper.bound["control"][0][1])
            loop.call_later(0.25, time.sleep, 1.0)
            options = ReplayOptions(label={"role": "replay_down_original"})
            await downstream(trace, 5, link, port, plan, deadline(5.0), options)

    asyncio.run(scenario())
    (record,) = trace.replays
    expected = len(schedule("voice", "original", 0.4, 3, None))
    assert record["sent_packets"] == expected
    assert record["received_packets"] == expected
    assert record["probe"]["sent_confirmed"] is True and record["probe"]["cut"] is False


def test_echoes_that_come_after_the_grace_are_counted_apart() -> None:
    """The echoes come 0.8 s late (past the 0.5 s grace), as from a helper working through the
    backlog a stop left in its socket: the replay came back short, listens on and counts them as
    ``late_echoes``, never as received (the judge leaves such a round out). A replay that came
    back whole opens no late window."""
    packets = C.voice_profile(0.6, 3)
    record = _stalled_replay(packets, 0.0, 0.0, delay=0.8)
    probe = record["probe"]
    assert record["received_packets"] < record["sent_packets"]
    assert probe["late_echoes"] > 0
    assert record["received_packets"] + probe["late_echoes"] <= record["sent_packets"]
    whole = _stalled_replay(packets, 0.0, 0.0)
    assert whole["received_packets"] == whole["sent_packets"]
    assert "late_echoes" not in whole["probe"]
