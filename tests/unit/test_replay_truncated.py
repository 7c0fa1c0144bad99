"""A replay whose sending the deadline ended (the probe's loop stalled past it) is ``cut``.

The loop is stalled on purpose for longer than the replay's deadline, after its first datagrams:
the rest of its schedule is never sent. What it measured is the probe's lag, so the record says
``cut`` (and the judge leaves the round out), even though its listening ended within the deadline.
"""

from __future__ import annotations

import asyncio
import time

from msgwatch.analysis.rounds import probe_trouble
from msgwatch.steps import lag
from msgwatch.steps.replay import ReplayOptions, replay
from msgwatch.steps.trace import Trace
from msgwatch.wire import calltraffic as C
from tests.unit.servers import deadline
from tests.unit.test_probe_lag import thread_echo


def test_a_schedule_the_deadline_ended_is_cut() -> None:
    packets = C.voice_profile(0.3, 3)
    trace = Trace()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with lag.running():
            loop.call_later(0.05, time.sleep, 1.2)  # past the deadline below
            with thread_echo() as (ip, port):
                options = ReplayOptions(label={"role": "replay_original"})
                await replay(trace, 1, ip, port, [(p.offset, p.payload) for p in packets],
                             deadline(1.0), options)  # fmt: skip

    asyncio.run(scenario())
    (record,) = trace.replays
    assert 0 < record["sent_packets"] < len(packets)
    assert record["probe"]["cut"] is True
    assert probe_trouble(record) == "cut"
