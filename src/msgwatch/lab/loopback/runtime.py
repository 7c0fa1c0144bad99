"""Where running mini-Internets are registered, so that a crashed one can be cleaned up.

Each mini-Internet has an entry ``/run/msgwatch-minilab/<id>/`` in the lab's registry
(:mod:`msgwatch.lab.lifecycle`, shared with the namespace lab): ``owner.lab`` (the Python process that
started it) and one ``<server>.lab`` per server. Without a caller's ``workdir`` the entry is also the
run directory (configs, certificates, logs).

:func:`gc` stops the servers of every entry whose owner is gone (``kill -9``, a power cut of the
interpreter) and removes the entry. Entries of live owners, including this process's, are left alone.
"""

from __future__ import annotations

import time
from pathlib import Path

from msgwatch.lab.lifecycle import OWNER, Registry
from msgwatch.lab.loopback.servers import MiniInternetError

__all__ = ["REGISTRY", "RUNTIME_DIR", "create_entry", "gc", "live_entries", "teardown"]

RUNTIME_DIR = Path("/run/msgwatch-minilab")
REGISTRY = Registry(RUNTIME_DIR, "mini-Internet", MiniInternetError)


def live_entries() -> list[tuple[str, int]]:
    """(id, owner pid) of the mini-Internets whose owner still runs."""
    return REGISTRY.live()


def create_entry(lab_id: str) -> Path:
    """The entry, made with this process as its owner in one step; private to root (mode 0700)."""
    return REGISTRY.create(lab_id, mode=0o700)


def teardown(lab_id: str) -> list[str]:
    """Stop the recorded servers of ``lab_id`` and remove its entry; raises if a server stays."""
    done, problems = REGISTRY.stop_servers(lab_id)
    if problems:  # keep the server records without an owner: gc() tries again
        REGISTRY.disown(lab_id)
        raise MiniInternetError(f"mini-Internet {lab_id}: {'; '.join(problems)}; run gc() again")
    return done + REGISTRY.remove(lab_id)


def gc(age: float = 10.0) -> list[str]:
    """Stop what crashed mini-Internets left behind; returns one line per thing removed.

    An entry without an owner record is removed once ``age`` seconds old: younger, it holds the logs
    of a failed start that its error message points to.
    """

    def young(lab_id: str) -> bool:
        entry = REGISTRY.entry(lab_id)
        return not (entry / OWNER).exists() and time.time() - entry.stat().st_mtime < age

    return REGISTRY.gc(teardown, keep=young)
