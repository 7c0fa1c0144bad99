"""The two stages after a tunnel is up: ``transfer`` and ``sustain``, both to the test helper's
TCP echo through the tunnel.

- ``transfer``: :data:`~msgwatch.circumvention.model.TRANSFER_BYTES` sent on a fresh stream and
  every byte echoed back, unchanged, within :data:`TRANSFER_SECONDS`. Writing and reading run at
  once (an echo that is not read would stop the writer by TCP's flow control).
- ``sustain``: a steady stream (:data:`SUSTAIN_RATE` bytes a second, in ticks of :data:`TICK`)
  for ``seconds`` on another fresh stream, and its echo. A censor that cuts a flow after some
  bytes shows here (or already in ``transfer``) as an echo that stops.

Both stages' detail (:meth:`Flow.detail`), filled even when the stage fails, whatever failed
(the stream that did not open included): ``bytes_sent``, ``bytes_received``, ``seconds`` (always
numbers), ``stalled_at`` (the echoed byte count when the echo brought nothing for
:data:`STALL_SECONDS` while bytes were outstanding: the flow **stopped**; null when it did not),
``last_echo`` (seconds from the stage's start to the last echoed bytes, null when none came),
``echo_rate`` (bytes a second echoed until then) and ``idle`` (seconds from the last echoed bytes,
or from the start when none came, to the stage's end), ``stall_seconds``; ``sustain`` adds
``rate`` (what was sent a second). So a slow tunnel that was still echoing when its time ran out
(``stalled_at`` null, a small ``idle``) reads apart from a flow that was cut (``stalled_at`` a
number): only the second is a cut.

The payload is printable ASCII (:func:`pattern`), not random bytes: through a proxy that does not
encrypt (SOCKS, HTTP CONNECT) the payload is what the censor sees, and random bytes would set off
the fully-encrypted-traffic heuristics documented for the GFW, blaming the transport for the
test's own traffic. Through an encrypting tunnel it makes no difference.

Failures (the stage's, raised out of :meth:`Run.stage` as its failure string): a reset or a
timeout as :func:`msgwatch.failures.classify` names them, ``eof_error`` when the echo ended early,
:data:`ECHO_MISMATCH` when what came back is not what was sent (a proxy that answers for any
address, a middlebox), :data:`STALLED` when the echo stopped while bytes were outstanding.
Nothing is waited for past the deadline given; memory is bounded by one chunk at a time (the
comparison is against the pattern, not a copy of what was sent).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention.model import TRANSFER_BYTES, Tunnel
from msgwatch.steps.net import TCPConn
from msgwatch.steps.trace import Trace

TRANSFER_SECONDS = 15.0
"""At most this long for the ``transfer`` stage (connect included)."""
SUSTAIN_RATE = 32 * 1024
"""Bytes a second sent during ``sustain``."""
TICK = 0.1
STALL_SECONDS = 5.0
"""An echo that brings nothing for this long while bytes are outstanding has stalled (a slow
tunnel's echo comes in bursts a few seconds apart; a cut flow brings nothing more)."""
SUSTAIN_GRACE = STALL_SECONDS + 1.0
"""Seconds after the last send of ``sustain`` for the echo to catch up: longer than a stall, so
that a flow cut while sending is seen to stall before the stage's time is up."""
CHUNK = 16 * 1024
POLL = 0.5
"""Seconds of one read while waiting for the echo (the stall is judged between reads)."""
ECHO_MISMATCH = "tunnel_echo_mismatch"
STALLED = F.TIMEOUT
"""A stalled echo is a timeout (packets dropped), with ``stalled_at`` in the detail."""
_LINE = b"msgwatch circumvention transfer 0123456789 abcdefghijklmnopqrstuvwxyz\n"


def pattern(offset: int, size: int) -> bytes:
    """``size`` bytes of the payload stream from ``offset`` (a repeated printable line)."""
    start = offset % len(_LINE)
    reps = (start + size) // len(_LINE) + 1
    return (_LINE * reps)[start : start + size]


class EchoFailure(F.ProbeFailure):
    """The echo ended, stalled or differed from what was sent."""


@dataclass
class Flow:
    """One stream's counts, kept current by its sender and its reader (loop times)."""

    started: float
    sent: int = 0
    received: int = 0
    last: float | None = None
    """When the last echoed bytes came (None: none yet)."""
    stalled_at: int | None = None
    """``received`` when the echo stalled (None: it did not)."""

    def detail(self, now: float) -> dict[str, Any]:
        """The stage detail the module notes describe, as of ``now``."""
        span = None if self.last is None else max(0.0, self.last - self.started)
        rate = 0 if not span else round(self.received / max(span, 1e-3))
        return {
            "bytes_sent": self.sent, "bytes_received": self.received,
            "seconds": round(max(0.0, now - self.started), 3), "stalled_at": self.stalled_at,
            "last_echo": None if span is None else round(span, 3), "echo_rate": rate,
            "idle": round(max(0.0, now - (self.started if self.last is None else self.last)), 3),
            "stall_seconds": STALL_SECONDS,
        }  # fmt: skip


async def read_echo(
    conn: TCPConn, flow: Flow, finished: Callable[[], bool], deadline: float,
    stall: float | None = None,
) -> None:  # fmt: skip
    """Read the echo until the sender is ``finished()`` and every byte sent came back, counting
    into ``flow``. Raises on EOF, a mismatch, an error, at ``deadline``, or when nothing came for
    ``stall`` seconds (:data:`STALL_SECONDS`) while bytes were outstanding (then
    ``flow.stalled_at`` is set)."""
    stall = STALL_SECONDS if stall is None else stall
    loop = asyncio.get_running_loop()
    quiet = loop.time()  # since when nothing came while bytes were outstanding
    while not (finished() and flow.received >= flow.sent):
        try:
            data = await conn.read(min(deadline, loop.time() + POLL), CHUNK)
        except TimeoutError:
            now = loop.time()
            if now >= deadline:
                raise
            if flow.sent <= flow.received:
                quiet = now
            elif now - quiet >= stall:
                flow.stalled_at = flow.received
                raise EchoFailure(STALLED, "the echo stalled") from None
            continue
        if not data:
            raise EchoFailure(F.EOF_ERROR, "the echo ended early")
        if flow.received + len(data) > flow.sent or data != pattern(flow.received, len(data)):
            raise EchoFailure(ECHO_MISMATCH, "the echo differs from what was sent")
        flow.received += len(data)
        flow.last = quiet = loop.time()


async def transfer(
    tunnel: Tunnel, trace: Trace, ip: str, port: int, deadline: float, detail: dict[str, Any],
    size: int = TRANSFER_BYTES,
) -> None:  # fmt: skip
    """The ``transfer`` stage's work: ``size`` bytes to ``ip:port`` through ``tunnel`` and back;
    fills ``detail`` (module notes) even when it raises, the stream's opening included."""
    loop = asyncio.get_running_loop()
    flow = Flow(loop.time())
    detail.update(flow.detail(flow.started))
    conn: TCPConn | None = None
    try:
        conn = await tunnel.open_stream(trace, trace.new_transaction(), ip, port, deadline)
        stream = conn

        async def send() -> None:
            while flow.sent < size:
                piece = pattern(flow.sent, min(CHUNK, size - flow.sent))
                await stream.write(piece, deadline)
                flow.sent += len(piece)

        await _both(send(), read_echo(conn, flow, lambda: flow.sent >= size, deadline))
    finally:
        if conn is not None:
            conn.close()
        detail.update(flow.detail(loop.time()))


async def sustain(
    tunnel: Tunnel, trace: Trace, ip: str, port: int, seconds: float, deadline: float,
    detail: dict[str, Any], rate: int = SUSTAIN_RATE,
) -> None:  # fmt: skip
    """The ``sustain`` stage's work: ``rate`` bytes a second for ``seconds`` through ``tunnel``,
    echoed; fills ``detail`` (module notes, and ``rate``) even when it raises."""
    loop = asyncio.get_running_loop()
    flow = Flow(loop.time())
    end = min(flow.started + seconds, deadline)
    per_tick = max(1, int(rate * TICK))
    detail.update(flow.detail(flow.started), rate=rate)
    conn: TCPConn | None = None
    sending = [True]
    try:
        conn = await tunnel.open_stream(trace, trace.new_transaction(), ip, port, deadline)
        stream = conn

        async def send() -> None:
            tick = 0
            try:
                while loop.time() < end:
                    piece = pattern(flow.sent, per_tick)
                    await stream.write(piece, deadline)
                    flow.sent += len(piece)
                    tick += 1
                    await asyncio.sleep(max(0.0, flow.started + tick * TICK - loop.time()))
            finally:
                sending[0] = False

        until = min(deadline, end + SUSTAIN_GRACE)
        await _both(send(), read_echo(conn, flow, lambda: not sending[0], until))
    finally:
        if conn is not None:
            conn.close()
        detail.update(flow.detail(loop.time()))


async def _both(send: Coroutine[Any, Any, None], read: Coroutine[Any, Any, None]) -> None:
    """Run the sender and the reader at once; the first error (either's) is raised and the
    other cancelled. The reader's end is the stage's end."""
    writer = asyncio.ensure_future(send)
    reader = asyncio.ensure_future(read)
    try:
        done, _ = await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_EXCEPTION)
        for task in (reader, writer):
            if task in done and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        await reader
    finally:
        for task in (writer, reader):
            task.cancel()
        await asyncio.gather(writer, reader, return_exceptions=True)
