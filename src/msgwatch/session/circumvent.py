"""A circumvention session: what ``msgwatch circumvent`` and ``msgwatch run --circumvention`` do.

1. **Checked first** (:func:`prepare`): the entries (the catalogue's,
   :mod:`msgwatch.circumvention.catalogue`, then the user's ``--circumvention FILE``; both held
   to the same rules, each type's ``check_params`` included: :mod:`msgwatch.circumvention.config`),
   the services asked, the fence, the helper's address, and consent
   (:data:`msgwatch.session.consent.CIRCUMVENTION`: a censor may see that Tor or a VPN is used).
   A catalogue that cannot be read or whose entries fail those checks is a ``CATALOGUE`` error,
   never an empty list.
2. **Run** every entry (:func:`msgwatch.circumvention.run.run_entries`) in a private working
   directory (mode 0700, removed afterwards), each client stopped at the end. SIGTERM cancels
   the run like Ctrl-C (:func:`sigterm_cancels`): every entry's client is stopped and the
   directory removed; then the signal's previous handler gets it (by default the process ends
   as SIGTERM asks), and nothing is stored.
3. **Stored like a run's**: each entry's measurement
   (:func:`msgwatch.circumvention.measurement.build`, test name ``msgwatch_circumvention``), all
   with one report id (``CircumventOptions.run_info``: the main run's for ``run
   --circumvention``, else one new for the session), goes to the spool first, then to the
   ``--output`` file (:mod:`msgwatch.session.output`); the spool keeps them for
   ``msgwatch submit``.
4. **Judged by the reader side**: :func:`msgwatch.analysis.verdicts.circumvention.judge_run`
   (each measurement with the others of the run as peers) gives the verdict table's rows.

Nothing here prints; the caller renders :class:`CircumventReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgwatch.catalogue import Service
from msgwatch.catalogue.circumvention import CircumventionError
from msgwatch.circumvention import catalogue, config
from msgwatch.circumvention.model import Context, Entry, Run
from msgwatch.fence import FenceError, Network, check_fence
from msgwatch.measurement.envelope import RunInfo
from msgwatch.session import errors
from msgwatch.session.consent import CIRCUMVENTION, Ask, ensure_consent
from msgwatch.session.errors import SessionError, option_error
from msgwatch.session.output import output_path, storage_failure, write_jsonl
from msgwatch.session.run import open_catalogue, select
from msgwatch.spool.spool import Spool, resolve_state_dir
from msgwatch.steps.trace import Budget


@dataclass(frozen=True)
class CircumventOptions:
    """What to test and where the measurements go."""

    file: str | None = None
    """The user's ``--circumvention FILE`` (None: the catalogue's entries only)."""
    catalogue_entries: bool = True
    """Include the catalogue's circumvention entries."""
    services: tuple[str, ...] | None = ("whatsapp",)
    """Services whose text and calls go through each tunnel (None: all; (): none)."""
    catalogue: str | None = None
    helper: str | None = None
    """The test helper (an IP): transfer, sustain and calls through the tunnels go there."""
    helper_port: int = 40000
    ca_bundle: str | None = None
    resolver: str | None = None
    """``ip:port`` for the ``resolve`` stage and text endpoints' names (None: the system's)."""
    sustain_seconds: float = 5.0
    call_seconds: float = 2.0
    concurrency: int = 4
    budgets: Mapping[str, float] = field(default_factory=dict)
    """Seconds per entry type to bring its tunnel up (``--budget``; the rest: model.BUDGETS)."""
    budget_mb: float = 40.0
    seed: int = 0
    assume_yes: bool = False
    output: str | None = None
    state_dir: str | None = None
    run_info: RunInfo | None = None
    """The run the measurements belong to (report id, network): ``run --circumvention`` passes
    the main run's (:func:`run_info_of`); None: one new for this session."""


@dataclass(frozen=True)
class CircumventReport:
    runs: list[Run]
    measurements: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    output: Path
    spool: dict[str, Any]
    started_at: str
    finished_at: str
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        keys = ("service", "function", "verdict", "mechanism", "evidence")
        return {
            "verdicts": [{k: v.get(k) for k in keys} for v in self.verdicts],
            "entries": [
                {
                    "name": r.entry.name,
                    "type": r.entry.type,
                    "failed_stage": r.failed_stage,
                    "failure": r.failure,
                    "stages": [
                        {"stage": s.stage, "failure": s.failure, "t0": s.t0, "t": s.t}
                        for s in r.stages
                    ],
                }
                for r in self.runs
            ],
            "output": str(self.output),
            "spool": self.spool,
            "run": {"started_at": self.started_at, "finished_at": self.finished_at},
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class Prepared:
    options: CircumventOptions
    entries: list[Entry]
    services: list[Service]
    warnings: list[str]


def catalogue_entries(path: str | Path | None = None) -> list[Entry]:
    """The catalogue's circumvention entries (:func:`msgwatch.circumvention.catalogue.entries`,
    the shipped file when ``path`` is None), checked like a user's file (:func:`config.check`);
    a file that does not load or an entry that fails a check is a ``CATALOGUE`` error."""
    try:
        found = catalogue.entries(path)
    except CircumventionError as exc:
        raise SessionError(f"invalid circumvention catalogue: {exc}", errors.CATALOGUE) from exc
    try:
        return config.check(found, origin="catalogue")
    except config.ConfigError as exc:
        raise SessionError(f"invalid circumvention catalogue: {exc}", errors.CATALOGUE) from exc


def prepare(options: CircumventOptions, ask: Ask | None = None) -> Prepared:
    """Check everything before anything is sent (the module's rule 1)."""
    try:
        fence = check_fence()
    except FenceError as exc:
        raise SessionError(str(exc), errors.USAGE) from exc
    if not options.helper:
        raise option_error("circumvention tests need a test helper", "--helper")
    try:
        ipaddress.ip_address(options.helper)
    except ValueError as exc:
        raise option_error(f"not an IP address: {options.helper!r}", "--helper") from exc
    warnings: list[str] = []
    ours = catalogue_entries() if options.catalogue_entries else []
    fenced = [e.name for e in ours if fence is not None and not _inside(e.address, fence)]
    if fenced:
        warnings.append(f"the fence refuses {len(fenced)} of the catalogue's entries (public Tor "
                        "endpoints): not measured; --no-catalogue-entries leaves them out")  # fmt: skip
    mine: list[Entry] = []
    if options.file is not None:
        try:
            mine = config.load(options.file)
        except config.ConfigError as exc:
            raise option_error(f"invalid circumvention file: {exc}", "--circumvention") from exc
    entries = config.merge(ours, mine)
    if not entries:
        raise option_error("no circumvention entries to test", "--circumvention")
    services: list[Service] = []
    if options.services is None or options.services:
        services = select(open_catalogue(options.catalogue), options.services)
    if not options.assume_yes:
        ensure_consent(ask, key=CIRCUMVENTION.key, explanation=CIRCUMVENTION.text,
                       what=CIRCUMVENTION.what)  # fmt: skip
    return Prepared(options, entries, services, warnings)


def _inside(address: str, fence: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return True  # a name: the fence decides once it is resolved
    return any(ip in net for net in fence)


def run(prepared: Prepared, *, on_done: Callable[[Run], None] | None = None) -> CircumventReport:
    """Run, store and judge (the module's rules 2-4)."""
    options = prepared.options
    started = dt.datetime.now(dt.UTC)
    info = options.run_info or RunInfo.new(now=started)
    workdir = Path(tempfile.mkdtemp(prefix="msgwatch-circumvention-"))
    terminated = False
    try:
        ctx = Context(workdir=workdir, helper=options.helper or "", helper_port=options.helper_port,
                      ca_bundle=Path(options.ca_bundle) if options.ca_bundle else None,
                      resolver=options.resolver, budgets=dict(options.budgets),
                      sustain_seconds=options.sustain_seconds)  # fmt: skip
        budget = Budget(limit=int(options.budget_mb * 1_000_000))
        runs = asyncio.run(_main(prepared, ctx, budget, on_done))
        measurements = [_build(r, ctx, started, info) for r in runs]
    except Terminated:
        terminated = True
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if terminated:
        # Every client is stopped and the directory gone: now SIGTERM does what it was sent for
        # (the previous handler, restored; by default the process ends here).
        signal.raise_signal(signal.SIGTERM)
        raise SessionError(Terminated.MESSAGE, errors.ENVIRONMENT)
    spool = Spool(resolve_state_dir(options.state_dir))
    path = _store(spool, options.output, measurements)
    warnings = list(prepared.warnings)
    verdicts = judged(measurements)
    return CircumventReport(
        runs=runs,
        measurements=measurements,
        verdicts=verdicts,
        output=path,
        spool={
            "state_dir": str(spool.state_dir),
            "spooled": len(measurements),
            "pending": spool.pending_count(),
        },
        started_at=_iso(started),
        finished_at=_iso(dt.datetime.now(dt.UTC)),
        warnings=warnings,
    )


class Terminated(Exception):
    """SIGTERM stopped the run (every client stopped before this is raised)."""

    MESSAGE = "stopped by SIGTERM: every client was stopped, nothing was stored"


@contextlib.contextmanager
def sigterm_cancels(task: asyncio.Task[Any]) -> Iterator[list[bool]]:
    """While inside, SIGTERM cancels ``task`` (once: a second SIGTERM does not interrupt the
    clients' stopping; SIGKILL is the way to force it); yields a list that gets ``True`` when it
    did. The previous handler is restored on the way out. Nothing is installed when SIGTERM is
    ignored (``SIG_IGN``: whoever started us asked for that) or outside the main thread."""
    fired: list[bool] = []
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield fired
        return

    def on_sigterm() -> None:
        if not fired:
            fired.append(True)
            task.cancel()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        yield fired
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


async def _main(
    prepared: Prepared, ctx: Context, budget: Budget, on_done: Callable[[Run], None] | None
) -> list[Run]:
    """:func:`_run` with SIGTERM cancelling it (:func:`sigterm_cancels`); raises
    :class:`Terminated` when it did, once every entry's client has been stopped."""
    task = asyncio.current_task()
    assert task is not None
    with sigterm_cancels(task) as fired:
        try:
            return await _run(prepared, ctx, budget, on_done)
        except asyncio.CancelledError:
            if not fired:
                raise
            task.uncancel()
    raise Terminated


async def _run(
    prepared: Prepared, ctx: Context, budget: Budget, on_done: Callable[[Run], None] | None
) -> list[Run]:
    from msgwatch.circumvention.run import run_entries

    options = prepared.options
    return await run_entries(prepared.entries, ctx, services=prepared.services,
                             concurrency=options.concurrency, budget=budget,
                             call_seconds=options.call_seconds, seed=options.seed,
                             on_done=on_done)  # fmt: skip


def _build(run: Run, ctx: Context, started: dt.datetime, info: RunInfo) -> dict[str, Any]:
    from msgwatch.circumvention.measurement import build

    return build(run, run.entry, ctx, started, info=info)


def judged(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reader side's rows for ``measurements``, each judged with the others of the run as
    its peers (a control when its own is missing)."""
    from msgwatch.analysis.verdicts.circumvention import judge_run

    return judge_run(measurements)


def run_info_of(measurement: Mapping[str, Any]) -> RunInfo | None:
    """The :class:`RunInfo` a run's measurement was built with (report id, start, network,
    resolver, catalogue version), for measurements that belong to the same run; None when it
    lacks them."""
    try:
        start = dt.datetime.strptime(str(measurement["test_start_time"]), "%Y-%m-%d %H:%M:%S")
        annotations = measurement.get("annotations") or {}
        return RunInfo(
            test_start=start.replace(tzinfo=dt.UTC),
            report_id=str(measurement["report_id"]),
            probe_asn=str(measurement.get("probe_asn") or "AS0"),
            probe_cc=str(measurement.get("probe_cc") or "ZZ"),
            probe_network_name=str(measurement.get("probe_network_name") or ""),
            resolver_ip=str(measurement.get("resolver_ip") or ""),
            catalogue_version=str(annotations.get("catalogue_version") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _store(spool: Spool, output: str | None, measurements: list[dict[str, Any]]) -> Path:
    """Spool first, then the output file; a failure of either is an ``OUTPUT`` error."""
    keys: list[str] = []
    spool_error = output_error = None
    try:
        spool.add(measurements, written=keys)
    except OSError as exc:
        spool_error = exc
    path = output_path(output, "msgwatch-circumvention")
    try:
        write_jsonl(path, measurements)
    except OSError as exc:
        output_error = exc
    failure = storage_failure(spool_root=spool.root, pending_dir=spool.pending_dir, output=path,
                              total=len(measurements), spooled=len(keys),
                              spool_error=spool_error, output_error=output_error)  # fmt: skip
    if failure is not None:
        raise SessionError(failure, errors.OUTPUT)
    return path


def _iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")
