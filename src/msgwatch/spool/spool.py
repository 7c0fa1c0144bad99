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
4. The probe id (``STATE/probe-id``) is 32 random hex digits made once, derived from nothing about
   the person or the machine; it is never sent and never written into a measurement. An
   idempotency key is ``<network tag>.<32 random hex>`` (:meth:`Spool.new_key`): the tag is the
   first 16 hex digits of HMAC-SHA256(probe id, ``"<probe_cc>/<probe_asn>"``) of the measurement,
   the same for every measurement this installation makes on one network and unrelated across
   networks. So a collector can tell one busy probe on a network from many probes there, but
   cannot link an installation across the networks it is carried to, nor recover the probe id.
   (Versions before this one sent ``<probe-id>.<uuid4 hex>``, linkable everywhere; their pending
   files keep their names and are sent as they are.)
5. The ledger is bounded: at a *safe point* — right after :meth:`Spool.recover`'s repair, and at the
   end of :meth:`Spool.acknowledge`, after the acknowledged pending files are unlinked and the
   directory ``fsync``ed — a ``submitted.jsonl`` of :attr:`Spool.ledger_max_bytes` or more is renamed
   to ``submitted-<T>.jsonl``, the previous generation, where ``T`` is how many acknowledgements
   that file and every generation before it held. At a safe point no pending file's key is only in
   the ledger, so the rename loses nothing the repair needs (and the repair reads the previous
   generation's tail too, for a caller that acknowledged without recovering first). The rename is
   the one commit point: ``T`` travels in the name, so no second file has to agree with it. Older
   generations are then unlinked; a crash before that leaves two, and the larger ``T`` wins.
   ``spool status`` adds ``T`` to the records of ``submitted.jsonl``: it never reads more than that
   one file, which is below the threshold plus one batch (an older version's unrotated ledger
   excepted, until the next submission rotates it).

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
import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

STATE_ENV = "MSGWATCH_STATE_DIR"
ROOT_STATE_DIR = Path("/var/lib/msgwatch")
MAX_MEASUREMENT_BYTES = 4 * 1024 * 1024
"""The collector's per-measurement limit: a bigger pending file could never be accepted."""
MAX_LEDGER_LINE = 64 * 1024
LEDGER_TAIL_BYTES = 512 * 1024
"""How much of each ledger generation's end :meth:`Spool.recover` reads (more than one batch of
lines: a batch is at most 500)."""
LEDGER_MAX_BYTES = 1024 * 1024
"""``submitted.jsonl`` is rotated at a safe point once it is this large (about 7,000 lines)."""
MAX_LEDGER_TOTAL = 10**18 - 1
MAX_STATE_BYTES = 16 * 1024 * 1024
TMP_MAX_AGE = 3600.0
KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PROBE_ID_RE = re.compile(r"[0-9a-f]{32}")
"""The collector's rule for an idempotency key (``check_idempotency_key``)."""
GENERATION_RE = re.compile(r"submitted-([0-9]{1,18})\.jsonl")
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


def utc_now(clock: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if clock is None else clock, dt.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Temporary file (mode 0600), ``fsync``, rename over ``path``, ``fsync`` of the directory."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit`` (symlinks are not followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def open_regular(path: Path) -> IO[bytes] | None:
    """``path`` open for reading when it is a regular file; None when it is missing, a symbolic
    link or anything else (a FIFO cannot block: it is opened non-blocking and refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        return None
    return handle


def _ledger_record(line: bytes) -> dict[str, Any] | None:
    """One ledger line as a record with a valid ``key``; None for a damaged line."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    key = record.get("key") if isinstance(record, dict) else None
    return record if isinstance(key, str) and KEY_RE.fullmatch(key) else None


@contextlib.contextmanager
def flocked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the block; yields False, without
    waiting, when ``wait`` is False and another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
        self.ledger_max_bytes = ledger_max_bytes
        """``submitted.jsonl`` is rotated at the next safe point once it is this large."""
        self.root = state_dir / "spool"
        self.pending_dir = self.root / "pending"
        self.tmp_dir = self.root / "tmp"
        self.rejected_dir = self.root / "rejected"
        self.ledger_path = self.root / "submitted.jsonl"
        self.attempts_path = self.root / "attempts.json"
        self.probe_id_path = state_dir / "probe-id"
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
        """The installation's id, made on first use (a damaged file is replaced by a new id)."""
        current = self.read_probe_id()
        if current is not None:
            return current
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = secrets.token_hex(16)
        tmp = self.state_dir / f".probe-id.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:  # the temporary file goes on every path (a full disk fails the write or the fsync)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(fresh + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        try:
            if self.probe_id_path.exists():  # damaged: replace it
                os.replace(tmp, self.probe_id_path)
            else:
                with contextlib.suppress(FileExistsError):  # two first runs: one id wins
                    os.link(tmp, self.probe_id_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(self.state_dir)
        winner = self.read_probe_id()
        return winner if winner is not None else fresh

    def read_probe_id(self) -> str | None:
        try:
            data = read_bounded(self.probe_id_path, 256)
        except OSError:
            return None
        text = (data or b"").decode("ascii", "replace").strip()
        return text if PROBE_ID_RE.fullmatch(text) else None

    def network_tag(self, measurement: Mapping[str, Any]) -> str:
        """16 hex digits naming (this installation, the measurement's network), rule 4."""
        cc, asn = measurement.get("probe_cc"), measurement.get("probe_asn")
        network = f"{cc if isinstance(cc, str) else 'ZZ'}/{asn if isinstance(asn, str) else 'AS0'}"
        mac = hmac.new(bytes.fromhex(self.probe_id()), network.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:16]

    def new_key(self, measurement: Mapping[str, Any]) -> str:
        """A fresh idempotency key: the network tag, then 32 random hex digits."""
        return f"{self.network_tag(measurement)}.{secrets.token_hex(16)}"

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
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data.encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
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
        lines = "".join(
            json.dumps(
                {"key": a.key, "uid": a.uid, "status": a.status, "collector": a.collector,
                 "time": when},
                separators=(",", ":"),
            ) + "\n"
            for a in acks
        )  # fmt: skip
        created = not self.ledger_path.exists()
        fd = os.open(self.ledger_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                if handle.read(1) != b"\n":  # a torn last line: start on a fresh one
                    lines = "\n" + lines
            handle.write(lines.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            fsync_dir(self.root)
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

    def _generations(self) -> list[tuple[int, Path]]:
        """The previous generations ``submitted-<T>.jsonl`` (regular files), smallest ``T`` first;
        more than one only after a crash in the middle of a rotation."""
        found: list[tuple[int, Path]] = []
        if not self.root.is_dir():
            return found
        for entry in os.scandir(self.root):
            match = GENERATION_RE.fullmatch(entry.name)
            with contextlib.suppress(OSError):
                if match and entry.is_file(follow_symlinks=False):
                    found.append((int(match.group(1)), Path(entry.path)))
        found.sort()
        return found

    def _previous(self) -> tuple[int, Path | None]:
        """``(T, path)`` of the newest previous generation; ``(0, None)`` before any rotation."""
        generations = self._generations()
        return generations[-1] if generations else (0, None)

    @staticmethod
    def _lines(path: Path) -> Iterator[bytes]:
        """The lines of one ledger file, each at most :data:`MAX_LEDGER_LINE` bytes (a longer
        one is skipped whole); nothing when the file is missing or not a regular file."""
        handle = open_regular(path)
        if handle is None:
            return
        with handle:
            while True:
                line = handle.readline(MAX_LEDGER_LINE)
                if not line:
                    return
                if not line.endswith(b"\n") and len(line) >= MAX_LEDGER_LINE:
                    while (rest := handle.readline(MAX_LEDGER_LINE)) and not rest.endswith(b"\n"):
                        pass  # skip the rest of an oversized line
                    continue
                yield line

    def _records(self, path: Path) -> Iterator[dict[str, Any]]:
        for line in self._lines(path):
            record = _ledger_record(line)
            if record is not None:
                yield record

    def ledger(self) -> Iterator[dict[str, Any]]:
        """The records still on disk: the previous generation's, then ``submitted.jsonl``'s;
        damaged lines are skipped."""
        _, previous = self._previous()
        if previous is not None:
            yield from self._records(previous)
        yield from self._records(self.ledger_path)

    def submitted_count(self) -> int:
        """Acknowledgements ever recorded: the previous generation's ``T`` plus the records of
        ``submitted.jsonl`` (which rotation keeps near :attr:`ledger_max_bytes`)."""
        total, _ = self._previous()
        return total + sum(1 for _ in self._records(self.ledger_path))

    @staticmethod
    def _tail_keys(path: Path) -> list[str]:
        """The keys in the last :data:`LEDGER_TAIL_BYTES` of one ledger file."""
        handle = open_regular(path)
        if handle is None:
            return []
        with handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - LEDGER_TAIL_BYTES))
            tail = handle.read(LEDGER_TAIL_BYTES)
        keys = []
        for line in tail.split(b"\n"):
            record = _ledger_record(line)  # None for the first, cut line and a torn last one
            if record is not None:
                keys.append(record["key"])
        return keys

    def _unlink_acknowledged(self) -> int:
        """Unlink the pending files whose keys the ledger's tails name (a crash came between the
        ledger line and the unlink); returns how many there were."""
        _, previous = self._previous()
        keys = self._tail_keys(self.ledger_path)
        if previous is not None:
            keys += self._tail_keys(previous)
        removed = 0
        for key in dict.fromkeys(keys):
            with contextlib.suppress(FileNotFoundError):
                (self.pending_dir / f"{key}.json").unlink()
                removed += 1
        if removed:
            fsync_dir(self.pending_dir)
        return removed

    def rotate_ledger(self) -> bool:
        """At a safe point (see the module's rule 5): rename a ``submitted.jsonl`` of
        :attr:`ledger_max_bytes` or more to ``submitted-<T>.jsonl``, ``fsync`` the directory, then
        unlink older generations. Returns True when it rotated. Only under ``submit.lock``."""
        generations = self._generations()
        rotated = False
        try:
            info = os.lstat(self.ledger_path)
            due = stat.S_ISREG(info.st_mode) and info.st_size >= self.ledger_max_bytes
        except FileNotFoundError:
            due = False
        if due:
            before = generations[-1][0] if generations else 0
            count = sum(1 for _ in self._records(self.ledger_path))
            total = min(before + count, MAX_LEDGER_TOTAL)
            target = self.root / f"submitted-{total}.jsonl"
            os.rename(self.ledger_path, target)  # the commit point
            fsync_dir(self.root)
            generations = [g for g in generations if g[1] != target] + [(total, target)]
            rotated = True
        stale = [path for _, path in generations[:-1]]
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if stale:
            fsync_dir(self.root)
        return rotated

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
