"""The on-disk spool: every measurement is durable on the probe before it is sent anywhere.

Rules (docs/design/002-collector.md, "Spool and scheduled runs"; operator's guide docs/spool.md):

1. A measurement is written to ``spool/tmp/``, ``fsync``ed, renamed into ``spool/pending/<key>.json``,
   and the directory is ``fsync``ed, before anything else happens to it (the ``--output`` file, the
   submission). A crash leaves either no file in ``pending/`` or a complete one.
2. Nothing leaves ``pending/`` without a reason: an acknowledgement (a line in ``submitted.jsonl``,
   appended and ``fsync``ed *before* the unlink) or a rejection (``rejected/<key>.json`` plus
   ``rejected/<key>.reason.json``). A crash between the ledger line and the unlink is repaired by
   :meth:`Spool.recover`, which unlinks the pending files that the ledger's tail already names (the
   tail of ``submitted.jsonl`` and of the previous generation).
3. Reading a pending file is bounded and never raises for what is in it: a file larger than
   :data:`MAX_MEASUREMENT_BYTES`, not UTF-8, not JSON, not an object, or with a name that is not a
   valid key is moved to ``rejected/`` with one of the collector's reason codes. The ledger is read
   line by line (a line longer than :data:`MAX_LEDGER_LINE`, or damaged, is skipped).
4. The probe id (``STATE/probe-id``) is random, made once and never sent; an idempotency key is
   ``<network tag>.<32 random hex>``, whose tag links the measurements of one installation on one
   network and nothing more. Rules and reasons: :mod:`msgwatch.spool.identity`.
5. The ledger is bounded: at a *safe point* — right after :meth:`Spool.recover`'s repair, and at the
   end of :meth:`Spool.acknowledge`, after the acknowledged pending files are unlinked and the
   directory ``fsync``ed — a ``submitted.jsonl`` of :attr:`Spool.ledger_max_bytes` or more
   becomes the previous generation ``submitted-<T>.jsonl``. At a safe point no pending file's key
   is only in the ledger, so the rotation loses nothing the repair needs (and the repair reads the
   previous generation's tail too, for a caller that acknowledged without recovering first).
   ``spool status`` never reads more than ``submitted.jsonl``. Rules: :mod:`msgwatch.spool.ledger`.

Files are written through :mod:`msgwatch.durable` (temporary file, ``fsync``, rename, directory
``fsync``) and read back bounded, never through a symbolic link.

The parts: :class:`~msgwatch.spool.identity.ProbeIdentity` (``Spool.identity``),
:class:`~msgwatch.spool.ledger.Ledger` (``Spool.submitted``), and here the pending queue, the
rejections and ``attempts.json``.

Layout::

    STATE/
      probe-id                   32 random hex digits, made once, never sent (rule 4)
      run.lock                   flock: one run at a time (msgwatch.session.schedule)
      spool/
        pending/<key>.json       one measurement each, as written by the run
        tmp/                     writes in progress (cleaned by the next run)
        rejected/<key>.json      refused measurements, and <key>.reason.json beside each
        submitted.jsonl          ledger: {"key", "uid", "status", "collector", "time"} per line
        submitted-<T>.jsonl      the previous ledger generation (at most one); T: acknowledgements
                                 in it and in all the generations before it
        attempts.json            per pending key: attempts, last error (for ``spool status``)
        submit.lock              flock: one submission at a time

Concurrency: runs hold ``run.lock``; submissions hold ``submit.lock`` (a run's own submission
included), so a manual ``msgwatch submit`` during a scheduled run waits for it. The ledger is
written and rotated only by submissions.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgwatch.durable import fsync_dir, read_bounded, write_durably, write_new
from msgwatch.spool.identity import KEY_RE, ProbeIdentity
from msgwatch.spool.ledger import LEDGER_MAX_BYTES, MAX_LEDGER_LINE, Ledger, utc_now

__all__ = [
    "MAX_LEDGER_LINE",
    "MAX_MEASUREMENT_BYTES",
    "ROOT_STATE_DIR",
    "Ack",
    "Invalid",
    "PendingItem",
    "Spool",
    "default_state_dir",
    "resolve_state_dir",
    "utc_now",
]

STATE_ENV = "MSGWATCH_STATE_DIR"
ROOT_STATE_DIR = Path("/var/lib/msgwatch")
MAX_MEASUREMENT_BYTES = 4 * 1024 * 1024
"""The collector's per-measurement limit: a bigger pending file could never be accepted."""
MAX_STATE_BYTES = 16 * 1024 * 1024
TMP_MAX_AGE = 3600.0
REASON_SUFFIX = ".reason.json"


def default_state_dir(
    environ: Mapping[str, str] | None = None, euid: int | None = None, home: Path | None = None
) -> Path:
    """``$MSGWATCH_STATE_DIR``, else ``/var/lib/msgwatch`` for root, else the XDG state home."""
    env = os.environ if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    if (os.geteuid() if euid is None else euid) == 0:
        return ROOT_STATE_DIR
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "msgwatch"
    return (home or Path.home()) / ".local" / "state" / "msgwatch"


def resolve_state_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--state-dir`` when given, else :func:`default_state_dir`."""
    return Path(explicit) if explicit else default_state_dir()


@dataclass(frozen=True)
class PendingItem:
    key: str
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class Ack:
    """A collector's acknowledgement of one measurement."""

    key: str
    uid: str
    status: str
    """``stored`` or ``duplicate``."""
    collector: str


@dataclass(frozen=True)
class Invalid:
    """Why a pending file cannot be sent; the file has been moved to ``rejected/``."""

    error: str
    detail: str


def _decode(data: bytes) -> Invalid | None:
    """Check that ``data`` is one JSON object; the reason codes are the collector's."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid("bad_encoding", f"not UTF-8 at byte {exc.start}")
    try:
        value = json.loads(text)
    except RecursionError:
        return Invalid("too_deep", "nested too deeply")
    except ValueError as exc:
        return Invalid("malformed_json", str(exc)[:200])
    if not isinstance(value, dict):
        return Invalid("not_an_object", f"a JSON {type(value).__name__}, not an object")
    return None


class Spool:
    """One state directory's spool. Methods raise ``OSError`` only for the disk itself (full,
    read-only, permissions), never for what a file contains."""

    def __init__(self, state_dir: Path, *, ledger_max_bytes: int = LEDGER_MAX_BYTES) -> None:
        self.state_dir = state_dir
        self.identity = ProbeIdentity(state_dir)
        self.root = state_dir / "spool"
        self.submitted = Ledger(self.root, ledger_max_bytes)
        self.pending_dir = self.root / "pending"
        self.tmp_dir = self.root / "tmp"
        self.rejected_dir = self.root / "rejected"
        self.ledger_path = self.submitted.path
        self.attempts_path = self.root / "attempts.json"
        self.probe_id_path = self.identity.path
        self.run_lock_path = state_dir / "run.lock"
        self.submit_lock_path = self.root / "submit.lock"

    # -- set-up ----------------------------------------------------------------------------------

    def create(self) -> Spool:
        """Make the directories (0700) when missing; returns self."""
        for directory in (self.state_dir, self.root, self.pending_dir, self.tmp_dir,
                          self.rejected_dir):  # fmt: skip
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.pending_dir.is_dir()

    def probe_id(self) -> str:
        """The installation's id, made on first use (:class:`ProbeIdentity`)."""
        return self.identity.probe_id()

    def read_probe_id(self) -> str | None:
        return self.identity.read()

    def new_key(self, measurement: Mapping[str, Any]) -> str:
        """A fresh idempotency key (rule 4)."""
        return self.identity.new_key(measurement)

    # -- writing ---------------------------------------------------------------------------------

    def add(
        self, measurements: Iterable[dict[str, Any]], written: list[str] | None = None
    ) -> list[str]:
        """Spool each measurement durably; returns their idempotency keys, in order.

        On ``OSError`` (a full disk) the measurements before the failing one are spooled and
        their keys are in ``written`` when the caller passed a list; nothing of the failing one is
        left behind (its temporary file is removed)."""
        self.create()
        keys: list[str] = [] if written is None else written
        try:
            for measurement in measurements:
                keys.append(self._add_one(measurement))
        except BaseException:
            if keys:  # those are renamed into pending/: make the renames durable too
                with contextlib.suppress(OSError):
                    fsync_dir(self.pending_dir)
            raise
        if keys:
            fsync_dir(self.pending_dir)
        return keys

    def _add_one(self, measurement: dict[str, Any]) -> str:
        key = self.new_key(measurement)
        data = json.dumps(measurement, ensure_ascii=False, separators=(",", ":"))
        tmp = self.tmp_dir / f"{key}.json"
        write_new(tmp, data.encode("utf-8"))  # removed again if it fails
        try:
            os.rename(tmp, self.pending_dir / f"{key}.json")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return key

    def recover(self, now: float | None = None) -> int:
        """Finish what a crash interrupted: unlink pending files the ledger's tail (of
        ``submitted.jsonl`` and of the previous generation) already acknowledges, rotate the
        ledger when it is due (this is a safe point), and drop temporary files older than an
        hour. Returns the pending files unlinked. Call it under ``submit.lock``."""
        self.create()
        removed = self._unlink_acknowledged()
        self.rotate_ledger()
        cutoff = (time.time() if now is None else now) - TMP_MAX_AGE
        for entry in os.scandir(self.tmp_dir):
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    os.unlink(entry.path)
        return removed

    # -- reading ---------------------------------------------------------------------------------

    def pending(self) -> list[PendingItem]:
        """The pending measurements, oldest first. Entries that cannot be one (a bad name, not a
        regular file) are moved to ``rejected/`` on the way."""
        if not self.pending_dir.is_dir():
            return []
        items: list[PendingItem] = []
        for entry in os.scandir(self.pending_dir):
            name = entry.name
            stem = name[: -len(".json")] if name.endswith(".json") else ""
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # acknowledged by a concurrent submission
            if not entry.is_file(follow_symlinks=False):
                self.reject_file(Path(entry.path), "not_a_file", "not a regular file")
            elif not KEY_RE.fullmatch(stem):
                self.reject_file(Path(entry.path), "bad_idempotency_key",
                                 "the file name is not <key>.json")  # fmt: skip
            else:
                items.append(PendingItem(stem, Path(entry.path), info.st_size, info.st_mtime))
        items.sort(key=lambda i: (i.mtime, i.key))
        return items

    def pending_count(self) -> int:
        """How many ``*.json`` files ``pending/`` holds (cheap: no reading, no moving)."""
        if not self.pending_dir.is_dir():
            return 0
        return sum(1 for e in os.scandir(self.pending_dir) if e.name.endswith(".json"))

    def load(self, item: PendingItem) -> bytes | Invalid | None:
        """The measurement's JSON bytes, checked to be one JSON object of at most
        :data:`MAX_MEASUREMENT_BYTES`; :class:`Invalid` (the file moved to ``rejected/``); or None
        when the file has gone (a concurrent submission acknowledged it)."""
        try:
            data = read_bounded(item.path, MAX_MEASUREMENT_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            invalid = Invalid("not_a_file", "a symbolic link")
        else:
            if data is None:
                invalid = Invalid("body_too_large", f"more than {MAX_MEASUREMENT_BYTES} bytes")
            else:
                found = _decode(data)
                if found is None:
                    return data
                invalid = found
        self.reject_file(item.path, invalid.error, invalid.detail)
        return invalid

    # -- outcomes --------------------------------------------------------------------------------

    def acknowledge(self, acks: Iterable[Ack], now: float | None = None) -> int:
        """Record the acknowledgements in the ledger (``fsync``ed), then unlink the pending
        files. Returns how many were recorded."""
        acks = list(acks)
        if not acks:
            return 0
        self.create()
        when = utc_now(now)
        self.submitted.append(
            [
                {"key": a.key, "uid": a.uid, "status": a.status, "collector": a.collector,
                 "time": when}
                for a in acks
            ]
        )  # fmt: skip
        for a in acks:
            with contextlib.suppress(FileNotFoundError):
                (self.pending_dir / f"{a.key}.json").unlink()
        fsync_dir(self.pending_dir)
        self.rotate_ledger()  # a safe point: no pending file relies on these lines any more
        return len(acks)

    def reject(
        self,
        key: str,
        error: str,
        detail: str,
        collector: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Move ``pending/<key>.json`` to ``rejected/`` with its reason; False when it is gone."""
        return self.reject_file(self.pending_dir / f"{key}.json", error, detail, collector, now)

    def reject_file(
        self,
        path: Path,
        error: str,
        detail: str,
        collector: str | None = None,
        now: float | None = None,
    ) -> bool:
        self.create()
        name = path.name
        while (self.rejected_dir / name).exists() or (
            self.rejected_dir / (name + REASON_SUFFIX)
        ).exists():
            name = f"{path.name}.{secrets.token_hex(3)}"
        reason = {"error": error, "detail": detail, "collector": collector,
                  "time": utc_now(now), "file": path.name}  # fmt: skip
        reason_path = self.rejected_dir / (name + REASON_SUFFIX)
        write_durably(reason_path, (json.dumps(reason) + "\n").encode(), self.tmp_dir)
        try:
            os.rename(path, self.rejected_dir / name)
        except FileNotFoundError:
            reason_path.unlink()
            return False
        fsync_dir(self.rejected_dir)
        fsync_dir(path.parent)
        return True

    # -- per-item attempts (for ``spool status``) ------------------------------------------------

    def read_attempts(self) -> dict[str, Any]:
        """``{"items": {key: {"attempts", "last_error", "last_attempt"}}, "last_submission"}``;
        an unreadable file reads as empty (it is bookkeeping, not data)."""
        empty: dict[str, Any] = {"items": {}, "last_submission": None}
        try:
            data = read_bounded(self.attempts_path, MAX_STATE_BYTES)
            value = json.loads(data) if data else None
        except (OSError, ValueError):
            return empty
        if not isinstance(value, dict) or not isinstance(value.get("items"), dict):
            return empty
        value.setdefault("last_submission", None)
        return value

    def write_attempts(self, state: dict[str, Any]) -> None:
        self.create()
        live = {p.name[: -len(".json")] for p in self.pending_dir.glob("*.json")}
        items = {k: v for k, v in state.get("items", {}).items() if k in live}
        data = {"items": items, "last_submission": state.get("last_submission")}
        write_durably(self.attempts_path, json.dumps(data).encode(), self.tmp_dir)

    # -- ledger ----------------------------------------------------------------------------------

    @property
    def ledger_max_bytes(self) -> int:
        """``submitted.jsonl`` is rotated at the next safe point once it is this large."""
        return self.submitted.max_bytes

    @ledger_max_bytes.setter
    def ledger_max_bytes(self, value: int) -> None:
        self.submitted.max_bytes = value

    def ledger(self) -> Iterator[dict[str, Any]]:
        """The acknowledgements still on disk (:meth:`Ledger.records`)."""
        return self.submitted.records()

    def submitted_count(self) -> int:
        """Acknowledgements ever recorded (:meth:`Ledger.count`)."""
        return self.submitted.count()

    def rotate_ledger(self) -> bool:
        """Rotate the ledger when it is due (rule 5); only at a safe point, under ``submit.lock``."""
        return self.submitted.rotate()

    def _unlink_acknowledged(self) -> int:
        """Unlink the pending files whose keys the ledger's tails name (a crash came between the
        ledger line and the unlink); returns how many there were."""
        removed = 0
        for key in self.submitted.tail_keys():
            with contextlib.suppress(FileNotFoundError):
                (self.pending_dir / f"{key}.json").unlink()
                removed += 1
        if removed:
            fsync_dir(self.pending_dir)
        return removed

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``msgwatch spool status`` shows; reads only, creates nothing."""
        items: list[PendingItem] = []
        if self.pending_dir.is_dir():
            for entry in os.scandir(self.pending_dir):
                with contextlib.suppress(FileNotFoundError):
                    if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        items.append(PendingItem(entry.name[:-5], Path(entry.path),
                                                 info.st_size, info.st_mtime))  # fmt: skip
        state = self.read_attempts()
        per_item = {i.key: state["items"].get(i.key) or {} for i in items}
        attempts = [int(v.get("attempts") or 0) for v in per_item.values()]
        errors = [v for v in per_item.values() if v.get("last_error")]
        last = max(errors, key=lambda v: str(v.get("last_attempt") or ""), default=None)
        rejected = 0
        if self.rejected_dir.is_dir():
            rejected = sum(
                1 for p in os.scandir(self.rejected_dir) if not p.name.endswith(REASON_SUFFIX)
            )
        oldest = min((i.mtime for i in items), default=None)
        return {
            "state_dir": str(self.state_dir),
            "pending": {
                "count": len(items),
                "bytes": sum(i.size for i in items),
                "oldest": utc_now(oldest) if oldest is not None else None,
                "attempted": sum(1 for a in attempts if a),
                "max_attempts": max(attempts, default=0),
                "last_error": (
                    {"error": last.get("last_error"), "time": last.get("last_attempt")}
                    if last
                    else None
                ),
            },
            "last_submission": state.get("last_submission"),
            "submitted": self.submitted_count(),
            "rejected": rejected,
            "probe_id": self.read_probe_id(),
        }
