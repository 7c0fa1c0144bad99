"""The circumvention judge's rows for what went through a tunnel (``through`` items; rules in
``circumvention.toml``, ``through.*``).

- **Calls**: the original replay and its bit-inverted control, each as the share of its datagrams
  that came back (all rounds together; a replay the probe cut itself does not count). Both at
  least ``replay_pass``: ``calls_ok``. DPI through the tunnel only when the difference is clear:
  the original at most ``calls_lost_max`` back and the control at least ``calls_back_min``
  (``calls_dpi``). Both at most ``calls_lost_max`` through a tunnel that carried the transfer:
  ``calls_path``. Anything between (one short round with some random loss): ``calls_unclear``.
- **Text**: ``ok`` without a failure; ``blocked`` with mechanism ``through.<kind>`` only for a
  network failure through a tunnel whose own ``transfer`` passed. A failure of the name's
  resolution, which is done outside the tunnel (``failed_step`` ``resolve``; in records without
  it, a DNS failure or a ``resolved_outside`` target with no ``address``), is
  ``through.dns_outside``: inconclusive, the direct path's DNS is not the tunnel.
- ``measured: false``: ``not_measured`` (``tunnel.no_udp`` for a tunnel without UDP); a record
  the run's cut interrupted has the local failure ``interrupted``: ``through.unclear``.
"""

from __future__ import annotations

from msgwatch.analysis.verdicts.circumvention_rules import (
    Record,
    Rule,
    RuleSet,
    dicts,
    integer,
    kind_of,
    text,
    transfer_passed,
)


def back_share(replays: list[Record], role: str) -> float | None:
    """The share of ``role``'s datagrams that came back (None: none sent, or every replay of the
    role was cut by the probe itself)."""
    mine = [
        r for r in replays
        if r.get("role") == role and not (isinstance(r.get("probe"), dict) and r["probe"].get("cut"))
    ]  # fmt: skip
    sent = sum(integer(r.get("sent_packets")) for r in mine)
    if sent <= 0:
        return None
    back = sum(
        min(integer(r.get("received_packets")), integer(r.get("sent_packets"))) for r in mine
    )
    return back / sent


def _calls_rule(replays: list[Record], carried: bool, rules: RuleSet) -> Rule:
    original = back_share(replays, "replay_original")
    control = back_share(replays, "replay_control")
    if original is None or control is None:
        return rules.get("through.calls_unclear")
    if original >= rules.replay_pass and control >= rules.replay_pass:
        return rules.get("through.calls_ok")
    if original <= rules.calls_lost_max and control >= rules.calls_back_min:
        return rules.get("through.calls_dpi")
    if original <= rules.calls_lost_max and control <= rules.calls_lost_max and carried:
        return rules.get("through.calls_path")
    return rules.get("through.calls_unclear")


def resolved_outside_failed(item: Record, kind: str | None) -> bool:
    """Whether the text path's failure is its name's resolution outside the tunnel: its
    ``failed_step`` is ``resolve``; or (records without ``failed_step``) a DNS failure, or a
    ``resolved_outside`` endpoint that got no ``address``."""
    step = item.get("failed_step")
    if step is not None:
        return bool(step == "resolve")
    if kind == "dns":
        return True
    target = item.get("target")
    for holder in (item, target):
        if isinstance(holder, dict) and holder.get("resolved_outside") is True:
            return not (isinstance(target, dict) and text(target.get("address"), 64))
    return False


def through_rule(item: Record, keys: Record, rules: RuleSet) -> tuple[Rule, Record]:
    """The rule of one ``through`` item, and the values its text names."""
    failure = text(item.get("failure"), 128)
    values: Record = {"failure": failure}
    replays = dicts(item.get("replays"))
    carried = transfer_passed(keys)
    reason = text(item.get("reason"), 64)
    if failure == "udp_not_carried" or (item.get("measured") is False and reason == "no_udp"):
        return rules.get("through.not_carried"), values
    if item.get("measured") is False:  # the tunnel did not come up: nothing was tried
        values["reason"] = reason or "not_measured"
        return rules.get("through.not_measured"), values
    if replays:
        return _calls_rule(replays, carried, rules), values
    if failure is None:
        return rules.get("through.ok"), values
    kind = kind_of(failure, rules)
    if resolved_outside_failed(item, kind):
        return rules.get("through.dns_outside"), values
    if kind is None or not carried:
        return rules.get("through.unclear"), values
    values["kind"] = kind
    return rules.get("through.blocked"), values


def through_ids(item: Record) -> list[int]:
    """The transaction ids a through row's evidence names (its replays, its TLS handshake)."""
    ids = [integer(r.get("transaction_id")) for r in dicts(item.get("replays"))]
    tls = item.get("tls")
    if isinstance(tls, dict):
        ids.append(integer(tls.get("transaction_id")))
    return sorted({i for i in ids if i > 0})
