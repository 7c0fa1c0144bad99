"""What the runner measures besides the entries, for the judge's evidence rule: the direct
control (the path abroad works) and the probe's own lag while each entry ran (a timeout was the
probe's, not the network's)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention import transfer
from msgwatch.circumvention.model import Context
from msgwatch.failures import ProbeFailure
from msgwatch.steps import lag
from msgwatch.steps.net import tcp_connect
from msgwatch.steps.trace import Trace


def lag_record(
    monitor: lag.LagMonitor, origin: float, begun: float, samples: int
) -> dict[str, Any]:
    """The probe's lag while one entry ran, from ``begun`` to now (monotonic seconds, the
    monitor's and the trace's clock; ``samples``: the monitor's count at ``begun``), shaped as
    :meth:`msgwatch.steps.lag.LagMonitor.record` (``msgwatch_probe_lag``): only the stalls that
    overlapped the entry, the longest :data:`~msgwatch.steps.lag.RECORD_STALLS` in time order,
    as ``[start, seconds]`` with ``start`` since ``origin`` (the entry's trace's start)."""
    now = time.monotonic()
    inside = [(back, late) for back, late in monitor.stalls if back >= begun and back - late <= now]
    longest = sorted(inside, key=lambda s: s[1], reverse=True)[: lag.RECORD_STALLS]
    return {
        "interval": monitor.interval,
        "tolerance": monitor.tolerance,
        "samples": max(0, monitor.samples - samples),
        "max_lag": round(max((late for _, late in inside), default=0.0), 6),
        "stalled": round(sum(late for _, late in inside), 6),
        "stall_count": len(inside),
        "stalls": [
            [round(back - late - origin, 6), round(late, 6)] for back, late in sorted(longest)
        ],
    }


CONTROL_SECONDS = 5.0
"""Seconds the direct control may take."""


async def direct_control(ctx: Context) -> dict[str, Any]:
    """The probe's direct path to the helper, not through any tunnel: a TCP connect and a short
    echo to ``ctx.helper:ctx.helper_port``. The judge's evidence that the path abroad works, so
    that a transport failing beside it is the transport's, not the network's (or the probe's)."""
    trace = Trace()
    t0 = trace.now()
    failure: str | None = None
    deadline = asyncio.get_running_loop().time() + CONTROL_SECONDS
    try:
        conn = await tcp_connect(trace, 1, ctx.helper, ctx.helper_port, deadline)
        try:
            payload = transfer.pattern(0, 64)
            await conn.write(payload, deadline)
            got = b""
            while len(got) < len(payload):
                chunk = await conn.read(deadline, len(payload) - len(got))
                if not chunk:
                    raise ProbeFailure(F.EOF_ERROR, "the helper closed before echoing")
                got += chunk
            if got != payload:
                failure = transfer.ECHO_MISMATCH
        finally:
            conn.close()
    except Exception as exc:
        failure = F.classify(exc)
    return {"helper": ctx.helper, "port": ctx.helper_port, "failure": failure, "t0": t0,
            "t": trace.now()}  # fmt: skip
