"""A circumvention session: what ``msgwatch circumvent`` and ``msgwatch run --circumvention`` do.

1. **Checked first** (:func:`prepare`): the entries (the catalogue's, then the user's
   ``--circumvention FILE``: :mod:`msgwatch.circumvention.config`), the services asked, the
   fence, the helper's address, and consent (:data:`msgwatch.session.consent.CIRCUMVENTION`:
   a censor may see that Tor or a VPN is used).
2. **Run** every entry (:func:`msgwatch.circumvention.run.run_entries`) in a private working
   directory (mode 0700, removed afterwards), each client stopped at the end.
3. **Stored like a run's**: each entry's measurement (H5b's
   :func:`msgwatch.circumvention.measurement.build`, test name ``msgwatch_circumvention``) goes
   to the spool first, then to the ``--output`` file (:mod:`msgwatch.session.output`); the spool
   keeps them for ``msgwatch submit``.
4. **Judged by the reader side**: :func:`msgwatch.analysis.verdicts.circumvention.judge` on each
   measurement gives the verdict table's rows.

Nothing here prints; the caller renders :class:`CircumventReport`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import ipaddress
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgwatch.catalogue import Service
from msgwatch.circumvention import config
from msgwatch.circumvention.model import Context, Entry, Run
from msgwatch.fence import FenceError, check_fence
from msgwatch.session import errors
from msgwatch.session.consent import CIRCUMVENTION, Ask, ensure_consent
from msgwatch.session.errors import SessionError, option_error
from msgwatch.session.output import output_path, storage_failure, write_jsonl
from msgwatch.session.run import open_catalogue, select
from msgwatch.spool.spool import Spool, resolve_state_dir
from msgwatch.steps.trace import Budget

CATALOGUE_MODULE = "msgwatch.catalogue.circumvention"
JUDGE_MODULE = "msgwatch.analysis.verdicts.circumvention"


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


def catalogue_entries(warnings: list[str]) -> list[Entry]:
    """The catalogue's circumvention entries (H5b's ``msgwatch.catalogue.circumvention``:
    ``entries()`` giving :class:`Entry` objects or raw tables); none, with a warning, when the
    catalogue has none yet."""
    try:
        module = importlib.import_module(CATALOGUE_MODULE)
        raw = list(module.entries())
    except Exception as exc:
        warnings.append(f"the catalogue's circumvention entries are unavailable ({exc})")
        return []
    if all(isinstance(e, Entry) for e in raw):
        return raw
    try:
        return config.parse(raw, origin="catalogue", default_source="catalogue")
    except config.ConfigError as exc:
        raise SessionError(f"invalid circumvention catalogue: {exc}", errors.CATALOGUE) from exc


def prepare(options: CircumventOptions, ask: Ask | None = None) -> Prepared:
    """Check everything before anything is sent (the module's rule 1)."""
    try:
        check_fence()
    except FenceError as exc:
        raise SessionError(str(exc), errors.USAGE) from exc
    if not options.helper:
        raise option_error("circumvention tests need a test helper", "--helper")
    try:
        ipaddress.ip_address(options.helper)
    except ValueError as exc:
        raise option_error(f"not an IP address: {options.helper!r}", "--helper") from exc
    warnings: list[str] = []
    ours = catalogue_entries(warnings) if options.catalogue_entries else []
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


def run(prepared: Prepared, *, on_done: Callable[[Run], None] | None = None) -> CircumventReport:
    """Run, store and judge (the module's rules 2-4)."""
    options = prepared.options
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="msgwatch-circumvention-"))
    try:
        ctx = Context(workdir=workdir, helper=options.helper or "", helper_port=options.helper_port,
                      ca_bundle=Path(options.ca_bundle) if options.ca_bundle else None,
                      resolver=options.resolver, budgets=dict(options.budgets),
                      sustain_seconds=options.sustain_seconds)  # fmt: skip
        budget = Budget(limit=int(options.budget_mb * 1_000_000))
        runs = asyncio.run(_run(prepared, ctx, budget, on_done))
        measurements = [_build(r, ctx, started) for r in runs]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    spool = Spool(resolve_state_dir(options.state_dir))
    path = _store(spool, options.output, measurements)
    warnings = list(prepared.warnings)
    verdicts = judged(measurements, warnings)
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


async def _run(
    prepared: Prepared, ctx: Context, budget: Budget, on_done: Callable[[Run], None] | None
) -> list[Run]:
    from msgwatch.circumvention.run import run_entries

    options = prepared.options
    return await run_entries(prepared.entries, ctx, services=prepared.services,
                             concurrency=options.concurrency, budget=budget,
                             call_seconds=options.call_seconds, seed=options.seed,
                             on_done=on_done)  # fmt: skip


def _build(run: Run, ctx: Context, started: dt.datetime) -> dict[str, Any]:
    from msgwatch.circumvention.measurement import build

    return build(run, run.entry, ctx, started)


def judged(measurements: list[dict[str, Any]], warnings: list[str]) -> list[dict[str, Any]]:
    """The reader side's rows for ``measurements``; none, with a warning, without a judge."""
    try:
        judge = importlib.import_module(JUDGE_MODULE).judge
    except Exception as exc:
        warnings.append(f"no circumvention judge ({exc})")
        return []
    return [v for m in measurements for v in judge(m)]


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
