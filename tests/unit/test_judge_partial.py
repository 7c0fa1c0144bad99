"""The judge on partial failure (issue 9, item 11): pools, retries, the helper's view, the fence."""

from __future__ import annotations

from typing import Any

from msgwatch.analysis.verdicts.judge import judge


def _target(txid: int, endpoint: str, step: str | None = None, failure: str | None = None,
            attempt: int = 1, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"function": "text", "role": "endpoint", "endpoint_id": endpoint, "host": None,
            "address": f"198.18.10.{txid}", "port": 443, "protocol": "tcp", "transport": "tcp",
            "transaction_ids": [txid], "failed_step": step, "failure": failure,
            "attempt": attempt, **extra}  # fmt: skip


def _measurement(targets: list[dict[str, Any]], mode: str = "any_of", **extra: Any) -> Any:
    keys: dict[str, Any] = {
        "msgwatch_service": "svc",
        "msgwatch_functions": [{"function": "text", "mode": mode, "endpoints": []}],
        "msgwatch_targets": targets,
        **extra,
    }
    return {"input": "svc", "test_keys": keys}


def _view(txid: int, addresses: list[str], up: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The helper's view of ``addresses`` (port 443, tcp): reached or not; (target, record)."""
    steps = [{"kind": "tcp", "address": a, "port": 443} for a in addresses]
    results = [{"failure": None if up else "generic_timeout_error"} for _ in addresses]
    record = {"transaction_id": txid, "helper": "198.18.0.9", "steps": steps,
              "results": results, "failure": None}  # fmt: skip
    target = {"function": "text", "role": "pool_view", "endpoint_id": "pool-view",
              "transaction_ids": [txid], "failure": None, "failed_step": None}  # fmt: skip
    return target, record


def _pool(up: bool | None) -> list[dict[str, Any]]:
    """Six endpoints, two failing (each tried twice); the helper reached them (``up``) or not."""
    targets = [_target(i, f"e{i}") for i in range(1, 5)]
    for i in (5, 6):
        targets += [_target(i, f"e{i}", "tcp_connect", "generic_timeout_error"),
                    _target(10 + i, f"e{i}", "tcp_connect", "generic_timeout_error", 2)]  # fmt: skip
    extra: dict[str, Any] = {}
    if up is not None:
        target, record = _view(99, ["198.18.10.5", "198.18.10.6"], up)
        targets.append(target)
        extra["msgwatch_helper_views"] = [record]
    return judge(_measurement(targets, **extra))


def test_a_third_of_a_pool_failing_while_the_helper_reaches_it_is_degraded_with_the_count() -> None:
    (v,) = _pool(up=True)
    assert (v["verdict"], v["mechanism"], v["rule_id"]) == (
        "degraded",
        "pool.partial",
        "pool.partial",
    )
    assert v["endpoints"] == {"total": 6, "ok": 4, "failed": 2}
    assert v["evidence"] == [5, 6, 15, 16]
    assert "2 of 6" in v["explanation"]


def test_pool_endpoints_down_for_everyone_or_unchecked_leave_the_pool_ok() -> None:
    for up in (False, None):
        (v,) = _pool(up=up)
        assert (v["verdict"], v["mechanism"]) == ("ok", None)
        assert v["endpoints"] == {"total": 6, "ok": 4, "failed": 2}


def test_attempts_of_one_endpoint() -> None:
    once = [_target(1, "e1", "tcp_connect", "generic_timeout_error"), _target(2, "e1", attempt=2)]
    (v,) = judge(_measurement(once, "all_of"))
    assert (v["verdict"], v["mechanism"], v["rule_id"]) == (
        "degraded",
        "intermittent",
        "intermittent",
    )
    assert v["evidence"] == [1, 2] and v["endpoints"] == {"total": 1, "ok": 0, "failed": 1}
    twice = [_target(1, "e1", "tcp_connect", "generic_timeout_error"),
             _target(2, "e1", "tcp_connect", "generic_timeout_error", 2)]  # fmt: skip
    (v,) = judge(_measurement(twice, "all_of"))
    assert (v["verdict"], v["mechanism"]) == ("blocked", "tcp.timeout")
    assert v["evidence"] == [1, 2]
    # A measurement made before retries (no ``attempt``) is judged as before.
    (v,) = judge(_measurement([{k: t[k] for k in t if k != "attempt"} for t in twice[:1]]))
    assert (v["verdict"], v["mechanism"]) == ("blocked", "tcp.timeout")


def test_not_measured_endpoints_never_decide() -> None:
    fenced = _target(2, "e2", not_measured="fence")
    # A pool with one ok endpoint is ok whatever else was not measured.
    (v,) = judge(_measurement([_target(1, "e1"), fenced]))
    assert (v["verdict"], v["mechanism"]) == ("ok", None)
    # A pool whose measured endpoints all failed cannot be called blocked: the rest may work.
    failed = _target(1, "e1", "tcp_connect", "generic_timeout_error")
    (v,) = judge(_measurement([failed, fenced]))
    assert (v["verdict"], v["mechanism"]) == ("not_measured", "fence")
    # Each required, one blocked: blocked stands.
    (v,) = judge(_measurement([failed, fenced], "all_of"))
    assert (v["verdict"], v["mechanism"]) == ("blocked", "tcp.timeout")
    # Each required, the measured ones ok: not "ok".
    (v,) = judge(_measurement([_target(1, "e1"), fenced], "all_of"))
    assert (v["verdict"], v["mechanism"]) == ("not_measured", "fence")
    assert v["endpoints"] == {"total": 2, "ok": 1, "failed": 0, "not_measured": 1}
