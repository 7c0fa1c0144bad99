"""The evidence of an event: a pure selection from its series' verdict references.

Rules:

- ``last_working_before``: the newest ``ok`` verdict before the start; ``first_failing``: the oldest
  interference verdict at or after the start; ``inside``: the first ``evidence_inside`` failing
  verdicts inside [start, end) and ``inside_count`` all of them; ``first_working_after``: the oldest
  ``ok`` verdict at or after the end (None while ongoing).
- References are ordered by (time, measurement_uid), so the selection is the same whatever order the
  engine returns them in. A reference is ``{"measurement_uid", "time"}`` (time as row text).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from msgwatch.analysis.events.model import VerdictRef
from msgwatch.analysis.events.series import TIME_FORMAT
from msgwatch.measurement import vocab

_FAILING = frozenset(vocab.INTERFERENCE)


def _ref(ref: VerdictRef | None) -> dict[str, str] | None:
    if ref is None:
        return None
    return {"measurement_uid": ref.measurement_uid, "time": ref.time.strftime(TIME_FORMAT)}


def select(
    refs: Iterable[VerdictRef], start: dt.datetime, end: dt.datetime | None, inside_max: int = 20
) -> dict[str, Any]:
    """The evidence of one event from the verdicts of its window."""
    ordered = sorted(refs, key=lambda r: (r.time, r.measurement_uid))
    before: VerdictRef | None = None
    after: VerdictRef | None = None
    inside: list[VerdictRef] = []
    count = 0
    for ref in ordered:
        if ref.time < start:
            if ref.verdict == vocab.OK:
                before = ref
        elif end is None or ref.time < end:
            if ref.verdict in _FAILING:
                count += 1
                if len(inside) < inside_max:
                    inside.append(ref)
        elif after is None and ref.verdict == vocab.OK:
            after = ref
    return {
        "last_working_before": _ref(before),
        "first_failing": _ref(inside[0] if inside else None),
        "inside": [r.measurement_uid for r in inside],
        "inside_count": count,
        "first_working_after": _ref(after),
    }
