"""The circumvention runner without root: fake transports (registered only here) that come up
with a loopback tunnel to local asyncio echo servers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.catalogue import Endpoint, FunctionTargets, Service
from msgwatch.circumvention import run as R
from msgwatch.circumvention import transfer as T
from msgwatch.circumvention.model import TRANSFER_BYTES, Context, Entry, Run
from msgwatch.steps.net import TCPConn, UDPSocket, tcp_connect, udp_open
from msgwatch.steps.trace import Trace

LOOPBACK = "127.0.0.1"


@pytest.fixture(autouse=True)
def _fence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")


class Loopback:
    """A tunnel that is no tunnel: streams and datagrams go to loopback ports (``ports`` maps a
    destination port to the local server's)."""

    def __init__(self, ports: dict[int, int], udp: dict[int, int] | None = None) -> None:
        self.ports, self.udp = ports, udp or {}

    @property
    def carries_udp(self) -> bool:
        return bool(self.udp)

    async def open_stream(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> TCPConn:
        return await tcp_connect(trace, txid, LOOPBACK, self.ports[port], deadline)

    async def open_udp(
        self, trace: Trace, txid: int, ip: str, port: int, deadline: float
    ) -> UDPSocket:
        return await udp_open(trace, txid, LOOPBACK, self.udp[port])


class Fake:
    """A transport module for the test types: ``ok``, ``hang``, ``fail``, ``proc``, ``boom``,
    ``hog`` (blocks the event loop, then hangs), ``slowstop`` (its cleanup hangs)."""

    def __init__(self, tunnel: Loopback, pids: list[int]) -> None:
        self.tunnel, self.pids = tunnel, pids
        self.stopped: list[str] = []

    def check_params(self, entry: Entry) -> list[str]:
        return []

    @contextlib.asynccontextmanager
    async def bring_up(self, entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Loopback]:
        proc = None
        try:
            async with run.stage("connect"):
                if entry.type == "fail":
                    raise ConnectionRefusedError()
                if entry.type == "proc":
                    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
                    self.pids.append(proc.pid)
            async with run.stage("handshake"):
                if entry.type == "hog":
                    time.sleep(1.5)  # the probe's own loop stalls (a busy machine)
                if entry.type in ("hang", "proc", "hog"):
                    await asyncio.sleep(3600)
                if entry.type == "boom":
                    raise AssertionError("a transport's bug")
            async with run.stage("tunnel"):
                pass
            yield self.tunnel
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            if entry.type == "slowstop":
                await asyncio.sleep(30)
            self.stopped.append(entry.name)


class Echo:
    """TCP echo on loopback; ``stop_after`` bytes: then it reads and drops (a cut flow)."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = 0
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                allowed = len(data) if self.stop_after is None else self.stop_after - seen
                if allowed > 0:
                    writer.write(data[:allowed])
                    await writer.drain()
                seen += len(data)
        writer.close()

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self.handle, LOOPBACK, 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


class UDPEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


def entries(*kinds: str) -> list[Entry]:
    return [
        Entry(name=f"{k}-{i}", type=k, address="198.18.4.1", port=1) for i, k in enumerate(kinds)
    ]


def context(tmp_path: Path, port: int, **budgets: float) -> Context:
    return Context(workdir=tmp_path, helper=LOOPBACK, helper_port=port, budgets=budgets,
                   sustain_seconds=1.0)  # fmt: skip


def stages(run: Run) -> dict[str, str | None]:
    return {s.stage: s.failure for s in run.stages}


def test_transfer_and_sustain_recorded(tmp_path: Path) -> None:
    async def main() -> list[Run]:
        async with Echo() as port:
            fake = Fake(Loopback({port: port}), [])
            return await R.run_entries(entries("ok"), context(tmp_path, port),
                                       modules=lambda _t: fake)  # fmt: skip

    (run,) = asyncio.run(main())
    assert stages(run) == {"connect": None, "handshake": None, "tunnel": None,
                           "transfer": None, "sustain": None}  # fmt: skip
    transfer = next(s for s in run.stages if s.stage == "transfer").detail
    assert transfer["bytes_sent"] == transfer["bytes_received"] == TRANSFER_BYTES
    sustain = next(s for s in run.stages if s.stage == "sustain").detail
    assert sustain["stalled_at"] is None and sustain["rate"] == T.SUSTAIN_RATE
    assert 0.8 * T.SUSTAIN_RATE <= sustain["bytes_received"] == sustain["bytes_sent"]
    assert 0.9 <= sustain["seconds"] < 3
    assert run.keys["through"] == []


def test_cut_flow_fails_transfer_with_bytes(tmp_path: Path) -> None:
    async def main() -> list[Run]:
        async with Echo(stop_after=50_000) as port:
            fake = Fake(Loopback({port: port}), [])
            return await R.run_entries(entries("ok"), context(tmp_path, port),
                                       modules=lambda _t: fake)  # fmt: skip

    (run,) = asyncio.run(main())
    assert run.failed_stage == "transfer" and run.failure == "generic_timeout_error"
    detail = next(s for s in run.stages if s.stage == "transfer").detail
    assert 0 < detail["bytes_received"] <= 50_000 < detail["bytes_sent"]
    assert detail["stalled_at"] == detail["bytes_received"]  # stopped, not slow
    assert "sustain" not in stages(run)


def test_hang_cut_at_budget_and_failure_does_not_stop_others(tmp_path: Path) -> None:
    async def main() -> tuple[list[Run], Fake, float]:
        async with Echo() as port:
            fake = Fake(Loopback({port: port}), [])
            t0 = time.monotonic()
            runs = await R.run_entries(entries("hang", "fail", "boom", "ok"),
                                       context(tmp_path, port, hang=1.0),
                                       modules=lambda _t: fake)  # fmt: skip
            return runs, fake, time.monotonic() - t0

    (hang, fail, boom, ok), fake, took = asyncio.run(main())
    assert hang.failed_stage == "handshake" and hang.failure == "generic_timeout_error"
    assert next(s for s in hang.stages if s.stage == "handshake").detail["budget"] == 1.0
    assert fail.failed_stage == "connect" and fail.failure == "connection_refused"
    assert boom.failed_stage == "handshake" and str(boom.failure).startswith("unknown_failure")
    assert ok.failure is None and "sustain" in stages(ok)
    assert took < 6
    assert sorted(fake.stopped) == sorted(r.entry.name for r in (hang, fail, boom, ok))
    for run in (hang, fail, boom):
        assert run.keys["through"] == []


def test_unknown_module_is_that_entry_failure(tmp_path: Path) -> None:
    def modules(kind: str) -> Any:
        raise ModuleNotFoundError(kind)

    (run,) = asyncio.run(R.run_entries(entries("ok"), context(tmp_path, 1), modules=modules))
    assert run.failed_stage == "resolve" and str(run.failure).startswith("unknown_failure")


def test_cancellation_stops_every_client(tmp_path: Path) -> None:
    pids: list[int] = []

    async def main() -> Fake:
        fake = Fake(Loopback({}), pids)
        task = asyncio.ensure_future(
            R.run_entries(
                entries("proc", "proc", "hang"), context(tmp_path, 1), modules=lambda _t: fake
            )
        )
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(pids) == 2:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return fake

    fake = asyncio.run(main())
    assert len(pids) == 2 and len(fake.stopped) == 3
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_run_wide_deadline_interrupts(tmp_path: Path) -> None:
    async def main() -> list[Run]:
        fake = Fake(Loopback({}), [])
        return await R.run_entries(entries("hang"), context(tmp_path, 1, hang=60.0),
                                   deadline=0.5, modules=lambda _t: fake)  # fmt: skip

    (run,) = asyncio.run(main())
    assert run.failed_stage == "handshake" and run.failure == "interrupted"


def _service(text_port: int, call_port: int) -> Service:
    source = "lab"
    day = dt.date(2026, 1, 1)
    text = Endpoint(id="chat", host=None, address=LOOPBACK, port=text_port, transport="tcp",
                    protocol="tcp", path="/", source=source, checked=day)  # fmt: skip
    return Service(
        id="whatsapp", name="WhatsApp", path="", operator="", note="", successor=None,
        retired=None, sources=(), networks=(),
        functions=(FunctionTargets("text", "any_of", (text,)),
                   FunctionTargets("voice", "any_of", (), call_ports=(call_port,))),
    )  # fmt: skip


def test_text_and_calls_through_the_tunnel(tmp_path: Path) -> None:
    async def main() -> list[Run]:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=(LOOPBACK, 0))
        udp_port = udp.get_extra_info("sockname")[1]
        try:
            async with Echo() as port:
                tunnel = Loopback({port: port}, udp={3478: udp_port})
                fake = Fake(tunnel, [])
                return await R.run_entries(
                    entries("ok"),
                    context(tmp_path, port),
                    services=[_service(port, 3478)],
                    call_seconds=0.5,
                    modules=lambda _t: fake,
                )
        finally:
            udp.close()

    (run,) = asyncio.run(main())
    text, voice = run.keys["through"]
    assert text["function"] == "text" and text["measured"] and text["failure"] is None
    assert text["target"]["address"] == LOOPBACK
    assert voice["function"] == "voice" and voice["failure"] is None
    roles = sorted(r["role"] for r in voice["replays"])
    assert roles == ["replay_control", "replay_original"]
    assert all(r["loss"] == 0 and r["through"] for r in voice["replays"])


def test_tunnel_down_means_not_measured(tmp_path: Path) -> None:
    fake = Fake(Loopback({}), [])
    (run,) = asyncio.run(R.run_entries(entries("fail"), context(tmp_path, 1),
                                       services=[_service(1, 3478)],
                                       modules=lambda _t: fake))  # fmt: skip
    assert [(t["function"], t["measured"], t["reason"]) for t in run.keys["through"]] == [
        ("text", False, "connect_failed"), ("voice", False, "connect_failed")]  # fmt: skip


def _up_then_cut(tmp_path: Path, kind: str, cut: str, call_seconds: float) -> Run:
    """One entry whose tunnel comes up and passes transfer and sustain, then is cut ``cut`` =
    ``budget`` (the after-up budget runs out) or ``deadline`` (the run-wide deadline)."""

    async def main() -> list[Run]:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(UDPEcho, local_addr=(LOOPBACK, 0))
        try:
            async with Echo() as port:
                tunnel = Loopback({port: port}, udp={3478: udp.get_extra_info("sockname")[1]})
                fake = Fake(tunnel, [])
                ctx = context(tmp_path, port)
                deadline = 3.5 if cut == "deadline" else None
                return await R.run_entries(entries(kind), ctx, services=[_service(port, 3478)],
                                           call_seconds=call_seconds, deadline=deadline,
                                           modules=lambda _t: fake)  # fmt: skip
        finally:
            udp.close()

    return asyncio.run(main())[0]


@pytest.mark.parametrize("cut", ["budget", "deadline"])
def test_a_cut_after_every_stage_passed_invents_no_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """H6.5: the time after the tunnel ran out during what goes through: the stages stay as
    measured (no second ``sustain`` with a timeout: "blocked sustain.timeout"), the record in
    flight is ``interrupted``, and what was done before it is kept."""
    if cut == "budget":
        monkeypatch.setattr(R, "after_up", lambda *_a: 3.5)
    run = _up_then_cut(tmp_path, "ok", cut, call_seconds=3.0)
    assert [s.stage for s in run.stages] == ["connect", "handshake", "tunnel", "transfer",
                                             "sustain"]  # fmt: skip
    assert run.failure is None
    text, voice = run.keys["through"]
    assert text["measured"] and text["failure"] is None and text["target"]["address"] == LOOPBACK
    assert (voice["function"], voice["measured"], voice["failure"]) == ("voice", True,
                                                                         "interrupted")  # fmt: skip


def test_a_cut_during_cleanup_invents_no_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H6.5: a cleanup that outlasts the time after the tunnel is not a network failure."""
    monkeypatch.setattr(R, "after_up", lambda *_a: 3.0)

    async def main() -> list[Run]:
        async with Echo() as port:
            fake = Fake(Loopback({port: port}), [])
            return await R.run_entries(entries("slowstop"), context(tmp_path, port),
                                       modules=lambda _t: fake)  # fmt: skip

    (run,) = asyncio.run(main())
    assert [s.stage for s in run.stages][-2:] == ["transfer", "sustain"]
    assert run.failure is None and run.keys["through"] == []


def test_a_cut_with_no_stage_open_is_never_the_networks() -> None:
    """With no stage open (a transport's own work between stages), the cut names the stage after
    the last one run as ``interrupted`` (local), never one before it (a UDP transport has no
    ``connect``) nor one after the entry's last (``tor_reach`` ends at ``handshake``)."""
    from msgwatch.circumvention.model import StageRecord

    run = Run(Entry(name="wg", type="wireguard", address="198.18.4.1", port=1), Trace())
    run.stages.append(StageRecord("handshake", 0.0, 0.1))
    R._timed_out(run, 15.0)
    assert [(s.stage, s.failure) for s in run.stages] == [
        ("handshake", None), ("tunnel", "interrupted")]  # fmt: skip
    assert run.stages[-1].detail["budget"] == 15.0
    reach = Run(Entry(name="r", type="tor_reach", address="198.18.4.1", port=1), Trace())
    reach.stages += [StageRecord("connect", 0.0, 0.1), StageRecord("handshake", 0.1, 0.2)]
    R._interrupted(reach)
    R._timed_out(reach, 20.0)
    assert reach.failure is None and len(reach.stages) == 2


def test_probe_lag_is_recorded_and_read_by_the_judge(tmp_path: Path) -> None:
    """H6.6: a timeout while the probe's own loop stalled is ``probe.overloaded``: the runner
    records ``probe_lag`` per entry (it never did), in the shape the judge reads."""
    from msgwatch.analysis.verdicts.circumvention import judge
    from msgwatch.circumvention.measurement import test_keys
    from msgwatch.measurement.model import ProbeLag
    from msgwatch.measurement.validate import check

    async def main() -> tuple[list[Run], Context]:
        async with Echo() as port:
            fake = Fake(Loopback({port: port}), [])
            ctx = context(tmp_path, port, hog=1.0, ok=5.0)
            return await R.run_entries(entries("hog", "ok"), ctx,
                                       modules=lambda _t: fake), ctx  # fmt: skip

    (hog, ok), ctx = asyncio.run(main())
    assert hog.failed_stage == "handshake" and hog.failure == "generic_timeout_error"
    lag = hog.keys["probe_lag"]
    assert set(lag) == {"interval", "tolerance", "samples", "max_lag", "stalled", "stall_count",
                        "stalls"}  # fmt: skip
    assert lag["max_lag"] >= 1.0 and lag["stalls"]
    assert check(lag, ProbeLag) == []  # the spec's shape (msgwatch_service's msgwatch_probe_lag)
    handshake = next(s for s in hog.stages if s.stage == "handshake")
    start, seconds = max(lag["stalls"], key=lambda s: s[1])
    assert handshake.t0 - 0.1 <= start and start + seconds <= (handshake.t or 0) + 0.1
    m: dict[str, Any] = {"test_name": "msgwatch_circumvention", "input": "hog-0", "report_id": "r",
         "test_keys": test_keys(hog, ctx)}  # fmt: skip
    assert m["test_keys"]["probe_lag"] == lag
    row = judge(m)[0]
    assert (row["verdict"], row["mechanism"]) == ("inconclusive", "probe.overloaded")
    assert "probe_lag" in ok.keys and ok.failure is None


def test_the_time_after_up_covers_what_goes_through() -> None:
    """H6.5: each call function's two replays may take ``call_seconds + GRACE + 1`` each."""
    from msgwatch.circumvention import through
    from msgwatch.steps.replay import GRACE

    service = _service(1, 3478)
    for seconds in (0.5, 2.0, 5.0):
        worst = through.TEXT_SECONDS + 2 * (seconds + GRACE + 1.0)
        assert through.budget([service], seconds) >= worst + 1.0
        ctx = Context(workdir=Path("/nonexistent"), helper=LOOPBACK, sustain_seconds=5.0)
        rest = R.after_up(ctx, [service], seconds) - T.TRANSFER_SECONDS - 5.0 - T.SUSTAIN_GRACE
        assert rest >= worst + 1.0


def test_pattern_is_printable_and_continuous() -> None:
    whole = T.pattern(0, 1000)
    assert whole[100:300] == T.pattern(100, 200)
    assert all(32 <= b < 127 or b == 10 for b in whole)


def test_mirrors_equal_their_originals() -> None:
    from msgwatch.analysis.rounds import LOST
    from msgwatch.circumvention import through
    from msgwatch.probe.calls import MARKERS

    assert through.MARKERS == MARKERS and through.LOST == LOST
