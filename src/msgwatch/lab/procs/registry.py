"""Process records that survive a crash: ``<pid> <start time>`` in a small file.

The start time (field 22 of ``/proc/<pid>/stat``, clock ticks since boot) tells a process from a
later one that reuses its pid, so a record is only ever acted on while that very process runs.
"""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def record(directory: Path, name: str, pid: int) -> Path:
    """Write ``<directory>/<name>.lab`` for ``pid`` atomically; returns its path."""
    tmp, path = directory / f".{name}.tmp", directory / f"{name}.lab"
    tmp.write_text(f"{pid} {start_time(pid)}\n")
    tmp.rename(path)
    return path


def alive(pidfile: Path) -> int | None:
    """The pid recorded in ``pidfile`` if that very process still runs."""
    try:
        pid_text, started = pidfile.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return pid if start_time(pid) == started else None
