"""A raw measurement's call replays: each original paired with its bit-inverted control.

Rules:

- The replays of a function are found as the judge finds them
  (:func:`msgwatch.analysis.verdicts.calls.call_records`: the function's targets in
  ``msgwatch_targets``, each naming its replay in ``msgwatch_replays`` by its first transaction
  id). Upstream pairs are ``replay_original``/``replay_control``, downstream pairs
  ``replay_down_original``/``replay_down_control``; an original and a control pair by their
  ``round`` and ``attempt`` (else in order).
- Everything is hostile: a record or interval that is not an object, a count that is not a
  number, are skipped; at most :data:`MAX_REPLAYS` pairs and :data:`MAX_INTERVALS` intervals each.
"""

from __future__ import annotations

from typing import Any, Final

from msgwatch.analysis.verdicts.calls import call_records
from msgwatch.dashboard.model import Interval, Replay

MAX_REPLAYS: Final = 64
MAX_INTERVALS: Final = 600
PAIRS: Final = (
    ("replay_original", "replay_control", ""),
    ("replay_down_original", "replay_down_control", " · downstream"),
)


def replays(raw: dict[str, Any]) -> tuple[Replay, ...]:
    """The measurement's replay pairs, by function, upstream first."""
    keys = raw.get("test_keys")
    if not isinstance(keys, dict):
        return ()
    targets = [t for t in keys.get("msgwatch_targets") or [] if isinstance(t, dict)]
    service = raw.get("input") if isinstance(raw.get("input"), str) else ""
    functions = sorted({t["function"] for t in targets if isinstance(t.get("function"), str)})
    found: list[Replay] = []
    for function in functions:
        mine = [t for t in targets if t.get("function") == function]
        try:
            by_role = call_records(mine, keys)
        except TypeError:  # an id that is not a key (a list, a dict)
            continue
        for original_role, control_role, label in PAIRS:
            controls = list(by_role.get(control_role, []))
            for original in by_role.get(original_role, []):
                control = _partner(original, controls)
                found.append(_replay(str(service), function, original, control, label))
                if len(found) >= MAX_REPLAYS:
                    return tuple(found)
    return tuple(found)


def _partner(original: dict[str, Any], controls: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The control of the same round and attempt (else the first left), taken from the list."""
    key = (original.get("round"), original.get("attempt"))
    for i, control in enumerate(controls):
        if (control.get("round"), control.get("attempt")) == key:
            return controls.pop(i)
    return controls.pop(0) if controls else None


def _replay(
    service: str,
    function: str,
    original: dict[str, Any],
    control: dict[str, Any] | None,
    label: str,
) -> Replay:
    where = original.get("address") if isinstance(original.get("address"), str) else ""
    round_ = original.get("round")
    target = f"{where} · round {round_}" if isinstance(round_, int) else str(where)
    return Replay(
        service=service,
        function=function,
        target=target + label,
        original=_intervals(original),
        control=_intervals(control) if control is not None else (),
        original_loss=_number(original.get("loss")),
        control_loss=_number(control.get("loss")) if control is not None else None,
    )


def _intervals(record: dict[str, Any]) -> tuple[Interval, ...]:
    entries = record.get("intervals")
    if not isinstance(entries, list):
        return ()
    found = []
    for entry in entries[:MAX_INTERVALS]:
        if not isinstance(entry, dict):
            continue
        t, tx, rx = (_number(entry.get(k)) for k in ("t", "tx_packets", "rx_packets"))
        if t is not None and tx is not None and rx is not None:
            found.append(Interval(t, int(tx), int(rx)))
    return tuple(found)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
