"""One lifecycle for both lab back-ends: the namespace lab and the loopback mini-Internet.

Both bring real servers up (:mod:`msgwatch.lab.procs`) and must leave nothing behind, however the
process that owns them ends. The rules, shared:

- **A registry on the machine.** Each running lab has an entry ``<root>/<id>/`` (``root`` is one
  :class:`Registry` per back-end): ``owner.lab`` (the Python process that owns the lab) and one
  ``<server>.lab`` per server, each ``<pid> <start time>`` (:mod:`msgwatch.lab.procs.registry`: a
  recycled pid is never taken for the process). An entry is made in one step: written as
  ``.<id>.new`` and renamed, so an entry always has its owner record.
- **Down on every exit.** :class:`Guard` runs the lab's ``down`` on SIGINT and SIGTERM (then the
  previous handler handles the signal as it would have) and at interpreter exit; ``down`` disarms
  it, restoring the handlers. Handlers are only set from the main thread (``atexit`` still runs).
- **gc after a crash.** :meth:`Registry.gc` hands every lab whose owner is gone (``kill -9``, a crash
  of the interpreter) to the back-end's teardown, which stops the recorded servers
  (:meth:`Registry.stop_servers`) and removes what else the back-end made; half-made entries of dead
  owners are removed; labs whose owner runs, this process included, are left alone. A teardown that
  cannot remove everything raises the back-end's error; gc raises it again after the others are
  done, and the server records stay without an owner so that the next gc tries again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from msgwatch.lab.procs.proc import end_groups
from msgwatch.lab.procs.registry import alive, record

__all__ = ["OWNER", "Guard", "Registry"]

_OWNER = "owner"
OWNER = f"{_OWNER}.lab"
"""The owner's record in an entry (the others are the servers')."""
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Guard:
    """Calls ``down`` on SIGINT/SIGTERM and at interpreter exit, from :meth:`arm` to :meth:`disarm`."""

    def __init__(self, down: Callable[[], None]) -> None:
        self._down = down
        self._previous: dict[int, Any] = {}

    def arm(self) -> None:
        """Install the signal handlers (main thread only) and the exit hook."""
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)
        atexit.register(self._down)

    def disarm(self) -> None:
        """Restore the handlers this guard replaced (unless replaced since) and drop the exit hook."""
        atexit.unregister(self._down)
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous.get(signum, signal.SIG_DFL)
        try:
            self._down()
        finally:
            self.disarm()  # then the previous handler handles the signal as it would have
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)


class Registry:
    """The entries of one back-end's running labs under ``root``.

    ``label`` names a lab in messages; ``error`` is the back-end's error, which its teardown raises.
    """

    def __init__(self, root: Path, label: str, error: type[RuntimeError]) -> None:
        self.root = root
        self.label = label
        self.error = error

    def entry(self, lab_id: str) -> Path:
        return self.root / lab_id

    def create(self, lab_id: str, mode: int = 0o755) -> Path:
        """Make the entry with this process as its owner, in one step (a rename)."""
        target = self.entry(lab_id)
        tmp = self.root / f".{lab_id}.new"
        tmp.mkdir(parents=True, mode=mode)
        record(tmp, _OWNER, os.getpid())
        tmp.rename(target)
        return target

    def owner(self, lab_id: str) -> int | None:
        """The owner's pid if the lab's owner process still runs."""
        return alive(self.entry(lab_id) / OWNER)

    def ids(self) -> list[str]:
        """Ids of every entry (half-made ones excluded)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))

    def live(self) -> list[tuple[str, int]]:
        """(id, owner pid) of the labs whose owner still runs."""
        found = ((lab_id, self.owner(lab_id)) for lab_id in self.ids())
        return [(lab_id, pid) for lab_id, pid in found if pid is not None]

    def stop_servers(self, lab_id: str, stray: str = "") -> tuple[list[str], list[str]]:
        """End the process groups of the servers recorded in the entry, all at once.

        Returns (one line per server stopped, one line per server that would not stop)."""
        records = {
            p.stem: pid
            for p in sorted(self.entry(lab_id).glob("*.lab"))
            if p.name != OWNER and (pid := alive(p)) is not None
        }
        left = end_groups(records.values())
        stopped, problems = [], []
        for name, pid in records.items():
            if pid in left:
                problems.append(f"could not stop {name} (pid {pid})")
            else:
                stopped.append(f"stopped {name} (pid {pid}) of {stray}{self.label} {lab_id}")
        return stopped, problems

    def disown(self, lab_id: str) -> None:
        """Drop the owner record, keeping the server records: the next gc tries again."""
        (self.entry(lab_id) / OWNER).unlink(missing_ok=True)

    def remove(self, lab_id: str) -> list[str]:
        """Remove the entry; one line if there was one."""
        directory = self.entry(lab_id)
        if not directory.exists():
            return []
        shutil.rmtree(directory, ignore_errors=True)
        return [f"removed {directory}"]

    def tidy(self) -> None:
        """Remove the root once no entry is left in it."""
        with contextlib.suppress(OSError):
            self.root.rmdir()

    def gc(
        self,
        teardown: Callable[[str], list[str]],
        ids: Iterable[str] | None = None,
        keep: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Tear down every lab of ``ids`` (default: every entry) whose owner is gone.

        ``keep(id)`` spares an ownerless lab for now. Returns one line per thing removed; if a
        teardown raised the back-end's error, raises it (all messages in one) after the others.
        """
        done: list[str] = []
        errors: list[str] = []
        for lab_id in self.ids() if ids is None else ids:
            if self.owner(lab_id) is not None or (keep is not None and keep(lab_id)):
                continue
            try:
                done += teardown(lab_id)
            except self.error as exc:
                errors.append(str(exc))
        if self.root.is_dir():  # half-made entries of owners that died while making them
            for tmp in self.root.glob(".*.new"):
                if alive(tmp / OWNER) is None:
                    shutil.rmtree(tmp, ignore_errors=True)
                    done.append(f"removed {tmp}")
        self.tidy()
        if errors:
            raise self.error("; ".join(errors))
        return done
