"""Verdict rows: msgwatch's judge on msgwatch's test, the OONI map on OONI's.

- msgwatch: :func:`msgwatch.analysis.verdicts.judge.judge` on the measurement, one row per
  function it judges; ``evidence`` is the JSON list of the deciding transaction ids;
  ``control_ok`` says whether the measurement's own control worked for that function: the test
  helper reached one of its targets (``helper_view``/``pool_view`` records of
  ``msgwatch_helper_views``), or a bit-inverted control replay (``replay_control``,
  ``replay_down_control``) got packets through; False when there were controls and none
  worked; None without any. A ``msgwatch_circumvention`` measurement's rows (the same judge
  reads it) have ``control_ok`` from its ``control``: the direct path to the helper worked, for
  every row of the measurement. ``ooni_anomaly`` is None. The reader side judges each
  measurement alone: a measurement without a ``control`` of its own is not given the other
  measurements of its run as peers (the probe's run-level judge does that).
- OONI: one row per :class:`~msgwatch.analysis.transform.ooni_map.Mapped`; ``evidence`` is the
  JSON list of OONI's keys read; ``control_ok`` is None.
- Every row carries :data:`RULES_VERSION`: the judge's rules and the OONI map together.
- The judge sees a bounded view (:func:`judgeable`): each list it reads cut to
  :data:`JUDGE_ENTRIES` dict entries (strings for ``msgwatch_service_networks``), a key of the
  wrong type dropped. The judge's work grows as targets × records: a measurement beyond
  :data:`JUDGE_BUDGET` (far above any real one) is not judged (``judge_skipped:too_large``).
  Network events the reader deferred (:mod:`msgwatch.analysis.parse`) stay deferred in the view,
  bounded when loaded; they count as their opening braces (:func:`_judge_work`).
  Should the judge still fail on odd content, :func:`msgwatch_rows` gives no rows and the
  reason (``judge_failed:<error>``) instead of raising.
"""

from __future__ import annotations

from typing import Any, Final

from msgwatch.analysis.parse import Deferred
from msgwatch.analysis.transform.base import Envelope, Row, entries, integer, jtext, text, verdict
from msgwatch.analysis.transform.ooni_map import Mapped
from msgwatch.analysis.verdicts.circumvention import RULES_VERSION as CIRCUMVENTION_RULES
from msgwatch.analysis.verdicts.circumvention import TEST_NAME as CIRCUMVENTION
from msgwatch.analysis.verdicts.judge import judge
from msgwatch.analysis.verdicts.rules import RULES_VERSION as JUDGE_RULES

MAP_VERSION: Final = "1"
RULES_VERSION: Final = f"{JUDGE_RULES}+{CIRCUMVENTION_RULES}+ooni-map.{MAP_VERSION}"
"""Stamped on every verdict row; a change of the judge's rules (the service test's, the
circumvention test's) or of the OONI map changes it."""

_CONTROL_REPLAYS = ("replay_control", "replay_down_control")
JUDGE_ENTRIES: Final = 4096
JUDGE_BUDGET: Final = 500_000
"""Targets × records: the lab's largest measurement is about 80,000."""
_LISTS = ("queries", "tcp_connect", "tls_handshakes", "requests", "network_events",
          "msgwatch_targets", "msgwatch_functions", "msgwatch_udp_exchanges",
          "msgwatch_throughput", "msgwatch_app_handshakes", "msgwatch_replays",
          "msgwatch_helper_views")  # fmt: skip


JUDGE_ERRORS: Final = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError,
                       OverflowError)  # fmt: skip
"""What odd content makes the judge raise (OverflowError: an integer beyond a double's range,
which :mod:`msgwatch.analysis.parse` can leave in a measurement)."""


def _bounded(value: Any) -> list[dict[str, Any]]:
    return entries(value)[:JUDGE_ENTRIES]


def _judge_work(keys: dict[str, Any]) -> int:
    """Targets × records of the judge's view. A deferred list counts as its opening braces (at
    least its entries: each is an object) up to the judge's bound, counted without parsing it, and
    only when its bound could take the work beyond :data:`JUDGE_BUDGET`."""
    targets = len(keys.get("msgwatch_targets", ()))
    records = deferred = 0
    for name in _LISTS:
        value = keys.get(name)
        if isinstance(value, Deferred):
            deferred += 1
        elif value is not None:
            records += len(value)
    if deferred and targets * (records + deferred * JUDGE_ENTRIES) > JUDGE_BUDGET:
        for name in _LISTS:
            if isinstance(value := keys.get(name), Deferred):
                records += min(value.raw.count(b"{"), JUDGE_ENTRIES)
    return targets * records


def judgeable(measurement: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """``measurement`` with a bounded, well-typed view of ``test_keys`` for the judge."""
    view = dict(keys)
    for name in _LISTS:
        if name in view:
            value = view[name]
            view[name] = (value.shaped(_bounded) if isinstance(value, Deferred)
                          else _bounded(value))  # fmt: skip
    networks = view.get("msgwatch_service_networks")
    view["msgwatch_service_networks"] = [
        n for n in (networks if isinstance(networks, list) else [])[:JUDGE_ENTRIES]
        if isinstance(n, str)
    ]  # fmt: skip
    for name, kind in (("msgwatch_service", str), ("msgwatch_probe_lag", dict)):
        if not isinstance(view.get(name), kind):
            view.pop(name, None)
    return {**measurement, "test_keys": view}


def msgwatch_rows(env: Envelope, measurement: dict[str, Any]) -> tuple[list[Row], str | None]:
    """The verdict rows of a ``msgwatch_service`` measurement, and why there are none if the
    judge failed."""
    view = judgeable(measurement, env.keys)
    keys = view["test_keys"]
    if _judge_work(keys) > JUDGE_BUDGET:
        return [], "judge_skipped:too_large"
    try:
        judged_all = judge(view)
    except JUDGE_ERRORS as e:
        return [], f"judge_failed:{type(e).__name__}"
    circumvention = measurement.get("test_name") == CIRCUMVENTION
    controls = _controls(env.keys)
    direct = _direct_control(env.keys) if circumvention else None
    rows = []
    for judged in judged_all:
        service, function = text(judged.get("service"), 64), text(judged.get("function"), 32)
        if not service or not function:
            continue
        confidence = judged.get("confidence")
        rows.append(
            verdict(
                env, service, function,
                verdict=text(judged.get("verdict"), 32),
                mechanism=text(judged.get("mechanism"), 64),
                confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
                rule_id=text(judged.get("rule_id"), 64),
                rules_version=RULES_VERSION,
                evidence=jtext(judged.get("evidence") or []) or "[]",
                control_ok=direct if circumvention else controls.get(function),
                explanation=text(judged.get("explanation")),
            )
        )  # fmt: skip
    return rows, None


def _direct_control(keys: dict[str, Any]) -> bool | None:
    """A circumvention measurement's control: the direct path to the test helper worked (None:
    the run made none)."""
    control = keys.get("control")
    return control.get("failure") is None if isinstance(control, dict) else None


def _controls(keys: dict[str, Any]) -> dict[str, bool]:
    """Function → whether one of its own controls worked (absent: no control)."""
    reached = {}
    for view in entries(keys.get("msgwatch_helper_views")):
        if view.get("failure") is None:
            results = entries(view.get("results"))
            reached[integer(view.get("transaction_id"))] = any(
                r.get("failure") is None for r in results
            )
    through = {
        integer(r.get("transaction_id")): (integer(r.get("received_packets")) or 0) > 0
        for r in entries(keys.get("msgwatch_replays"))
        if r.get("role") in _CONTROL_REPLAYS
    }
    out: dict[str, bool] = {}
    for target in entries(keys.get("msgwatch_targets")):
        function = target.get("function")
        ids = target.get("transaction_ids")
        if not isinstance(function, str) or not isinstance(ids, list):
            continue
        role = target.get("role")
        seen = reached if role in ("helper_view", "pool_view") else None
        seen = through if role in _CONTROL_REPLAYS else seen
        if seen is None:
            continue
        for txid in ids[:64]:
            if isinstance(txid, int) and txid in seen:
                out[function] = out.get(function, False) or seen[txid]
    return out


def ooni_rows(env: Envelope, mapped: list[Mapped]) -> list[Row]:
    """The verdict rows of an OONI measurement."""
    return [
        verdict(
            env,
            m.service,
            m.function,
            verdict=m.verdict,
            mechanism=m.mechanism,
            confidence=m.confidence,
            rule_id=m.rule_id,
            rules_version=RULES_VERSION,
            evidence=jtext(list(m.evidence)),
            ooni_anomaly=m.ooni_anomaly,
            explanation=f"OONI's {env.base['test_name']} test: {m.verdict}",
        )
        for m in mapped
    ]
