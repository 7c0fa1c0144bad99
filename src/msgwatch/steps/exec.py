"""The seam for client programs (tor, openvpn, wireguard-go): started, bounded, stopped, fenced.

Some tests measure with a program rather than with sockets of their own: a Tor bootstrap is
``tor`` reaching its bridges. This module is the one place that starts such a program, as
:mod:`msgwatch.steps.net` is the one place that opens sockets. It lives in the measuring layer,
below the probe and the test helper, because both may need it (the helper repeating a
bootstrap from outside the network, as it repeats the probe's steps, is its control).

Rules:

- **The fence first.** The caller names every address the program will contact
  (:attr:`Program.destinations`: IP addresses, never names — a name may resolve anywhere). Each is
  checked with :func:`msgwatch.fence.check_destination` before anything starts; one outside the
  fence raises ``ProbeFailure(destination_not_allowed)`` and nothing runs. The caller configures
  the program to contact only those (a bridge line, a VPN endpoint): this module cannot see the
  program's sockets.
- **One deadline.** The program runs until it exits, until :attr:`Program.ready` says a line of
  its output is the sign it was waiting for (``Bootstrapped 100%``), or until ``deadline`` (loop
  time), whichever is first. It is then stopped: ``SIGTERM`` to its whole process group (it runs
  in a session of its own), ``SIGKILL`` :attr:`Program.grace` seconds later. It is stopped and
  reaped on every way out, cancellation included: no child outlives its step.
- **Bounded output.** The first :attr:`Program.max_output` bytes of each of stdout and stderr are
  kept; the rest is read (so the program never blocks on a full pipe) and only counted.
- Never a shell: ``argv`` is executed as given.
- A seam, not a step (:mod:`msgwatch.steps`): it records nothing in a trace; the test that runs
  a program records what the program said, in its own keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from msgwatch.fence import check_destination

MAX_OUTPUT = 64 * 1024
GRACE = 1.0


@dataclass(frozen=True)
class Program:
    """A client program to run (see the module's rules)."""

    argv: Sequence[str]
    destinations: Sequence[str]
    """Every IP address the program will contact; each must be inside the fence."""
    env: Mapping[str, str] | None = None
    """The program's whole environment (None: this process's)."""
    cwd: str | None = None
    ready: Callable[[bytes], bool] | None = None
    """Called with each line of output (stdout and stderr); True stops the program: done."""
    max_output: int = MAX_OUTPUT
    """Bytes kept of each of stdout and stderr."""
    grace: float = GRACE
    """Seconds between ``SIGTERM`` and ``SIGKILL`` when the program is stopped."""


@dataclass
class Output:
    """One stream's output: its head, and how much there was."""

    kept: bytearray = field(default_factory=bytearray)
    total: int = 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)


@dataclass
class ProgramResult:
    """How the program ended, and what it said."""

    returncode: int | None = None
    """Its exit status (negative: the signal that ended it); None if it was never reaped."""
    ready: bool = False
    """A line of output satisfied :attr:`Program.ready` (the program was then stopped)."""
    timed_out: bool = False
    """The deadline came first (the program was then stopped)."""
    seconds: float = 0.0
    stdout: Output = field(default_factory=Output)
    stderr: Output = field(default_factory=Output)


def check_program(program: Program) -> None:
    """Raise ``ProbeFailure(destination_not_allowed)`` for a destination outside the fence (or
    not an IP address); ValueError for an empty ``argv``."""
    if not program.argv:
        raise ValueError("a program needs an argv")
    for address in program.destinations:
        check_destination(address)


async def _pump(
    stream: asyncio.StreamReader,
    out: Output,
    limit: int,
    ready: Callable[[bytes], bool] | None,
    done: asyncio.Event,
) -> None:
    """Read ``stream`` to its end: keep its head, count the rest, watch lines for ``ready``."""
    partial = b""
    while chunk := await stream.read(16384):
        out.total += len(chunk)
        room = limit - len(out.kept)
        if room > 0:
            out.kept += chunk[:room]
        if ready is None or done.is_set():
            continue
        *lines, partial = (partial + chunk).split(b"\n")
        partial = partial[-limit:]
        if any(ready(line) for line in lines):
            done.set()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(process: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the program's process group, SIGKILL after ``grace``; reaped either way."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
    # Whatever the program left in its group goes with it.
    _signal_group(process.pid, signal.SIGKILL)


async def run_program(program: Program, deadline: float) -> ProgramResult:
    """Run ``program`` until it exits, is ready, or ``deadline`` (loop time) comes.

    Raises ``ProbeFailure(destination_not_allowed)`` before starting anything when a destination
    is outside the fence, and OSError when the program cannot be started."""
    check_program(program)
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        *program.argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if program.env is None else dict(program.env),
        cwd=program.cwd,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    result = ProgramResult()
    ready = asyncio.Event()
    pumps = [
        asyncio.create_task(
            _pump(process.stdout, result.stdout, program.max_output, program.ready, ready)
        ),
        asyncio.create_task(
            _pump(process.stderr, result.stderr, program.max_output, program.ready, ready)
        ),
    ]
    exited = asyncio.create_task(process.wait())
    watching = asyncio.create_task(ready.wait())
    try:
        remaining = max(0.0, deadline - loop.time())
        done, _ = await asyncio.wait(
            {exited, watching}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        result.ready = ready.is_set()
        result.timed_out = not done
    finally:
        watching.cancel()
        if process.returncode is None:
            await asyncio.shield(_stop(process, program.grace))
        for pump in pumps:  # the pipes close with the process group
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, program.grace)
        exited.cancel()
    result.returncode = process.returncode
    result.seconds = round(loop.time() - started, 6)
    return result
