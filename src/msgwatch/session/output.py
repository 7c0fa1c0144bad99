"""Where a run's measurements go (``--output``), how they are written, and what a failure to
write them means, in words that name the fix.

The ``--output`` rule, the same for every command that writes measurements (``run``, ``demo``,
``demo --mini``, ``lab run``): ``--output PATH`` is the measurements file (JSONL, one measurement a
line). When PATH is an existing directory, or ends with ``/``, the file goes inside it under the
command's default name (``msgwatch-<time>.jsonl`` for ``run``). Without ``--output``, the default
name in the current directory. A command that also writes an HTML report writes it beside the
measurements file, with ``.html`` in place of ``.jsonl``. Nothing else goes there: internals (the
lab's spools, locks, rulesets) live apart.

Files are written by :mod:`msgwatch.durable`: mode 0600 (owner only, whatever the umask: a
measurement says which network it was taken on; ``chmod`` a file to share it), atomically, and no
temporary file outlives a failure, so a full disk is not kept full by what a failed run left
behind. A missing parent directory is created first.

Imports are light on purpose: ``msgwatch --help`` loads this module.
"""

from __future__ import annotations

import datetime as dt
import errno
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def timestamped_name(prefix: str = "msgwatch") -> str:
    """``<prefix>-<UTC time>.jsonl``: a command's measurements file when ``--output`` names none."""
    return f"{prefix}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.jsonl"


def resolve_output(given: str | os.PathLike[str] | None, default_name: str) -> Path:
    """The measurements file for ``--output`` (see the module's rule)."""
    if given is None:
        return Path(default_name)
    text = os.fspath(given)
    path = Path(text)
    if text.endswith("/") or path.is_dir():
        return path / default_name
    return path


def output_path(given: str | os.PathLike[str] | None, prefix: str = "msgwatch") -> Path:
    """``--output`` by the module's rule, with ``<prefix>-<time>.jsonl`` as the default name."""
    return resolve_output(given, timestamped_name(prefix))


def report_path(measurements: Path) -> Path:
    """The HTML report beside a measurements file: ``run.jsonl`` → ``run.html``."""
    return measurements.with_suffix(".html")


def write_private(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` (see the module's notes)."""
    from msgwatch.durable import write_durably

    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, chunks)


def write_jsonl(path: Path, measurements: Iterable[dict[str, Any]]) -> None:
    """The measurements, one JSON object a line (see the module's notes)."""
    from msgwatch.durable import write_jsonl as write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, measurements)


def explain(exc: OSError, elsewhere: str) -> str:
    """The system's words for ``exc`` and what to do about it; ``elsewhere`` names the option
    that points somewhere else (``pass --state-dir on another disk``)."""
    reason = exc.strerror or str(exc)
    if exc.errno in NO_SPACE:
        return f"{reason} (the file system is full: free space there, or {elsewhere})"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{reason} (run as a user who may write there, or {elsewhere})"
    if exc.errno == errno.EROFS:
        return f"{reason} (mount it read-write, or {elsewhere})"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return f"{reason} (a file is in the way of a directory or the other way round: {elsewhere})"
    return reason


def storage_failure(
    *,
    spool_root: Path,
    pending_dir: Path,
    output: Path,
    total: int,
    spooled: int,
    spool_error: OSError | None,
    output_error: OSError | None,
) -> str | None:
    """One message for what became of a run's measurements when the spool, the output or both
    could not be written; None when both were written."""
    if spool_error is None and output_error is None:
        return None
    parts = []
    if spool_error is not None:
        where = explain(spool_error, "pass --state-dir on another disk")
        partial = f" ({spooled} of {total} were spooled)" if spooled else ""
        parts.append(f"cannot spool the measurements in {spool_root}: {where}{partial}")
    if output_error is not None:
        where = explain(output_error, "choose another --output")
        verb = "nor write them to" if spool_error is not None else "cannot write"
        parts.append(f"{verb} {output}: {where}")
    if spool_error is None:
        parts.append(f"the measurements are safe in the spool ({pending_dir})")
    elif output_error is None:
        parts.append(f"they are in {output} only, where no submission will find them")
    elif spooled:
        parts.append(f"only {spooled} of this run's {total} measurements were kept, in the spool")
    else:
        parts.append("this run's measurements are lost")
    return "; ".join(parts)
