"""The two stages after a tunnel is up: ``transfer`` and ``sustain``, both to the test helper's
TCP echo through the tunnel.

- ``transfer``: :data:`~msgwatch.circumvention.model.TRANSFER_BYTES` sent on a fresh stream and
  every byte echoed back, unchanged, within :data:`TRANSFER_SECONDS`. Writing and reading run at
  once (an echo that is not read would stop the writer by TCP's flow control).
- ``sustain``: a steady stream (:data:`SUSTAIN_RATE` bytes a second, in ticks of :data:`TICK`)
  for ``seconds`` on another fresh stream, and its echo. A censor that cuts a flow after some
  bytes shows here (or already in ``transfer``) as an echo that stops: the detail keeps the bytes
  sent and echoed, and ``stalled_at``, the echoed byte count when the echo stopped for good.

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
SUSTAIN_GRACE = 3.0
"""Seconds after the last send of ``sustain`` for the echo to catch up."""
STALL_SECONDS = 3.0
"""An echo that brings nothing for this long while bytes are outstanding has stalled."""
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


async def read_echo(
    conn: TCPConn, progress: list[int], finished: Callable[[], bool], deadline: float,
    stall: float = STALL_SECONDS,
) -> None:  # fmt: skip
    """Read the echo until the sender is ``finished()`` and every byte sent came back.
    ``progress`` is ``[received, sent]``, kept current by reader and sender. Raises on EOF, a
    mismatch, an error, at ``deadline``, or when nothing came for ``stall`` seconds while bytes
    were outstanding."""
    loop = asyncio.get_running_loop()
    last = loop.time()
    while not (finished() and progress[0] >= progress[1]):
        try:
            data = await conn.read(min(deadline, loop.time() + POLL), CHUNK)
        except TimeoutError:
            now = loop.time()
            if now >= deadline:
                raise
            if progress[1] <= progress[0]:
                last = now
            elif now - last >= stall:
                raise EchoFailure(STALLED, "the echo stalled") from None
            continue
        if not data:
            raise EchoFailure(F.EOF_ERROR, "the echo ended early")
        if progress[0] + len(data) > progress[1] or data != pattern(progress[0], len(data)):
            raise EchoFailure(ECHO_MISMATCH, "the echo differs from what was sent")
        progress[0] += len(data)
        last = loop.time()


async def transfer(
    tunnel: Tunnel, trace: Trace, ip: str, port: int, deadline: float, detail: dict[str, Any],
    size: int = TRANSFER_BYTES,
) -> None:  # fmt: skip
    """The ``transfer`` stage's work: ``size`` bytes to ``ip:port`` through ``tunnel`` and back;
    fills ``detail`` (``bytes_sent``, ``bytes_received``, ``seconds``) even when it raises."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    progress = [0, 0]  # received, sent
    detail.update(bytes_sent=0, bytes_received=0, seconds=None)
    conn = await tunnel.open_stream(trace, trace.new_transaction(), ip, port, deadline)

    async def send() -> None:
        while progress[1] < size:
            piece = pattern(progress[1], min(CHUNK, size - progress[1]))
            await conn.write(piece, deadline)
            progress[1] += len(piece)

    try:
        await _both(send(), read_echo(conn, progress, lambda: progress[1] >= size, deadline))
    finally:
        conn.close()
        detail.update(bytes_sent=progress[1], bytes_received=progress[0],
                      seconds=round(loop.time() - started, 3))  # fmt: skip


async def sustain(
    tunnel: Tunnel, trace: Trace, ip: str, port: int, seconds: float, deadline: float,
    detail: dict[str, Any], rate: int = SUSTAIN_RATE,
) -> None:  # fmt: skip
    """The ``sustain`` stage's work: ``rate`` bytes a second for ``seconds`` through ``tunnel``,
    echoed; fills ``detail`` (``bytes_sent``, ``bytes_received``, ``seconds``, ``rate``,
    ``stalled_at``: the echoed count when the echo stopped, None when it did not)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = min(started + seconds, deadline)
    progress = [0, 0]
    per_tick = max(1, int(rate * TICK))
    detail.update(bytes_sent=0, bytes_received=0, seconds=None, rate=rate, stalled_at=None)
    conn = await tunnel.open_stream(trace, trace.new_transaction(), ip, port, deadline)
    sending = [True]

    async def send() -> None:
        tick = 0
        try:
            while loop.time() < end:
                piece = pattern(progress[1], per_tick)
                await conn.write(piece, deadline)
                progress[1] += len(piece)
                tick += 1
                await asyncio.sleep(max(0.0, started + tick * TICK - loop.time()))
        finally:
            sending[0] = False

    until = min(deadline, end + SUSTAIN_GRACE)
    try:
        await _both(send(), read_echo(conn, progress, lambda: not sending[0], until))
    except BaseException:
        if progress[0] < progress[1]:
            detail["stalled_at"] = progress[0]
        raise
    finally:
        conn.close()
        detail.update(bytes_sent=progress[1], bytes_received=progress[0],
                      seconds=round(loop.time() - started, 3))  # fmt: skip


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
