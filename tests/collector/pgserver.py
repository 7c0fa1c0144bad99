"""A real, throwaway PostgreSQL 15 server for tests and benchmarks.

- :func:`running_postgres` (a context manager, usable outside pytest): ``initdb`` into a fresh
  temporary directory, start the server on ``127.0.0.1`` on a free port with its unix socket in
  that directory and ``fsync=on`` (the store's durability is what is tested), yield the URL of
  its ``postgres`` database; at the end stop it (``pg_ctl stop -m immediate``, then ``-m fast``,
  then SIGKILL of the postmaster if it is still there) and remove the directory — also when the
  body raised. Run as the ``postgres`` system user when we are root (``runuser -u postgres``):
  PostgreSQL refuses to run as root.
- :func:`postgres_url`: that server as a session-scoped pytest fixture; the test is skipped, with
  the reason, when Debian's binaries (``/usr/lib/postgresql/15/bin``) are missing.
- :func:`fresh_database`: a new empty database on that server, its URL. A store's index belongs to
  one data directory (``store_identity``), so every data directory a test opens against
  PostgreSQL needs its own database: ``fresh_database(postgres_url)``.

Only loopback is used: the server listens on 127.0.0.1 and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN = Path(os.environ.get("MSGWATCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
SYSTEM_USER = "postgres"
START_TIMEOUT_S = 30


class PostgresMissing(RuntimeError):
    """PostgreSQL's binaries are not installed."""


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SYSTEM_USER, "--", *argv]
    return argv


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_postgres(argv), capture_output=True, text=True, timeout=timeout, check=False
    )


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a throwaway server; yield ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            raise PostgresMissing(f"{PG_BIN / tool} is missing (Debian package postgresql-15)")
    base = Path(tempfile.mkdtemp(prefix="msgwatch-pg-"))
    data = base / "data"
    log = base / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, SYSTEM_USER, SYSTEM_USER)
        init = _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            timeout=120,
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr or init.stdout}")
        for attempt in range(3):
            port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} "
                f"-c unix_socket_directories={base} -c fsync=on -c max_connections=200"
            )
            start = _run(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "start",
                ],
                timeout=START_TIMEOUT_S + 10,
            )
            started = start.returncode == 0
            if started:
                break
            if attempt == 2:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise RuntimeError(f"PostgreSQL did not start: {start.stderr}{tail}")
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        SERVERS[url] = (data, log, options)
        try:
            yield url
        finally:
            SERVERS.pop(url, None)
    finally:
        if started or (data / "postmaster.pid").exists():
            _stop(data)
        shutil.rmtree(base, ignore_errors=True)


SERVERS: dict[str, tuple[Path, Path, str]] = {}
"""Running servers by URL: data directory, log, the options they were started with."""


def crash(url: str) -> None:
    """Stop the server of ``url`` as a crash would (``pg_ctl stop -m immediate``: no checkpoint,
    every client connection cut)."""
    data, _, _ = SERVERS[url.rsplit("/", 1)[0] + "/postgres"]
    done = _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], 30)
    if done.returncode != 0:
        raise RuntimeError(f"pg_ctl stop failed: {done.stderr}")


def start_again(url: str) -> None:
    """Start a crashed server again on the same port (it replays its WAL)."""
    data, log, options = SERVERS[url.rsplit("/", 1)[0] + "/postgres"]
    argv = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w"]
    done = _run([*argv, "-t", str(START_TIMEOUT_S), "start"], START_TIMEOUT_S + 10)
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL did not start again: {done.stderr}")


def _stop(data: Path) -> None:
    for mode in ("immediate", "fast"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            done = _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop"], 30)
            if done.returncode == 0 or not (data / "postmaster.pid").exists():
                return
    with contextlib.suppress(OSError, ValueError, IndexError):  # last resort
        pid = int((data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def fresh_database(url: str) -> str:
    """Create an empty database on the server of ``url``; its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server for the session (skipped when not installed)."""
    try:
        with running_postgres() as url:
            yield url
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not installed: {exc}")
