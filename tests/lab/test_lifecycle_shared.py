"""The lifecycle both lab back-ends share (``msgwatch.lab.lifecycle``), without a lab.

The guard runs ``down`` on a signal and then the previous handler; the registry makes entries in
one step, and its gc tears down the labs of dead owners only, stopping their recorded servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from types import FrameType

import pytest

from msgwatch.lab.lifecycle import OWNER, Guard, Registry
from msgwatch.lab.procs.registry import record


class Broken(RuntimeError):
    pass


def test_a_signal_runs_down_then_the_previous_handler() -> None:
    calls: list[str] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        calls.append(f"previous {signum}")

    before = signal.signal(signal.SIGTERM, previous)
    try:
        guard = Guard(lambda: calls.append("down"))
        guard.arm()
        assert signal.getsignal(signal.SIGTERM) == guard._on_signal
        signal.raise_signal(signal.SIGTERM)
        assert calls == ["down", f"previous {signal.SIGTERM}"]
        assert signal.getsignal(signal.SIGTERM) is previous  # disarmed: restored
    finally:
        signal.signal(signal.SIGTERM, before)


def test_disarm_restores_only_what_is_still_its_own() -> None:
    outer, inner = Guard(lambda: None), Guard(lambda: None)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        outer.arm()
        inner.arm()
        outer.disarm()  # the inner guard's handler is in place: left alone
        assert signal.getsignal(signal.SIGINT) == inner._on_signal
        inner.disarm()
        assert signal.getsignal(signal.SIGINT) == outer._on_signal  # what inner found
    finally:  # both signals: a handler left behind would outlive this test
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _dead_owner(registry: Registry, lab_id: str) -> Path:
    entry = registry.entry(lab_id)
    entry.mkdir(parents=True)
    (entry / OWNER).write_text("1 0\n")  # pid 1 did not start at tick 0: its owner is gone
    return entry


def test_create_makes_an_owned_entry_in_one_step(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "root", "test lab", Broken)
    entry = registry.create("abc", mode=0o700)
    assert entry == registry.entry("abc") and entry.stat().st_mode & 0o777 == 0o700
    assert registry.owner("abc") == os.getpid()
    assert registry.ids() == ["abc"] and registry.live() == [("abc", os.getpid())]
    assert not list(registry.root.glob(".*"))


def test_gc_stops_the_servers_of_dead_owners_only(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "root", "test lab", Broken)
    registry.create("mine")
    entry = _dead_owner(registry, "gone")
    server = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        record(entry, "sleeper", server.pid)
        half = registry.root / ".half.new"
        half.mkdir()

        def teardown(lab_id: str) -> list[str]:
            done, problems = registry.stop_servers(lab_id)
            assert not problems
            return done + registry.remove(lab_id)

        done = registry.gc(teardown)
        assert server.wait(timeout=5) == -signal.SIGTERM
        assert done == [f"stopped sleeper (pid {server.pid}) of test lab gone",
                        f"removed {entry}", f"removed {half}"]  # fmt: skip
        assert registry.ids() == ["mine"]  # a live owner's lab is left alone
    finally:
        server.kill()
        server.wait()


def test_gc_raises_after_the_others_and_tidies(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "root", "test lab", Broken)
    for lab_id in ("a", "b", "c"):
        _dead_owner(registry, lab_id)

    def teardown(lab_id: str) -> list[str]:
        if lab_id == "b":
            registry.disown(lab_id)
            raise Broken(f"{lab_id} would not go")
        return registry.remove(lab_id)

    with pytest.raises(Broken, match=r"^b would not go$"):
        registry.gc(teardown, keep=lambda lab_id: lab_id == "c")
    assert registry.ids() == ["b", "c"]
    assert not (registry.entry("b") / OWNER).exists()  # tried again by the next gc
    registry.gc(registry.remove)
    assert not registry.root.exists()  # tidied once empty
