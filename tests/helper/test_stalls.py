"""The helper's own stalls during a flow (``msgwatch.helper.stalls``): which of the loop monitor's
stalls a flow carries, and the helper's monitor itself (the probe's ``LagMonitor``: bounded)."""

from __future__ import annotations

from msgwatch.helper.flows import FlowTable
from msgwatch.helper.stalls import MARGIN, during
from msgwatch.steps.lag import MAX_STALLS


def test_a_flow_carries_the_stalls_during_it_and_those_whose_shadow_it_began_in() -> None:
    stalls = [(12.0, 2.0), (20.1, 0.1)]  # 10 to 12, shadow to 14; 20 to 20.1, shadow to 20.35
    assert during(stalls, 11.0, 11.5) == {"count": 1, "seconds": 2.0, "longest": 2.0}  # inside
    assert during(stalls, 5.0, 10.0)["count"] == 1  # ended as it began
    assert during(stalls, 13.9, 15.0)["count"] == 1  # began in the shadow: it may have waited
    assert during(stalls, 14.1, 15.0)["count"] == 0  # after the shadow
    assert during(stalls, 5.0, 9.9)["count"] == 0  # over before the stall began
    assert during(stalls, 20.1 + MARGIN - 0.01, 21.0)["count"] == 1
    assert during(stalls, 20.1 + MARGIN + 0.01, 21.0)["count"] == 0
    assert during(stalls, 0.0, 30.0) == {"count": 2, "seconds": 2.1, "longest": 2.0}


def test_the_helpers_record_of_stalls_is_bounded() -> None:
    assert FlowTable().lag.stalls.maxlen == MAX_STALLS
