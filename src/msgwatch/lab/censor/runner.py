"""Put a compiled censor into its namespace (:func:`apply`) and take it out again (:func:`remove`).

Everything the censor installs is findable without the compiled object, so that :func:`remove` also
cleans up after a crashed run: one nft table (``inet msgwatch_censor``), one iptables chain name
(``MSGWATCH_CENSOR``, in the ``filter`` and ``raw`` tables of iptables and ip6tables, jumped to from
FORWARD and PREROUTING), root qdiscs with the handle ``6d77:`` on the censor's two interfaces, and
helper processes recorded as ``censor-*.lab`` (``<pid> <start time>``, :mod:`msgwatch.lab.procs.registry`:
a pid reused by another process is not ours) in the run directory.

Re-applying replaces: the nft table atomically (see :mod:`.compiler`), the iptables chains by
flush-and-refill (a gap of a few milliseconds in which keyword rules are absent), the qdiscs by
delete-and-add, the helpers by stop-and-start.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from msgwatch.lab.censor.context import CHAIN, TABLE, TC_HANDLE, CensorContext, Compiled
from msgwatch.lab.procs.proc import end_group
from msgwatch.lab.procs.registry import alive, record

HOOKS = {"filter": "FORWARD", "raw": "PREROUTING"}
"""iptables tables the censor uses, and the built-in chain that jumps to its own chain."""
READY_TIMEOUT = 5.0
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Helpers this process started, kept to reap them when they are stopped (no zombies)."""


class CensorError(RuntimeError):
    """Applying or removing a censor failed; the message names the command and its error."""


def _in_ns(ctx: CensorContext, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ctx.netns, *argv]


def _run(
    ctx: CensorContext, argv: list[str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(_in_ns(ctx, argv), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise CensorError(f"in {ctx.netns}: {' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _netns_exists(ctx: CensorContext) -> bool:
    return Path("/run/netns", ctx.netns).exists()


def _executables() -> list[str]:
    return [exe for exe in ("iptables", "ip6tables") if shutil.which(exe, path=_PATH)]


_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def _chain_exists(ctx: CensorContext, exe: str, table: str) -> bool:
    return _run(ctx, [exe, "-w", "-t", table, "-S", CHAIN], check=False).returncode == 0


def _drop_chain(ctx: CensorContext, exe: str, table: str) -> None:
    if not _chain_exists(ctx, exe, table):
        return
    hook = HOOKS[table]
    while _run(ctx, [exe, "-w", "-t", table, "-D", hook, "-j", CHAIN], check=False).returncode == 0:
        pass
    _run(ctx, [exe, "-w", "-t", table, "-F", CHAIN])
    _run(ctx, [exe, "-w", "-t", table, "-X", CHAIN])


def _fresh_chain(ctx: CensorContext, exe: str, table: str) -> None:
    """The censor's chain in ``table``, empty, jumped to once from the built-in chain."""
    if _chain_exists(ctx, exe, table):
        _run(ctx, [exe, "-w", "-t", table, "-F", CHAIN])
    else:
        _run(ctx, [exe, "-w", "-t", table, "-N", CHAIN])
    hook = HOOKS[table]
    if _run(ctx, [exe, "-w", "-t", table, "-C", hook, "-j", CHAIN], check=False).returncode != 0:
        _run(ctx, [exe, "-w", "-t", table, "-I", hook, "1", "-j", CHAIN])


def _iptables(ctx: CensorContext, rules: list[list[str]]) -> None:
    needed = {(argv[0], argv[argv.index("-t") + 1]) for argv in rules}
    for exe in _executables():
        for table in HOOKS:
            if (exe, table) in needed:
                _fresh_chain(ctx, exe, table)
            else:
                _drop_chain(ctx, exe, table)
    for argv in rules:
        _run(ctx, argv)


def _ours(ctx: CensorContext, dev: str) -> bool:
    shown = _run(ctx, ["tc", "qdisc", "show", "dev", dev, "root"], check=False).stdout
    return f" {TC_HANDLE}: " in f" {shown} "


def _drop_qdiscs(ctx: CensorContext) -> None:
    for dev in (ctx.lan_if, ctx.wan_if):
        if _ours(ctx, dev):
            _run(ctx, ["tc", "qdisc", "del", "dev", dev, "root"])


def _pidfiles(ctx: CensorContext) -> list[Path]:
    return sorted(ctx.run_dir.glob("censor-*.lab")) if ctx.run_dir.is_dir() else []


def _stop_processes(ctx: CensorContext) -> list[str]:
    problems = []
    for pidfile in _pidfiles(ctx):
        pid = alive(pidfile)
        if pid is not None and not end_group(pid, _CHILDREN.get(pid)):
            problems.append(f"could not stop {pidfile.stem} (pid {pid})")
        if pid is not None and pid in _CHILDREN:
            _CHILDREN.pop(pid).wait(timeout=2)
        pidfile.unlink(missing_ok=True)
        pidfile.with_suffix(".ready").unlink(missing_ok=True)
    return problems


def _tail(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()[-5:]
        return "".join(f"\n    {line}" for line in lines if line.strip())
    return ""


def _start_processes(ctx: CensorContext, compiled: Compiled) -> None:
    started: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    for process in compiled.processes:
        log = ctx.run_dir / f"censor-{process.name}.log"
        process.ready.unlink(missing_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                _in_ns(ctx, process.argv), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, cwd=ctx.run_dir,
            )  # fmt: skip
        _CHILDREN[proc.pid] = proc
        record(ctx.run_dir, f"censor-{process.name}", proc.pid)
        started.append((proc, process.ready, log))
    deadline = time.monotonic() + READY_TIMEOUT
    for proc, ready, log in started:
        while not ready.exists():
            if proc.poll() is not None:
                raise CensorError(f"censor helper exited at start (status {proc.returncode}); "
                                  f"see {log}{_tail(log)}")  # fmt: skip
            if time.monotonic() > deadline:
                raise CensorError(f"censor helper not ready within {READY_TIMEOUT:.0f} s; "
                                  f"see {log}{_tail(log)}")  # fmt: skip
            time.sleep(0.01)


def apply(compiled: Compiled, ctx: CensorContext) -> None:
    """Install ``compiled`` in the censor's namespace, replacing whatever a previous apply installed.

    The resolver lines are written to ``<run_dir>/censor-resolver.conf`` for the ISP resolver to
    include (dnsmasq reads ``address=`` lines at start: restart it after a change).
    """
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    _stop_processes(ctx)
    nft_file = ctx.run_dir / "censor.nft"
    nft_file.write_text(compiled.nft)
    _run(ctx, ["nft", "-f", str(nft_file)])
    _iptables(ctx, compiled.iptables)
    _drop_qdiscs(ctx)
    for argv in compiled.tc:
        _run(ctx, argv)
    (ctx.run_dir / "censor-resolver.conf").write_text(
        "".join(f"{line}\n" for line in compiled.resolver_lines)
    )
    _start_processes(ctx, compiled)


def remove(ctx: CensorContext) -> None:
    """Take out everything :func:`apply` installed (also after a crash); missing parts are fine."""
    problems = _stop_processes(ctx)
    if _netns_exists(ctx):
        _run(ctx, ["nft", "delete", "table", "inet", TABLE], check=False)
        for exe in _executables():
            for table in HOOKS:
                _drop_chain(ctx, exe, table)
        _drop_qdiscs(ctx)
    for name in ("censor.nft", "censor-resolver.conf"):
        (ctx.run_dir / name).unlink(missing_ok=True)
    if problems:
        raise CensorError("; ".join(problems))


@dataclass
class Installed:
    """What of a censor is in place right now (for ``lab status`` and for the tests)."""

    nft_rules: int = 0
    """Rules in the censor's nft table (-1: no table)."""
    iptables_rules: list[str] = field(default_factory=list)
    qdiscs: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.nft_rules == -1 and not (self.iptables_rules or self.qdiscs or self.processes)


def installed(ctx: CensorContext) -> Installed:
    """Inspect the censor's namespace and run directory."""
    state = Installed(nft_rules=-1)
    for pidfile in _pidfiles(ctx):
        pid = alive(pidfile)
        if pid is not None:
            state.processes.append(f"{pidfile.stem} (pid {pid})")
    if not _netns_exists(ctx):
        return state
    listed = _run(ctx, ["nft", "-a", "list", "table", "inet", TABLE], check=False)
    if listed.returncode == 0:
        state.nft_rules = sum(1 for line in listed.stdout.splitlines()
                              if "# handle" in line and line.strip().split()[0] not in
                              ("chain", "set", "table", "meter", "type"))  # fmt: skip
    for exe in _executables():
        for table in HOOKS:
            shown = _run(ctx, [exe, "-w", "-t", table, "-S"], check=False).stdout
            state.iptables_rules += [f"{exe} -t {table} {line}" for line in shown.splitlines()
                                     if CHAIN in line]  # fmt: skip
    for dev in (ctx.lan_if, ctx.wan_if):
        if _ours(ctx, dev):
            state.qdiscs.append(dev)
    return state
