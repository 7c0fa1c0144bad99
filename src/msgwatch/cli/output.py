"""What the commands write for the user: where (``--output``), how (private, atomic), and what a
failure to write means in words that name the fix.

The ``--output`` rule, the same for every command that writes measurements (``run``, ``demo``,
``demo --mini``, ``lab run``): ``--output PATH`` is the measurements file (JSONL, one measurement a
line). When PATH is an existing directory, or ends with ``/``, the file goes inside it under the
command's default name (``msgwatch-<time>.jsonl`` for ``run``). Without ``--output``, the default
name in the current directory. A command that also writes an HTML report writes it beside the
measurements file, with ``.html`` in place of ``.jsonl``. Nothing else goes there: internals (the
lab's spools, locks, rulesets) live apart.

Files are created mode 0600 (owner only, whatever the umask): a measurement says which network it
was taken on. ``chmod`` a file to share it. Each is written to ``<name>.tmp`` beside it, ``fsync``ed,
and renamed over the target; the temporary file is removed on every failure path, so a full disk
is not kept full by what a failed run left behind.

Imports are light on purpose: ``msgwatch --help`` loads this module.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

PRIVATE_MODE = 0o600
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def resolve_output(given: str | os.PathLike[str] | None, default_name: str) -> Path:
    """The measurements file for ``--output`` (see the module's rule)."""
    if given is None:
        return Path(default_name)
    text = os.fspath(given)
    path = Path(text)
    if text.endswith("/") or path.is_dir():
        return path / default_name
    return path


def report_path(measurements: Path) -> Path:
    """The HTML report beside a measurements file: ``run.jsonl`` → ``run.html``."""
    return measurements.with_suffix(".html")


def write_private(path: Path, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` to ``path`` atomically, mode 0600: ``<name>.tmp`` beside it, ``fsync``,
    rename. The temporary file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_MODE)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # a leftover of an older version may have had another mode
        with os.fdopen(fd, "wb") as handle:
            fd = -1
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_jsonl(path: Path, measurements: list[dict[str, Any]]) -> None:
    """The measurements, one JSON object a line (see :func:`write_private`)."""
    write_private(
        path,
        (
            json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            for m in measurements
        ),
    )


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
