"""The helper's own stalls (``msgwatch.helper.stalls``): which of them a flow carries, the bounds,
and the loop watch against a loop that really stops."""

from __future__ import annotations

import asyncio
import time

from msgwatch.helper.stalls import MARGIN, Stalls, watch


def test_a_flow_carries_the_stalls_during_it_and_those_whose_shadow_it_began_in() -> None:
    stalls = Stalls()
    stalls.add(10.0, 2.0)  # 10 to 12; its shadow runs to 14
    stalls.add(20.0, 0.1)  # 20 to 20.1; its shadow is the margin, to 20.35
    assert stalls.within(11.0, 11.5) == {"count": 1, "seconds": 2.0, "longest": 2.0}  # inside
    assert stalls.within(5.0, 10.0)["count"] == 1  # ended as it began
    assert stalls.within(13.9, 15.0)["count"] == 1  # began in the shadow: it may have waited
    assert stalls.within(14.1, 15.0)["count"] == 0  # after the shadow
    assert stalls.within(5.0, 9.9)["count"] == 0  # over before the stall began
    assert stalls.within(20.1 + MARGIN - 0.01, 21.0)["count"] == 1
    assert stalls.within(20.1 + MARGIN + 0.01, 21.0)["count"] == 0
    assert stalls.within(0.0, 30.0) == {"count": 2, "seconds": 2.1, "longest": 2.0}


def test_the_record_is_bounded_and_forgets_old_stalls() -> None:
    stalls = Stalls(max_stalls=3)
    for start in range(5):
        stalls.add(float(start), 0.5)
    assert len(stalls) == 3 and stalls.within(0.0, 1.9)["count"] == 0  # the oldest went
    stalls.forget(before=3.6)  # drops those that ended before 3.6: 2 to 2.5, 3 to 3.5
    assert len(stalls) == 1 and stalls.within(4.0, 4.1)["count"] == 1


def test_the_watch_records_a_loop_that_stops() -> None:
    async def scenario() -> Stalls:
        stalls = Stalls()
        task = asyncio.create_task(watch(stalls))
        await asyncio.sleep(0.1)
        time.sleep(0.4)  # nothing runs on this loop for 0.4 s
        await asyncio.sleep(0.1)
        task.cancel()
        return stalls

    stalls = asyncio.run(scenario())
    found = stalls.within(0.0, time.monotonic())
    assert found["count"] >= 1 and 0.35 <= found["longest"] <= found["seconds"]
