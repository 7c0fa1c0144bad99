"""The namespace lab's identity on the machine, its run directory, its removal, and :func:`gc`.

A lab is known by a 6-hex-digit id. Everything it makes carries the id:

- namespaces ``mw<id>-<role>`` (and with them every interface: they live and die inside them);
- the run directory ``/run/msgwatch-lab/<id>/``: ``owner.lab`` (the Python process that owns the lab)
  and one ``<server>.lab`` per server, each ``<pid> <start time>`` (a recycled pid is never taken for
  the process), plus configs, certificates, logs and the lab catalogue.

The run directory is made (with its owner record, atomically by a rename) before any namespace, and
removed after the last one: so a namespace whose id has no run directory, or whose owner is dead, is
a leftover. :func:`teardown` removes one lab's everything — servers (checked gone), any other process
inside its namespaces, the namespaces (checked gone), the run directory — and :func:`gc` tears down
every lab whose owner is gone (``kill -9``, a crash of the interpreter). The registry of run
directories and the gc loop are :mod:`msgwatch.lab.lifecycle`, shared with the loopback back-end;
what is namespace-specific (ids, namespaces, killing what runs inside them) is here.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from msgwatch.lab import netns
from msgwatch.lab.lifecycle import Registry
from msgwatch.lab.netns import LabError
from msgwatch.lab.plan import ROLES
from msgwatch.lab.procs.proc import Server, stop_all

RUN_ROOT = Path("/run/msgwatch-lab")
REGISTRY = Registry(RUN_ROOT, "lab", LabError)
_ID = re.compile(r"^[0-9a-f]{6}$")
_NAMESPACE = re.compile(r"^mw([0-9a-f]{6})-(" + "|".join(ROLES) + r")$")


def new_id() -> str:
    return secrets.token_hex(3)


def check_id(lab_id: str) -> str:
    if not _ID.match(lab_id):
        raise LabError(f"a lab id is 6 lowercase hex digits, not {lab_id!r}")
    return lab_id


def namespace(lab_id: str, role: str) -> str:
    return f"mw{lab_id}-{role}"


def entry(lab_id: str) -> Path:
    """The lab's run directory."""
    return REGISTRY.entry(lab_id)


def create_entry(lab_id: str) -> Path:
    """Make the run directory with this process as its owner, in one step (a rename)."""
    target = entry(lab_id)
    if target.exists() or any(n.startswith(f"mw{lab_id}-") for n in netns.namespaces()):
        raise LabError(f"lab id {lab_id} is in use (see {target})")
    return REGISTRY.create(lab_id)  # mode 0755: servers that drop privileges read their files


def owner_alive(lab_id: str) -> int | None:
    """The owner's pid if the lab's owner process still runs."""
    return REGISTRY.owner(lab_id)


def lab_namespaces(lab_id: str) -> list[str]:
    """The lab's namespaces that exist."""
    return [n for n in netns.namespaces() if (m := _NAMESPACE.match(n)) and m[1] == lab_id]


def known_ids() -> list[str]:
    """Ids of every lab with a namespace or a run directory on this machine."""
    ids = {m[1] for n in netns.namespaces() if (m := _NAMESPACE.match(n))}
    if RUN_ROOT.is_dir():
        ids |= {p.name for p in RUN_ROOT.iterdir() if _ID.match(p.name)}
    return sorted(ids)


def _kill_inside(names: Sequence[str], done: list[str]) -> list[int]:
    """SIGKILL every process inside the namespaces; returns those still there after 3 s."""
    me = os.getpid()  # never this process (only a thread of it can be inside, by run_in)
    found = {pid: ns for ns in names for pid in netns.pids(ns) if pid != me}
    for pid, ns in found.items():
        try:
            os.kill(pid, signal.SIGKILL)
            done.append(f"killed pid {pid} in {ns}")
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    left = list(found)
    while left and time.monotonic() < deadline:
        time.sleep(0.01)
        left = [pid for ns in names for pid in netns.pids(ns) if pid != me]
    return left


def teardown(lab_id: str, servers: Sequence[Server] = (), stray: str = "") -> list[str]:
    """Remove everything of lab ``lab_id``; one line per thing removed. Raises if something stays.

    ``servers`` are the caller's own children (reaped as they go); recorded servers of a crashed
    owner are found from their records. Any other process inside the namespaces is killed.
    """
    problems = [f"could not stop {name}" for name in stop_all(servers)]
    done, left = REGISTRY.stop_servers(lab_id, stray)
    problems += left
    names = lab_namespaces(lab_id)
    stuck = _kill_inside(names, done)
    if stuck:
        problems.append(f"processes {stuck} would not die")
    netns.delete(names)
    done += [f"deleted namespace {n}" for n in names]
    remaining = lab_namespaces(lab_id)
    if remaining:
        problems.append(f"namespaces {', '.join(remaining)} would not go")
    if problems:  # keep the server records without an owner: gc() tries again
        REGISTRY.disown(lab_id)
        raise LabError(f"lab {lab_id}: {'; '.join(problems)}; run msgwatch.lab.runtime.gc()")
    done += REGISTRY.remove(lab_id)
    REGISTRY.tidy()
    return done


def gc() -> list[str]:
    """Remove the namespaces, processes and run directories of labs whose owner is gone.

    Labs whose owner runs (including this process's) are left alone. Returns one line per thing
    removed; a lab that cannot be removed raises :class:`LabError` after the others are done.
    """
    # Namespaces are listed first (known_ids): their run directory was made before them.
    return REGISTRY.gc(functools.partial(teardown, stray="orphaned "), ids=known_ids())
