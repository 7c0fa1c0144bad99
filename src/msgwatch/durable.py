"""Durable files: what survives a crash or a power cut, and what a failure leaves behind.

Every component that keeps data on disk (the probe's spool, the collector's store and export, the
command line's ``--output``) writes it through these primitives, so the rules hold everywhere:

1. **New content is written beside the target and renamed over it.** A reader, or the next start
   after a crash, sees the old file or the new one, never a mix. The temporary file is
   ``.<name>.<8 hex>.tmp`` in the target's directory (or in ``tmp_dir``, on the same file system),
   created exclusively, so two writers never share one.
2. **Nothing is relied on before it is synced.** The file is ``fsync``ed before the rename, and
   the directory after it (:func:`fsync_dir`): only then has the rename itself survived a crash.
3. **A failure leaves nothing behind.** On any exception (a full disk fails the write or the
   ``fsync``) the temporary file is removed and the target is untouched: a failed write does not
   keep the disk full.
4. **Files are private unless asked otherwise**: mode 0600 exactly, whatever the umask
   (``mode=`` for a file meant to be read by others).
5. **One holder at a time** is an exclusive ``flock`` (:func:`flocked`) on a lock file that is
   never deleted (deleting it would let two holders lock two different files).
6. **Reading back is bounded and follows no link** (:func:`read_bounded`, :func:`open_regular`):
   a state file replaced by a symbolic link, a FIFO or something huge is refused, not followed,
   waited on or read whole.

This module imports nothing of msgwatch.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

PRIVATE_MODE = 0o600


def fsync_dir(path: Path) -> None:
    """``fsync`` the directory ``path``: the entries created, renamed or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(path: Path, tmp_dir: Path | None = None) -> Path:
    """A fresh name for the new content of ``path`` (rule 1)."""
    return (tmp_dir or path.parent) / f".{path.name}.{secrets.token_hex(4)}.tmp"


def write_new(path: Path, chunks: bytes | Iterable[bytes], mode: int = PRIVATE_MODE) -> None:
    """Create ``path`` (it must not exist) with ``chunks`` and ``fsync`` it; on failure it is removed.

    The directory is not synced: the caller renames the file somewhere and syncs that directory
    (several files can share one directory ``fsync``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            for chunk in [chunks] if isinstance(chunks, bytes) else chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def write_durably(
    path: Path,
    chunks: bytes | Iterable[bytes],
    tmp_dir: Path | None = None,
    *,
    mode: int = PRIVATE_MODE,
) -> None:
    """Replace ``path`` with ``chunks``: temporary file, ``fsync``, rename, ``fsync`` of the
    directory (rules 1-4)."""
    tmp = temporary_name(path, tmp_dir)
    write_new(tmp, chunks, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_jsonl(
    path: Path, records: Iterable[Any], tmp_dir: Path | None = None, *, mode: int = PRIVATE_MODE
) -> int:
    """Replace ``path`` with one compact JSON value a line (UTF-8, not escaped to ASCII), as
    :func:`write_durably`; returns how many lines were written."""
    count = 0

    def lines() -> Iterator[bytes]:
        nonlocal count
        for record in records:
            yield json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
            count += 1

    write_durably(path, lines(), tmp_dir, mode=mode)
    return count


@contextlib.contextmanager
def replacing(path: Path, tmp_dir: Path | None = None) -> Iterator[Path]:
    """A temporary path for a writer that makes the file itself (a database's ``COPY TO``):
    on a clean exit the file made there is ``fsync``ed and renamed over ``path`` and the
    directory synced; on an exception it is removed and ``path`` is untouched (rules 1-3)."""
    tmp = temporary_name(path, tmp_dir)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    fsync_dir(path.parent)


@contextlib.contextmanager
def flocked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` (created 0600) for the block; yields False, without
    waiting, when ``wait`` is False and another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_MODE)
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


def read_bounded(path: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it is larger than ``limit`` (symlinks are not followed)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    return None if len(data) > limit else data


def open_regular(path: Path) -> IO[bytes] | None:
    """``path`` open for reading when it is a regular file; None when it is missing, a symbolic
    link or anything else (a FIFO cannot block: it is opened non-blocking and refused)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
            return None
        raise
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        return None
    return handle
