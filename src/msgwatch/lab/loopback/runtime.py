"""Where running mini-Internets are registered, so that a crashed one can be cleaned up.

Each mini-Internet has an entry ``/run/msgwatch-minilab/<id>/`` holding ``owner.lab`` (the Python
process that started it) and one ``<server>.lab`` per server, each as ``<pid> <start time>`` (the
start time from ``/proc/<pid>/stat`` tells a process from a later one that reuses its pid). Without
a caller's ``workdir`` the entry is also the run directory (configs, certificates, logs).

:func:`gc` stops the servers of every entry whose owner is gone (``kill -9``, a power cut of the
interpreter) and removes the entry. Entries of live owners, including this process's, are left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from msgwatch.lab.loopback.servers import end_group
from msgwatch.lab.procs.registry import alive, record

__all__ = ["RUNTIME_DIR", "alive", "create_entry", "gc", "live_entries", "record", "tidy"]

RUNTIME_DIR = Path("/run/msgwatch-minilab")


def live_entries() -> list[tuple[str, int]]:
    """(id, owner pid) of the mini-Internets whose owner still runs."""
    if not RUNTIME_DIR.is_dir():
        return []
    found = ((e.name, alive(e / "owner.lab")) for e in sorted(RUNTIME_DIR.iterdir()))
    return [(name, pid) for name, pid in found if pid is not None]


def gc(age: float = 10.0) -> list[str]:
    """Stop what crashed mini-Internets left behind; returns one line per thing removed.

    An entry without an owner is removed once ``age`` seconds old: younger, it is being created,
    or it holds the logs of a failed start that its error message points to.
    """
    done: list[str] = []
    if not RUNTIME_DIR.is_dir():
        return done
    for entry in sorted(RUNTIME_DIR.iterdir()):
        owner = entry / "owner.lab"
        if alive(owner) is not None:
            continue
        if not owner.exists() and time.time() - entry.stat().st_mtime < age:
            continue
        for pidfile in sorted(entry.glob("*.lab")):
            pid = alive(pidfile)
            if pidfile != owner and pid is not None:
                gone = end_group(pid)
                state = "stopped" if gone else "could not stop"
                done.append(f"{state} {pidfile.stem} (pid {pid}) of mini-Internet {entry.name}")
        shutil.rmtree(entry, ignore_errors=True)
        done.append(f"removed {entry}")
    tidy()
    return done


def tidy() -> None:
    """Remove the runtime directory once no entry is left in it."""
    with contextlib.suppress(OSError):
        RUNTIME_DIR.rmdir()


def create_entry(lab_id: str) -> Path:
    entry = RUNTIME_DIR / lab_id
    entry.mkdir(parents=True, mode=0o700)
    record(entry, "owner", os.getpid())
    return entry
