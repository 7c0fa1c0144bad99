"""Submission against a scripted collector: idempotency, backoff, failover, rejections, a week
offline. Time is injected: sleeps are recorded, never slept."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from msgwatch.spool.client import Client
from msgwatch.spool.spool import Ack, Spool
from msgwatch.spool.submit import Backoff, collector_urls, read_token, retry_after, submit
from tests.spool import closed_port, fake_collector, fixture_measurements


class Sleeps:
    """An injected sleep: records each wait; ``stop_after`` waits, asks to stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.waits: list[float] = []
        self.stop_after = stop_after

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


class FixedRandom(random.Random):
    """``uniform(a, b)`` is always ``b``: the jitter at its largest."""

    def uniform(self, a: float, b: float) -> float:
        return b


def _spool(tmp_path: Path, n: int = 3) -> tuple[Spool, list[str]]:
    spool = Spool(tmp_path / "state")
    base = fixture_measurements()
    return spool, spool.add([base[i % len(base)] for i in range(n)])


def _ledger_keys(spool: Spool) -> list[str]:
    return [r["key"] for r in spool.ledger()]


def test_stored_measurements_go_to_the_ledger(tmp_path: Path) -> None:
    spool, keys = _spool(tmp_path)
    with fake_collector() as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert summary.ok and (summary.stored, summary.duplicate, summary.remaining) == (3, 0, 0)
    assert sorted(_ledger_keys(spool)) == sorted(keys)
    assert {r["uid"] for r in spool.ledger()} == {v["uid"] for v in fake.stored.values()}
    assert all(r["collector"] == fake.url and r["status"] == "stored" for r in spool.ledger())
    assert spool.pending() == [] and spool.read_attempts()["items"] == {}
    assert fake.requests[0]["path"] == "/api/v1/submit"
    # What the collector got is what was measured, byte for byte; each key is the network's tag
    # (one network here) and a random part, and the probe id is in none of them.
    probe_id = spool.read_probe_id()
    assert probe_id is not None
    for key, stored in fake.stored.items():
        assert stored["measurement"] in fixture_measurements()
        assert re.fullmatch(r"[0-9a-f]{16}\.[0-9a-f]{32}", key) and probe_id[:8] not in key
    assert len({key.split(".")[1] for key in fake.stored}) == 3
    last = spool.read_attempts()["last_submission"]
    assert last["ok"] and last["stored"] == 3


def test_retry_after_a_lost_response_creates_no_duplicate(tmp_path: Path) -> None:
    spool, keys = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["drop"]) as fake:  # stores the batch, then hangs up without answering
        summary = submit(spool, [fake.url], sleep=sleeps)
    assert [r["action"] for r in fake.requests] == ["drop", "ok"]
    assert fake.requests[0]["keys"] == fake.requests[1]["keys"]  # the same keys, retried
    assert (summary.stored, summary.duplicate, summary.remaining) == (0, 3, 0)
    assert all(count == 1 for count in fake.store_count.values()) and len(fake.stored) == 3
    assert sorted(_ledger_keys(spool)) == sorted(keys)  # once each
    assert len(sleeps.waits) == 1
    assert summary.collectors[0].last_error == "eof_error"


def test_backoff_is_exponential_with_jitter() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=5.0)
    rng = random.Random(7)
    for retry, ceiling in enumerate([1.0, 2.0, 4.0, 5.0, 5.0]):
        for _ in range(50):
            assert ceiling / 2 <= backoff.delay(retry, rng) <= ceiling
    assert len({round(backoff.delay(2, rng), 6) for _ in range(20)}) > 10  # really jittered


def test_backoff_timing_on_5xx(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["503", "500", "503"]) as fake:
        summary = submit(spool, [fake.url], sleep=sleeps, rng=FixedRandom(),
                         backoff=Backoff(base=1.0, factor=2.0, tries=4))  # fmt: skip
    assert sleeps.waits == [1.0, 2.0, 4.0]
    assert summary.ok and summary.stored == 3 and len(fake.requests) == 4


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["429:7", "429"]) as fake:
        summary = submit(spool, [fake.url], sleep=sleeps, rng=FixedRandom())
    assert sleeps.waits == [7.0, 2.0]  # Retry-After when longer than the backoff, else the backoff
    assert summary.ok and len(fake.requests) == 3


def test_a_long_retry_after_gives_the_collector_up(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["429:3600"]) as slow, fake_collector() as other:
        summary = submit(spool, [slow.url, other.url], sleep=sleeps)
    assert sleeps.waits == [] and len(slow.requests) == 1
    assert summary.ok and len(other.stored) == 3
    assert [c.state for c in summary.collectors] == ["down", "ok"]


def test_retry_after_parsing() -> None:
    assert retry_after("120", 0) == 120.0
    assert retry_after(None, 0) is None and retry_after("soon", 0) is None
    assert retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0


def test_collectors_in_order_first_down_second_used(tmp_path: Path) -> None:
    spool, _keys = _spool(tmp_path)
    down = f"http://127.0.0.1:{closed_port()}"
    sleeps = Sleeps()
    with fake_collector() as second, fake_collector() as third:
        summary = submit(spool, [down, second.url, third.url], sleep=sleeps,
                         backoff=Backoff(tries=3))  # fmt: skip
    assert summary.ok and len(second.stored) == 3 and third.requests == []
    first = summary.collectors[0]
    assert (first.state, first.requests, first.last_error) == ("down", 3, "connection_refused")
    assert len(sleeps.waits) == 2  # retries on the first, none before switching
    assert {r["collector"] for r in spool.ledger()} == {second.url}


def test_a_down_collector_is_not_retried_for_every_batch(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path, n=10)
    down = f"http://127.0.0.1:{closed_port()}"
    with fake_collector() as up:
        summary = submit(spool, [down, up.url], sleep=Sleeps(), batch_items=3,
                         backoff=Backoff(tries=2))  # fmt: skip
    assert summary.ok and len(up.requests) == 4  # batches of 3, 3, 3, 1
    assert summary.collectors[0].requests == 2


def test_attempts_and_last_error_while_everything_is_down(tmp_path: Path) -> None:
    spool, keys = _spool(tmp_path)
    down = [f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}"]
    summary = submit(spool, down, sleep=Sleeps(), backoff=Backoff(tries=2))
    assert not summary.ok and summary.remaining == 3
    assert "connection_refused" in (summary.error or "")
    items = spool.read_attempts()["items"]
    assert set(items) == set(keys)
    assert all(v["attempts"] == 4 for v in items.values())  # 2 tries x 2 collectors
    assert items[keys[0]]["last_error"] == f"connection_refused ({down[1]})"
    status = spool.status()
    assert status["pending"]["max_attempts"] == 4
    assert status["last_submission"]["remaining"] == 3


def test_unauthorized_goes_to_the_next_collector_without_retrying(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["401"]) as locked, fake_collector() as open_:
        summary = submit(spool, [locked.url, open_.url], sleep=sleeps)
    assert len(locked.requests) == 1 and sleeps.waits == []
    assert summary.collectors[0].last_error == "unauthorized" and len(open_.stored) == 3


def test_the_token_is_sent(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path, n=1)
    with fake_collector() as fake:
        submit(spool, [fake.url], token="s3cret", sleep=Sleeps())
    assert fake.requests[0]["auth"] == "Bearer s3cret"


def test_a_captive_portal_acknowledges_nothing(tmp_path: Path) -> None:
    spool, keys = _spool(tmp_path)
    sleeps = Sleeps()
    with fake_collector(["html"]) as portal:
        summary = submit(spool, [portal.url], sleep=sleeps)
    assert not summary.ok and summary.remaining == 3 and sleeps.waits == []
    assert summary.collectors[0].last_error == "bad_response"
    assert sorted(i.key for i in spool.pending()) == sorted(keys) and _ledger_keys(spool) == []


def test_item_rejections_go_to_rejected_with_the_reason(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good, bad, later = spool.add([{"fine": 1}, {"reject_me": 1}, {"later": True}])
    with fake_collector() as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert (summary.stored, summary.rejected, summary.remaining) == (1, 1, 1)
    assert _ledger_keys(spool) == [good]
    reason = json.loads((spool.rejected_dir / f"{bad}.json.reason.json").read_text())
    assert (reason["error"], reason["collector"]) == ("bad_type", fake.url)
    assert [i.key for i in spool.pending()] == [later]  # "storage_unavailable": try later
    assert spool.read_attempts()["items"][later]["last_error"].startswith("storage_unavailable")


def test_corrupt_pending_files_do_not_stop_the_others(tmp_path: Path) -> None:
    spool, keys = _spool(tmp_path)
    (spool.pending_dir / f"{keys[1]}.json").write_bytes(b"\x00garbage")
    with fake_collector() as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert (summary.stored, summary.invalid, summary.remaining) == (2, 1, 0)
    assert sorted(_ledger_keys(spool)) == sorted([keys[0], keys[2]])
    assert (spool.rejected_dir / f"{keys[1]}.json").exists()


def test_a_batch_too_large_is_split(tmp_path: Path) -> None:
    spool, _keys = _spool(tmp_path, n=4)
    with fake_collector(["too_large", "too_large"]) as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert summary.ok and summary.stored == 4
    # Halved until the collector takes it; the smaller size is kept for the rest of the submission.
    assert [len(r["keys"]) for r in fake.requests] == [4, 2, 1, 1, 1, 1]


def test_batches_are_bounded_in_bytes(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path, n=6)
    sizes = sorted(i.size for i in spool.pending())
    with fake_collector() as fake:
        submit(spool, [fake.url], sleep=Sleeps(), batch_bytes=sizes[0] + sizes[1] - 1)
    assert [len(r["keys"]) for r in fake.requests] == [1] * 6 and len(fake.stored) == 6


def test_a_stop_during_backoff_ends_the_submission(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path)
    with fake_collector(["503", "503", "503"]) as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps(stop_after=1))
    assert summary.stopped and summary.remaining == 3 and len(fake.requests) == 1
    assert summary.error == "stopped"


def test_a_week_offline_then_everything_once(tmp_path: Path) -> None:
    """Seven days of half-hourly runs with the collector unreachable, then one that reaches it."""
    spool = Spool(tmp_path / "state")
    base = fixture_measurements()
    down = f"http://127.0.0.1:{closed_port()}"
    runs = 7 * 48
    keys: list[str] = []
    for run in range(runs):  # each run: spool one measurement, then try (and fail) to submit
        measurement: dict[str, Any] = dict(base[run % len(base)], report_id=f"run-{run}")
        keys += spool.add([measurement])
        if run % 24 == 0:  # a submission every twelve hours is enough to see the attempts grow
            summary = submit(spool, [down], sleep=Sleeps(), backoff=Backoff(tries=1))
            assert summary.remaining == len(keys)
    assert spool.status()["pending"]["count"] == runs
    assert spool.status()["pending"]["max_attempts"] == 14
    with fake_collector(["drop", "503"]) as fake:  # and it is flaky when it comes back
        summary = submit(spool, [down, fake.url], sleep=Sleeps(), batch_items=100,
                         backoff=Backoff(tries=3))  # fmt: skip
    assert summary.ok and summary.stored + summary.duplicate == runs
    assert len(fake.stored) == runs and set(fake.store_count.values()) == {1}
    ledger = _ledger_keys(spool)
    assert sorted(ledger) == sorted(keys) and len(set(ledger)) == runs  # none twice
    assert {m["measurement"]["report_id"] for m in fake.stored.values()} == {
        f"run-{r}" for r in range(runs)
    }
    assert spool.pending() == [] and spool.status()["submitted"] == runs
    # Nothing is sent twice by a later submission either.
    with fake_collector() as again:
        assert submit(spool, [again.url], sleep=Sleeps()).pending == 0
    assert again.requests == []


def test_collector_urls_from_options_or_environment() -> None:
    env = {"MSGWATCH_COLLECTORS": "http://127.0.0.1:1, https://c.example.org/x ,"}
    assert [str(u) for u in collector_urls([], env)] == [
        "http://127.0.0.1:1",
        "https://c.example.org/x",
    ]
    assert [str(u) for u in collector_urls(["http://a", "http://a/"], env)] == ["http://a"]
    assert collector_urls([], {}) == []
    with pytest.raises(ValueError):
        collector_urls(["mailto:x"], {})


def test_read_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("abc123\n")
    path.chmod(0o600)
    assert read_token(path) == "abc123"
    for mode in (0o644, 0o640, 0o604, 0o620):  # like ssh: any access but the owner's is refused
        path.chmod(mode)
        with pytest.raises(ValueError, match=rf"mode 0{mode:o}.*chmod 600 {path}"):
            read_token(path)
    path.chmod(0o400)
    assert read_token(path) == "abc123"
    path.write_text("\n")
    with pytest.raises(ValueError):
        read_token(path)


def test_client_is_shared_and_fenced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool, _ = _spool(tmp_path, n=1)
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8")
    sleeps = Sleeps()
    summary = submit(spool, ["http://192.0.2.10"], client=Client(), sleep=sleeps)
    assert summary.collectors[0].last_error == "destination_not_allowed"
    assert sleeps.waits == [] and summary.remaining == 1  # the fence is not retried


def test_pending_files_of_an_older_version_are_sent_with_their_keys(tmp_path: Path) -> None:
    """``<probe-id>.<uuid4 hex>.json``, as spooled before keys became random: sent unchanged."""
    spool, new_keys = _spool(tmp_path, n=2)
    old_key = "0123456789abcdef0123456789abcdef.fedcba9876543210fedcba9876543210"
    body = b'{"report_id":"old","test_keys":{"x":[1,2]}}'
    (spool.pending_dir / f"{old_key}.json").write_bytes(body)
    with fake_collector() as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert summary.ok and summary.stored == 3 and summary.invalid == 0
    assert fake.stored[old_key]["measurement"] == json.loads(body)
    assert sorted(fake.stored) == sorted([old_key, *new_keys])
    assert sorted(_ledger_keys(spool)) == sorted([old_key, *new_keys])
    assert spool.pending() == []


def _line(key: str) -> str:
    return json.dumps({"key": key, "uid": "u", "status": "stored", "collector": "c", "time": "t"})


def test_the_ledger_rotates_during_submissions_and_status_counts_every_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "state", ledger_max_bytes=2000)
    base = fixture_measurements()
    sent: list[str] = []
    with fake_collector() as fake:
        for run in range(4):
            sent += spool.add([dict(base[0], report_id=f"{run}-{i}") for i in range(25)])
            summary = submit(spool, [fake.url], sleep=Sleeps(), batch_items=7)
            assert summary.ok and summary.stored == 25
            assert spool.status()["submitted"] == len(sent)
            assert len(list(spool.root.glob("submitted-*.jsonl"))) == 1
            current = spool.ledger_path.stat().st_size if spool.ledger_path.exists() else 0
            assert current < 2000  # rotated after the batch that reached the threshold
    assert len(fake.stored) == 100 and set(fake.store_count.values()) == {1}
    on_record = _ledger_keys(spool)
    assert on_record == sent[len(sent) - len(on_record) :]  # the latest ones, in order


def test_a_crash_after_the_ledger_line_is_repaired_across_a_rotation(tmp_path: Path) -> None:
    """Two crashes between a ledger line and its unlink: one whose line has since been rotated
    into the previous generation (by a caller that acknowledged without recovering first), one
    whose line is in a submitted.jsonl due for rotation. The next submission repairs both before
    it rotates, sends neither again, and counts each once."""
    spool = Spool(tmp_path / "state", ledger_max_bytes=1500)
    rotated_away, in_current, fresh, filler = spool.add([{"a": 1}, {"b": 2}, {"c": 3}, {"d": 4}])
    spool.ledger_path.write_text("".join(_line(f"w{i}") + "\n" for i in range(20)))
    spool.ledger_path.write_text(spool.ledger_path.read_text() + _line(rotated_away) + "\n")
    spool.acknowledge([Ack(filler, "u", "stored", "c")])  # over the threshold: rotated
    [previous] = spool.root.glob("submitted-*.jsonl")
    assert previous.name == "submitted-22.jsonl" and not spool.ledger_path.exists()
    spool.ledger_path.write_text("".join(_line(f"x{i}") + "\n" for i in range(20)))
    spool.ledger_path.write_text(spool.ledger_path.read_text() + _line(in_current) + "\n")
    assert spool.ledger_path.stat().st_size >= spool.ledger_max_bytes
    assert spool.status()["submitted"] == 43
    with fake_collector() as fake:
        summary = submit(spool, [fake.url], sleep=Sleeps())
    assert [r["keys"] for r in fake.requests] == [[fresh]]  # the two repaired: not sent again
    assert summary.ok and (summary.pending, summary.stored) == (1, 1)
    assert [p.name for p in spool.root.glob("submitted-*.jsonl")] == ["submitted-43.jsonl"]
    assert spool.status()["submitted"] == 44 and _ledger_keys(spool)[-1] == fresh
