"""Scheduled runs: durations, cadence and jitter on an injected clock, skips under a held lock,
stops on signals, and two real ``msgwatch run --every`` processes that never overlap."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgwatch.session.schedule import Stopper, parse_duration, run_every, run_lock
from tests.spool import small_catalogue


class FakeTime:
    """A monotonic clock that only moves when someone waits or a task says it took time."""

    def __init__(self, stop_at_wait: int | None = None) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop_at_wait = stop_at_wait

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        if self.stop_at_wait is not None and len(self.waits) >= self.stop_at_wait:
            return True
        self.now += max(0.0, seconds)
        return False


@contextlib.contextmanager
def free_lock() -> Iterator[bool]:
    yield True


@contextlib.contextmanager
def busy_lock() -> Iterator[bool]:
    yield False


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("1h") == 3600
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration("45") == 45
    assert parse_duration("0.2s") == pytest.approx(0.2)
    for bad in ("", "m", "30x", "1h 30m", "-5m", "h1", "nan", "30m5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_cadence_with_jitter() -> None:
    t = FakeTime()
    starts: list[float] = []

    def task(index: int) -> None:
        starts.append(t.now)
        t.now += 42.0  # the run takes 42 s

    ran = run_every(task, every=1800, jitter=180, lock=free_lock, wait=t.wait, count=50,
                    clock=t.clock, rng=random.Random(1))  # fmt: skip
    assert ran == 50 and starts[0] == 1000.0  # the first run at once
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(1800 - 180 <= g <= 1800 + 180 for g in gaps)
    assert len({round(g) for g in gaps}) > 20  # jittered
    assert abs(sum(gaps) / len(gaps) - 1800) < 60  # the average period stays --every


def test_no_jitter_is_exact() -> None:
    t = FakeTime()
    starts: list[float] = []
    run_every(lambda i: starts.append(t.now), every=90, jitter=0, lock=free_lock, wait=t.wait,
              count=4, clock=t.clock)  # fmt: skip
    assert starts == [1000.0, 1090.0, 1180.0, 1270.0]


def test_a_run_longer_than_the_period_is_not_caught_up_in_a_burst() -> None:
    t = FakeTime()
    starts: list[float] = []

    def slow(index: int) -> None:
        starts.append(t.now)
        t.now += 250.0 if index == 0 else 1.0

    run_every(slow, every=100, jitter=0, lock=free_lock, wait=t.wait, count=4, clock=t.clock)
    assert starts == [1000.0, 1250.0, 1350.0, 1450.0]


def test_a_busy_lock_skips_the_start() -> None:
    t = FakeTime()
    skipped: list[int] = []
    ran = run_every(lambda i: None, every=60, jitter=0, lock=busy_lock, wait=t.wait,
                    on_skip=skipped.append, count=3, clock=t.clock)  # fmt: skip
    assert ran == 0 and skipped == [0, 1, 2]
    assert t.now == 1120.0  # it waited for the next starts instead of running late


def test_a_stop_between_runs_ends_the_loop() -> None:
    t = FakeTime(stop_at_wait=3)
    ran = run_every(lambda i: None, every=60, jitter=6, lock=free_lock, wait=t.wait,
                    clock=t.clock)  # fmt: skip
    assert ran == 2  # waits: before run 0 (none due), before run 1, then the stop


def test_bad_schedules_are_refused() -> None:
    t = FakeTime()
    for every, jitter in ((0, 0), (60, 60), (60, -1)):
        with pytest.raises(ValueError):
            run_every(lambda i: None, every=every, jitter=jitter, lock=free_lock, wait=t.wait)


def test_run_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path / "state", wait=False) as first:
        assert first
        with run_lock(tmp_path / "state", wait=False) as second:
            assert not second
    with run_lock(tmp_path / "state", wait=False) as again:
        assert again
    assert (tmp_path / "state" / "run.lock").exists()


def test_run_lock_is_released_when_its_holder_dies(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = (
        "import os, sys; from pathlib import Path; from msgwatch.session.schedule import run_lock\n"
        f"with run_lock(Path({str(state)!r}), wait=False) as got:\n"
        "    print(got, flush=True); os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    with run_lock(state, wait=False) as acquired:
        assert acquired


def test_sigterm_stops_after_the_current_run() -> None:
    stopper = Stopper()
    done: list[int] = []

    def task(index: int) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the run
        done.append(index)  # ...which still finishes

    with stopper.installed():
        ran = run_every(task, every=0.05, jitter=0, lock=free_lock, wait=stopper.wait, count=10)
    assert ran == 1 and done == [0] and stopper.signal == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored


def test_a_second_sigint_interrupts_at_once() -> None:
    stopper = Stopper()
    with pytest.raises(KeyboardInterrupt), stopper.installed():
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.wait(0)
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_two_scheduled_runs_never_overlap(tmp_path: Path) -> None:
    """Two real processes, ``run --every 0.2s``, on one state directory; each run lasts ~0.6 s
    (a STUN server that never answers), three times the period: without the lock they would
    overlap all the time."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    catalogue = small_catalogue(tmp_path / "cat", udp_port=silent.getsockname()[1])
    state = tmp_path / "state"
    env = dict(os.environ, MSGWATCH_STATE_DIR=str(state))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "msgwatch",
                "run",
                "--catalogue",
                str(catalogue),
                "--timeout",
                "0.6",
                "--json",
                "--no-submit",
                "--state-dir",
                str(state),
                "--output",
                str(tmp_path / f"out{i}.jsonl"),
                "--every",
                "0.2s",
                "--jitter",
                "0",
                "--count",
                "5",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        silent.close()
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs, skips = [], 0
    for stdout, _ in outputs:
        lines = [json.loads(line) for line in stdout.splitlines()]
        assert len(lines) == 5
        for line in lines:
            if line["run"].get("skipped"):
                assert line["run"]["skipped"] == "locked"
                skips += 1
            else:
                runs.append((line["run"]["started_at"], line["run"]["finished_at"]))
                assert line["spool"]["spooled"] == 1
    runs.sort()
    for (_, end), (start, _) in itertools.pairwise(runs):
        assert start >= end, runs  # ISO 8601 UTC with microseconds sorts as time
    assert len(runs) + skips == 10 and len(runs) >= 2
    assert len(list((state / "spool" / "pending").glob("*.json"))) == len(runs)


def test_sigterm_stops_a_real_scheduled_run_cleanly(tmp_path: Path) -> None:
    catalogue = small_catalogue(tmp_path / "cat")
    state = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "msgwatch", "run", "--catalogue", str(catalogue),
         "--timeout", "0.3", "--json", "--no-submit", "--state-dir", str(state),
         "--output", str(tmp_path / "m.jsonl"), "--every", "1h"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, MSGWATCH_STATE_DIR=str(state)),
    )  # fmt: skip
    assert process.stdout is not None
    first = json.loads(process.stdout.readline())  # the first run is done; now it waits an hour
    process.send_signal(signal.SIGTERM)
    rest, errors = process.communicate(timeout=10)
    assert process.returncode == 0, errors
    assert first["run"]["index"] == 0 and rest == ""
    assert len(list((state / "spool" / "pending").glob("*.json"))) == 1
