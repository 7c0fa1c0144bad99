"""The helper's own stalls during a flow: when its event loop ran late, so that what it echoed
left late.

A probe judges a call path by the echoes it gets back within a grace after its last datagram. If
the helper itself stops for a while (a busy machine, a page-in, a stopped process), the datagrams
wait in its socket's buffer and are echoed late, in a burst: the probe counts them lost or
bunched, and the loss would read as the path's. The probe already leaves out what its own lag
spoiled (``msgwatch.analysis.rounds``); this is the same evidence from the other end.

The helper samples its loop with the probe's own monitor (:class:`msgwatch.steps.lag.LagMonitor`:
a wake-up every 20 ms, a stall from 50 ms late, at most 4,096 kept). A flow's view
(``GET /v1/udp/flows``, :mod:`msgwatch.helper.flows`) carries :func:`during`: the stalls that
touch the flow's life, its first datagram to its last activity, each stall with a shadow after it.
A datagram that arrived during a stall is read, and its flow begins in the helper's eyes, only
when the helper gets to it, and after a long stall the helper first works through every socket's
backlog. A flow that began within the shadow, the stall's own length (at least :data:`MARGIN`)
after it ended, may have waited it out. Measured in the lab: after 2 s stopped, flows that had
waited were first read more than 0.25 s after the helper went on. The shadow errs towards
counting a stall that did no harm: it only leaves a round out. Pure: time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from msgwatch.wire.helper_api import StallCounts

__all__ = ["MARGIN", "during"]

MARGIN: Final = 0.25
"""The shortest shadow: seconds after a stall in which a flow that begins may have waited it out."""


def during(stalls: Iterable[tuple[float, float]], start: float, end: float) -> StallCounts:
    """Of ``stalls`` (``(when the loop came back, lag)``, monotonic, as
    :attr:`~msgwatch.steps.lag.LagMonitor.stalls` keeps them), those that began by ``end`` and
    ended no earlier than their shadow before ``start``: how many, their seconds together and the
    longest (each counted whole)."""
    found = [lag for back, lag in stalls if back - lag <= end and back + max(MARGIN, lag) >= start]
    return StallCounts(
        count=len(found),
        seconds=round(float(sum(found)), 3),
        longest=round(max(found, default=0.0), 3),
    )
