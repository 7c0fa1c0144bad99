"""Probe tokens, the admin token, rate limits and /metrics, over a real uvicorn on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from msgwatch.collector.auth import Guard, Tokens, bearer, read_tokens
from msgwatch.collector.models import Rejection
from msgwatch.collector.ratelimit import RateLimiter, retry_after
from tests.collector.liveserver import FakeClock, envelope, make_settings, thread_server

PROBE_TOKENS = ["probe-token-one", "probe-token-two"]
ADMIN = "admin-secret-token"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# probes\n\n" + "\n".join(f"  {t}  " for t in PROBE_TOKENS) + "\n")
    return path


# --- pure parts ------------------------------------------------------------------------------------


def test_token_file_and_header_parsing(tokens_file: Path, tmp_path: Path) -> None:
    assert read_tokens(tokens_file) == PROBE_TOKENS
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError):
        read_tokens(empty)
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer   abc ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer ") is None
    assert bearer(None) is None


def test_tokens_identify_without_revealing() -> None:
    tokens = Tokens(PROBE_TOKENS)
    one, two = tokens.identify("probe-token-one"), tokens.identify("probe-token-two")
    assert one and two and one != two
    assert "probe-token" not in one
    assert tokens.identify("probe-token-on") is None
    assert tokens.identify("") is None


def test_guard_statuses() -> None:
    guard = Guard(PROBE_TOKENS, ADMIN)
    with pytest.raises(Rejection) as info:
        guard.submitter(None)
    assert info.value.status == 401
    assert guard.submitter("Bearer probe-token-two") is not None
    with pytest.raises(Rejection) as info:
        guard.check_admin("Bearer probe-token-two")
    assert (info.value.reason, info.value.status) == ("forbidden", 403)
    with pytest.raises(Rejection) as info:
        guard.check_admin("Bearer nope")
    assert (info.value.reason, info.value.status) == ("unauthorized", 401)
    guard.check_admin(f"Bearer {ADMIN}")
    open_guard = Guard(None, None)
    assert open_guard.submitter(None) is None
    open_guard.check_admin(None)


def test_token_bucket() -> None:
    limiter = RateLimiter(rate=2.0)
    assert [limiter.take("a", 0.0) for _ in range(4)] == [0.0] * 4  # burst 2N
    wait = limiter.take("a", 0.0)
    assert wait == pytest.approx(0.5)
    assert retry_after(wait) == "1"
    assert limiter.take("b", 0.0) == 0.0  # another client, another bucket
    assert limiter.take("a", 0.5) == 0.0  # refilled by one token
    assert limiter.take("a", 0.5) > 0
    assert limiter.take("a", 100.0) == 0.0  # never more than the burst
    assert sum(limiter.take("a", 100.0) == 0.0 for _ in range(10)) == 3


def test_token_bucket_map_is_bounded() -> None:
    limiter = RateLimiter(rate=1.0, max_clients=3)
    for name in "abcdef":
        limiter.take(name, 0.0)
    assert len(limiter) == 3
    limiter.take("d", 0.0)  # d is now the most recent; e is the oldest of the rest
    limiter.take("g", 0.0)
    assert len(limiter) == 3


# --- over HTTP -------------------------------------------------------------------------------------


def test_probe_tokens_guard_submissions_only(tmp_path: Path, tokens_file: Path) -> None:
    settings = make_settings(tmp_path / "data", probe_tokens_file=tokens_file)
    with thread_server(settings) as server:
        anonymous, wrong = server.client(), server.client(token="probe-token-three")
        for client in (anonymous, wrong):
            answer = client.add(envelope(), key="k1")
            assert answer.status == 401
            assert answer.json()["error"] == "unauthorized"
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert client.post("/api/v1/submit", {"measurements": []}).status == 401
            assert client.post("/report", {}).status == 401
        good = server.client(token="probe-token-two")
        stored = good.add(envelope(), key="k1")
        assert stored.status == 200, stored.body
        uid = stored.json()["measurement_uid"]
        # the read API and /health are public
        assert anonymous.get(f"/api/v1/measurements/{uid}").status == 200
        assert anonymous.get("/api/v1/measurements").status == 200
        assert anonymous.get("/health").status == 200
        assert anonymous.get("/metrics").status == 200  # no admin token configured


def test_admin_token_guards_metrics(tmp_path: Path, tokens_file: Path) -> None:
    settings = make_settings(tmp_path / "data", probe_tokens_file=tokens_file, admin_token=ADMIN)
    with thread_server(settings) as server:
        probe = server.client(token="probe-token-one")
        assert probe.add(envelope(), key="m1").status == 200
        assert probe.add(envelope(), key="m1").json()["status"] == "duplicate"
        assert probe.add(envelope(probe_asn="x"), key="m2").json()["error"] == "bad_asn"
        assert server.client().get("/metrics").status == 401
        denied = probe.get("/metrics")
        assert (denied.status, denied.json()["error"]) == (403, "forbidden")
        answer = server.client(token=ADMIN).get("/metrics")
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = answer.body.decode()
        assert "msgwatch_collector_accepted_total 1\n" in text
        assert "msgwatch_collector_duplicates_total 1\n" in text
        assert 'msgwatch_collector_rejected_total{reason="bad_asn"} 1\n' in text
        assert 'msgwatch_collector_rejected_total{reason="unauthorized"} 1\n' in text
        assert 'msgwatch_collector_rejected_total{reason="forbidden"} 1\n' in text
        assert "msgwatch_collector_storage_failures_total 0\n" in text
        assert (
            'msgwatch_collector_request_duration_seconds_bucket{route="/report/{report_id}",le="+Inf"} 3'
            in text
        )
        assert "msgwatch_collector_store_group_size_count 2\n" in text
        for line in text.splitlines():  # the exposition format: comments or "name value"
            assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


def test_rate_limit_per_address(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path / "data", rate_limit=2.0)
    with thread_server(settings, monotonic=clock) as server:
        first, second = server.client(source="127.0.0.2"), server.client(source="127.0.0.3")
        statuses = [first.add(envelope(), key=f"a{i}").status for i in range(5)]
        assert statuses == [200, 200, 200, 200, 429]
        limited = first.add(envelope(), key="a5")
        assert limited.json()["error"] == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert second.add(envelope(), key="b0").status == 200  # its own bucket
        # the read API and report opening/closing are not counted
        assert first.get("/api/v1/measurements").status == 200
        clock.now += 0.5
        assert first.add(envelope(), key="a6").status == 200
        assert first.add(envelope(), key="a7").status == 429
        batch = first.post("/api/v1/submit", {"measurements": [{"measurement": envelope()}]})
        assert batch.status == 429


def test_rate_limit_per_token(tmp_path: Path, tokens_file: Path) -> None:
    clock = FakeClock()
    settings = make_settings(tmp_path / "data", rate_limit=1.0, probe_tokens_file=tokens_file)
    with thread_server(settings, monotonic=clock) as server:
        # the same address, two tokens: two buckets of 2
        one, two = server.client(token="probe-token-one"), server.client(token="probe-token-two")
        assert [one.add(envelope(), key=f"x{i}").status for i in range(3)] == [200, 200, 429]
        assert [two.add(envelope(), key=f"y{i}").status for i in range(3)] == [200, 200, 429]
