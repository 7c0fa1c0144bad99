"""One measuring run, end to end: measure, spool, write, submit, judge, report.

Rules:

1. **Everything is checked before anything is sent** (:func:`prepare`): the catalogue, the fence,
   consent to call tests, the functions, the GeoIP databases, the probe's addresses, the
   collectors and their token, the services. A failure is a :class:`SessionError` whose ``code``
   is the exit status and, for a bad option value, whose ``option`` names it.
2. **The spool first.** Nothing else happens to a measurement before it is durable in the spool
   (``STATE/spool/pending``, fsync'd); then the ``--output`` file (:mod:`msgwatch.session.output`);
   then the collectors, when there are any. A service whose destinations the fence refused is
   written to the output file and reported, never spooled (:attr:`ServiceRun.measured`).
3. **Storage failures stop the run; submission failures do not.** When the spool or the output
   file cannot be written, one message says where the measurements are (spool, file, nowhere):
   a :class:`SessionError` with code ``OUTPUT``. What no collector acknowledged stays in the
   spool for the next run or ``msgwatch submit``, and the report says so.
4. **The verdicts are the reader side's.** The session judges each measurement with
   :func:`msgwatch.analysis.verdicts.judge.judge`, from the measurement alone, as the analysis
   would; it never reads a verdict the probe may have attached.
5. **One run at a time** per state directory: ``run.lock`` (:mod:`msgwatch.session.schedule`).
   :func:`run_once` waits for it; :meth:`Session.repeat` skips a start when it is held.
6. **Nothing here prints.** Questions (consent), progress and notices (waiting for the lock, a
   skipped start) go through callbacks; the caller renders :class:`RunReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.catalogue import FUNCTIONS, Catalogue, CatalogueError, Service, load_catalogue
from msgwatch.fence import FenceError, check_fence
from msgwatch.probe.chain import ChainConfig
from msgwatch.probe.network import (
    GeoipError,
    Network,
    check_databases,
    database_paths,
    from_measurement,
)
from msgwatch.probe.runner import RunConfig, ServiceRun, count_chains, run
from msgwatch.session import errors
from msgwatch.session.consent import Ask, ensure_consent
from msgwatch.session.errors import SessionError, did_you_mean, option_error
from msgwatch.session.options import RunOptions
from msgwatch.session.output import explain, output_path, storage_failure, write_jsonl
from msgwatch.session.schedule import run_every, run_lock
from msgwatch.spool.client import URL, Client
from msgwatch.spool.spool import Spool, resolve_state_dir
from msgwatch.spool.submit import Sleep, collector_urls, plain_sleep, read_token, submit

ShowProgress = Callable[[int, int], AbstractContextManager[Callable[[], None]]]
"""``show(chains, services)``: a context for the run, whose value is called once a chain is done."""
IO_TIMEOUT = 30.0
"""Seconds a collector may take between two bytes of its answer, at least (``--submit-timeout``
when longer)."""


@dataclass(frozen=True)
class Submission:
    """Where a run's measurements go after the spool."""

    collectors: list[URL]
    client: Client
    token: str | None


@dataclass(frozen=True)
class RunReport:
    """What one run did: its measurements and their verdicts, where they went, what moved."""

    runs: list[ServiceRun]
    """One per service, in catalogue order (each with its measurement)."""
    verdicts: list[dict[str, Any]]
    """The reader side's verdicts (:func:`~msgwatch.analysis.verdicts.judge.judge`), per function."""
    output: Path
    """The measurements file."""
    sent: int
    received: int
    """Bytes the run sent and received, in all."""
    budget_mb: float
    spool: dict[str, Any]
    """``state_dir``, ``spooled`` (this run), ``pending`` (in all, after the submission)."""
    submission: dict[str, Any] | None
    """The submission's summary (``ok``, ``stored``, …); None when nothing was submitted."""
    run: dict[str, Any]
    """``started_at``, ``finished_at`` and, for a scheduled run, ``index``."""
    network: Network
    warnings: list[str] = field(default_factory=list)
    """What the caller may want to know that is not a failure (a service not spooled)."""

    @property
    def measurements(self) -> list[dict[str, Any]]:
        return [r.measurement for r in self.runs]

    def to_json(self) -> dict[str, Any]:
        """The keys of ``msgwatch run --json`` (inside the envelope: msgwatch.cli.envelope)."""
        public = [
            {k: v[k] for k in ("service", "function", "verdict", "mechanism", "evidence")}
            for v in self.verdicts
        ]
        network = self.network
        return {
            "verdicts": public,
            "output": str(self.output),
            "bytes": {"sent": self.sent, "received": self.received},
            "budget_mb": self.budget_mb,
            "spool": self.spool,
            "submission": self.submission,
            "run": self.run,
            "network": {
                "probe_asn": network.asn,
                "probe_cc": network.cc,
                "asn_source": network.asn_source,
                "cc_source": network.cc_source,
            },
        }


def measure(
    catalogue: Catalogue,
    services: list[Service],
    config: RunConfig,
    progress: ShowProgress | None = None,
) -> list[ServiceRun]:
    """Run the probe over ``services`` (in a fresh event loop), showing progress when asked."""
    if progress is None:
        return asyncio.run(run(catalogue, services, config))
    chains = count_chains(services, config.functions, config.helper)
    with progress(chains, len(services)) as step:
        return asyncio.run(run(catalogue, services, config, progress=lambda _s, _o: step()))


def judged(measurements: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reader side's verdicts of ``measurements``, in their order (the module's rule 4)."""
    return [v for m in measurements for v in judge(m)]


def select(catalogue: Catalogue, ids: tuple[str, ...] | list[str] | None) -> list[Service]:
    """The catalogue's services named by ``ids`` (all when None); a :class:`SessionError`
    (``CATALOGUE``) names the unknown ones and the closest known ids."""
    try:
        return catalogue.select(list(ids) if ids is not None else None)
    except KeyError as exc:
        unknown = str(exc.args[0])
        hint = did_you_mean(unknown.split(", "), (s.id for s in catalogue.services))
        message = f"unknown service(s): {unknown}{hint}; `msgwatch catalogue list` names them all"
        raise SessionError(message, errors.CATALOGUE) from exc


def open_catalogue(path: str | None) -> Catalogue:
    """The catalogue at ``path`` (the shipped one when None); every problem in one error."""
    try:
        return load_catalogue(path)
    except CatalogueError as exc:
        message = "invalid catalogue:\n" + "\n".join(exc.problems)
        raise SessionError(message, errors.CATALOGUE) from exc


@dataclass(frozen=True)
class Session:
    """A prepared run (:func:`prepare`): run it once, or again and again."""

    options: RunOptions
    catalogue: Catalogue
    services: list[Service]
    config: RunConfig
    spool: Spool
    submission: Submission | None

    @contextlib.contextmanager
    def locked(
        self, *, wait: bool, on_wait: Callable[[Path], None] | None = None
    ) -> Iterator[bool]:
        """``run.lock``; yields whether it is held. Waiting, ``on_wait(lock)`` is told first when
        another run holds it. A state directory that cannot be used is an ``OUTPUT`` error."""
        state_dir = self.spool.state_dir
        with contextlib.ExitStack() as stack:
            try:
                acquired = stack.enter_context(run_lock(state_dir, wait=False))
                if not acquired and wait:
                    if on_wait is not None:
                        on_wait(state_dir / "run.lock")
                    acquired = stack.enter_context(run_lock(state_dir, wait=True))
            except OSError as exc:
                problem = explain(exc, "pass --state-dir with a directory of your own")
                message = f"cannot use the state directory {state_dir}: {problem}"
                raise SessionError(message, errors.OUTPUT) from exc
            yield acquired

    def run_once(
        self,
        *,
        index: int | None = None,
        sleep: Sleep = plain_sleep,
        progress: ShowProgress | None = None,
    ) -> RunReport:
        """Measure, spool, write, submit (the module's rules 2-4); the caller holds the lock."""
        started = now()
        runs = measure(self.catalogue, self.services, self.config, progress)
        spooled, path = self._store(runs)
        submitted = self._submit(sleep)
        info: dict[str, Any] = {"started_at": started, "finished_at": now()}
        if index is not None:
            info = {"index": index, **info}
        moved = [r.measurement["test_keys"]["msgwatch_bytes"] for r in runs]
        return RunReport(
            runs=runs,
            verdicts=judged(r.measurement for r in runs),
            output=path,
            sent=sum(m["sent"] for m in moved),
            received=sum(m["received"] for m in moved),
            budget_mb=self.options.budget_mb,
            spool={
                "state_dir": str(self.spool.state_dir),
                "spooled": spooled,
                "pending": self.spool.pending_count(),
            },
            submission=submitted,
            run=info,
            network=from_measurement(runs[0].measurement) if runs else Network(),
            warnings=[
                f"{r.input}: not spooled (the fence refused a destination)"
                for r in runs
                if not r.measured
            ],
        )

    def repeat(
        self,
        *,
        every: float,
        jitter: float,
        wait: Sleep,
        on_report: Callable[[RunReport], None],
        on_skip: Callable[[int], None],
        count: int | None = None,
        progress: ShowProgress | None = None,
    ) -> int:
        """Run every ``every`` seconds (± ``jitter``) until ``wait`` reports a stop or ``count``
        starts; a start that finds ``run.lock`` held is skipped (``on_skip(index)``). Returns
        how many runs ran."""

        def once(index: int) -> None:
            on_report(self.run_once(index=index, sleep=wait, progress=progress))

        return run_every(
            once,
            every=every,
            jitter=jitter,
            lock=lambda: self.locked(wait=False),
            wait=wait,
            on_skip=on_skip,
            count=count,
        )

    def _store(self, runs: list[ServiceRun]) -> tuple[int, Path]:
        """Spool, then write the output file; how many were spooled, and the file."""
        spoolable = [r.measurement for r in runs if r.measured]
        keys: list[str] = []
        spool_error: OSError | None = None
        output_error: OSError | None = None
        try:
            self.spool.add(spoolable, written=keys)
        except OSError as exc:
            spool_error = exc
        path = output_path(self.options.output)
        try:
            write_jsonl(path, [r.measurement for r in runs])
        except OSError as exc:
            output_error = exc
        failure = storage_failure(
            spool_root=self.spool.root,
            pending_dir=self.spool.pending_dir,
            output=path,
            total=len(spoolable),
            spooled=len(keys),
            spool_error=spool_error,
            output_error=output_error,
        )
        if failure is not None:
            raise SessionError(failure, errors.OUTPUT)
        return len(keys), path

    def _submit(self, sleep: Sleep) -> dict[str, Any] | None:
        if self.submission is None:
            return None
        try:
            summary = submit(
                self.spool,
                self.submission.collectors,
                client=self.submission.client,
                token=self.submission.token,
                sleep=sleep,
            )
        except OSError as exc:  # reported, never fatal: the spool keeps them
            return {"ok": False, "error": f"spool: {exc.strerror or exc}"}
        return summary.to_json()


def prepare(options: RunOptions, ask: Ask | None = None) -> Session:
    """Check everything (the module's rule 1) and build the run; ``ask`` asks for consent to
    call tests (None: nobody can be asked, e.g. no terminal)."""
    catalogue = open_catalogue(options.catalogue)
    try:  # a malformed fence stops the run here, before anything is sent or spooled
        check_fence()
    except FenceError as exc:
        raise SessionError(str(exc), errors.USAGE) from exc
    if options.helper and not options.assume_yes:
        ensure_consent(ask)
    config = run_config(options)
    submission = None
    if options.submit:
        submission = submission_to(
            options.collectors,
            options.collector_ca,
            options.collector_token_file,
            options.submit_timeout,
        )
    return Session(
        options=options,
        catalogue=catalogue,
        services=select(catalogue, options.services),
        config=config,
        spool=Spool(resolve_state_dir(options.state_dir)),
        submission=submission,
    )


def run_once(
    options: RunOptions,
    *,
    ask: Ask | None = None,
    progress: ShowProgress | None = None,
    on_wait: Callable[[Path], None] | None = None,
) -> RunReport:
    """One run (:func:`prepare`, then :meth:`Session.run_once` under ``run.lock``, waiting for it)."""
    session = prepare(options, ask)
    with session.locked(wait=True, on_wait=on_wait):
        return session.run_once(progress=progress)


def run_config(options: RunOptions) -> RunConfig:
    """The probe's configuration for ``options``; bad values are option errors."""
    wanted = options.functions or None
    if wanted and (bad := [f for f in wanted if f not in FUNCTIONS]):
        message = f"unknown function(s): {', '.join(bad)}{did_you_mean(bad, FUNCTIONS)}"
        raise option_error(message, "--functions")
    return RunConfig(
        chain=ChainConfig(
            resolver=options.resolver,
            ca_bundle=options.ca_bundle,
            download_path=options.download_path,
        ),
        timeout=options.timeout,
        concurrency=options.concurrency,
        helper=options.helper,
        replay_seconds=options.replay_seconds,
        replay_rounds=options.replay_rounds,
        neutral_port=options.neutral_port,
        helper_control_port=options.helper_control_port,
        replay_seed=options.replay_seed,
        domestic_helper=options.domestic_helper,
        budget_bytes=int(options.budget_mb * 1_000_000),
        functions=wanted,
        probe_asn=options.probe_asn,
        probe_cc=options.probe_cc,
        geoip_databases=_geoip_databases(options),
        probe_addresses=_addresses(options.probe_addresses),
    )


def _geoip_databases(options: RunOptions) -> tuple[str, ...]:
    """The GeoIP databases to use (none when both ASN and country are given), each checked now."""
    if options.probe_asn is not None and options.probe_cc is not None:
        return ()
    paths = database_paths(options.geoip_databases)
    try:
        check_databases(paths)
    except GeoipError as exc:
        raise option_error(str(exc), "--geoip-db") from exc
    return tuple(paths)


def _addresses(given: tuple[str, ...]) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_address(a.strip())) for a in given)
    except ValueError as exc:
        raise option_error(str(exc), "--probe-ip") from exc


def submission_to(
    collectors: tuple[str, ...] | list[str],
    ca_file: str | None = None,
    token_file: str | None = None,
    timeout: float = RunOptions.submit_timeout,
) -> Submission | None:
    """The collectors to submit to (the given ones, else ``$MSGWATCH_COLLECTORS``; None when
    there are none), the token read and the URLs checked before anything runs."""
    try:
        urls = collector_urls(collectors)
    except ValueError as exc:
        raise option_error(str(exc), "--collector") from exc
    if not urls:
        return None
    try:
        token = read_token(token_file) if token_file else None
    except (OSError, ValueError) as exc:
        raise option_error(str(exc), "--collector-token-file") from exc
    client = Client(ca_file=ca_file, connect_timeout=timeout, io_timeout=max(timeout, IO_TIMEOUT))
    return Submission(urls, client, token)


def now() -> str:
    """The time now, UTC, as the run's ``started_at``/``finished_at`` write it."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
