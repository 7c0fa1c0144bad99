"""The registry of test kinds: a new kind is one class and one entry, scheduled by the runner under
its own time and its share of the byte budget, beside the service test; the probe records and
never judges."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from msgwatch.catalogue.loader import Catalogue, FunctionTargets, Service
from msgwatch.catalogue.schema import Endpoint, Source
from msgwatch.measurement.envelope import TEST_NAME
from msgwatch.probe import nettests
from msgwatch.probe.config import RunConfig
from msgwatch.probe.nettests.base import (
    ByteUse,
    NetTest,
    RunPlan,
    TestContext,
    TestResult,
    TimeBudget,
)
from msgwatch.probe.runner import TestRun, run
from tests.unit.servers import closed_tcp_port

CHECKED = dt.date(2026, 12, 2)
SOURCE = Source(id="doc", title="t", url="https://example.org/", checked=CHECKED)


class Sleeper(NetTest):
    """A tiny test kind: one job per input, which reports the time it was given."""

    test_name = "msgwatch_fake"
    test_version = "0.0.1"

    def __init__(self, time: TimeBudget, bytes: ByteUse | None = None) -> None:
        self.time, self.bytes = time, bytes or ByteUse()

    def inputs(self, plan: RunPlan) -> list[str]:
        return ["first", "second"]

    async def measure(self, ctx: TestContext, input: str) -> TestResult:
        loop = asyncio.get_running_loop()
        async with ctx.job() as slot:
            if slot.deadline is None:
                return TestResult({"fake_refused": slot.refused}, measured=False)
            given = slot.deadline - loop.time()
            await asyncio.sleep(0.05)
            return TestResult({"fake_given": given, "fake_charged": ctx.budget.sent})


def _service() -> Service:
    endpoint = Endpoint(
        id="chat",
        host=None,
        address="127.0.0.1",
        port=closed_tcp_port(),
        transport="tcp",
        protocol="tcp",
        path="/",
        source="doc",
        checked=CHECKED,
    )
    functions = (FunctionTargets("text", "any_of", (endpoint,)),)
    return Service("svc", "svc", "svc.toml", "", "", None, None, (SOURCE,), (), functions)


def _run(
    monkeypatch: pytest.MonkeyPatch, test: NetTest, **config: Any
) -> tuple[list[TestRun], float]:
    monkeypatch.setitem(nettests.NETTESTS, test.test_name, test)
    service = _service()
    settings = RunConfig(timeout=0.3, retry=False, tests=(TEST_NAME, test.test_name), **config)

    async def scenario() -> tuple[list[TestRun], float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        runs = await run(Catalogue("1", "x", (service,)), [service], settings)
        return runs, loop.time() - t0

    return asyncio.run(scenario())


def test_the_service_test_is_registered_under_its_measurement_name() -> None:
    assert nettests.nettest(TEST_NAME).test_name == TEST_NAME
    with pytest.raises(ValueError, match="unknown test"):
        nettests.nettest("msgwatch_nothing")


def test_a_registered_kind_is_scheduled_with_its_own_longer_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its jobs get 1.2 s where a chain gets 0.3 s: the run's deadline stretches to fit them."""
    runs, elapsed = _run(monkeypatch, Sleeper(TimeBudget(job_seconds=1.2)))
    service, *fakes = runs
    assert (service.test_name, service.input) == (TEST_NAME, "svc")
    (target,) = service.measurement["test_keys"]["msgwatch_targets"]
    assert target["failure"] == "connection_refused"
    assert [(f.test_name, f.input) for f in fakes] == [
        ("msgwatch_fake", "first"),
        ("msgwatch_fake", "second"),
    ]
    for fake in fakes:
        m = fake.measurement
        assert (m["test_name"], m["test_version"], m["input"]) == (
            "msgwatch_fake",
            "0.0.1",
            fake.input,
        )
        keys = m["test_keys"]
        assert 1.1 <= keys["fake_given"] <= 1.2, keys
        assert "msgwatch_probe_lag" in keys and "msgwatch_bytes" in keys
        assert fake.measured
    assert elapsed < 1.0  # the jobs' time is their deadline, not a wait


def test_a_cap_under_the_runs_deadline_leaves_jobs_that_do_not_fit_unrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs, _ = _run(monkeypatch, Sleeper(TimeBudget(job_seconds=1.0, cap=0.5)))
    for fake in runs[1:]:
        assert fake.measurement["test_keys"]["fake_refused"] == "no_time"
        assert not fake.measured


def test_a_reservation_is_charged_to_the_runs_byte_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs, _ = _run(monkeypatch, Sleeper(TimeBudget(), ByteUse(reserve=5000)), budget_bytes=8000)
    first, second = (r.measurement["test_keys"] for r in runs[1:])
    charged = [k.get("fake_charged") for k in (first, second)]
    refused = [k.get("fake_refused") for k in (first, second)]
    # One reservation fits in the 8,000 bytes (with the service's few), the other does not.
    assert sorted(refused, key=str) == [None, "budget_exceeded"], (first, second)
    assert any(c is not None and c >= 5000 for c in charged)


def test_the_probe_records_and_does_not_judge(monkeypatch: pytest.MonkeyPatch) -> None:
    runs, _ = _run(monkeypatch, Sleeper(TimeBudget()))
    for done in runs:
        assert "msgwatch_verdicts" not in done.measurement["test_keys"]
        assert not hasattr(done, "verdicts")
