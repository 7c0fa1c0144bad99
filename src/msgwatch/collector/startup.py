"""Why ``collector serve`` cannot start, in one line that names the fix (issue 9, items 14, 22).

:func:`preflight` runs before the server starts and checks, in this order, what a start would
meet: the listening address (the port free and bindable), the data directory (made when missing,
not locked by another collector) and a PostgreSQL index (reachable). The port comes first so that
a collector started twice by mistake touches nothing. Each failure is a :class:`StartupError`
whose text says what failed and what to do; the CLI prints it as one line and exits with its
documented status (8).

These are checks, not reservations: the port is bound and released, the lock taken and released.
The store's real open (in the app's lifespan) meets the same causes if something changed in
between, and any other (an index that belongs to another archive, an unreadable archive); those
are logged as one line with the same fix (``app.py``), never as a traceback.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from msgwatch.collector.store.base import StoreUnavailable


class StartupError(Exception):
    """The collector cannot start; the text names the cause and the fix."""


def describe(exc: StoreUnavailable) -> str:
    """A store's refusal to open, with its fix when it has one."""
    return f"{exc}: {exc.fix}" if exc.fix else str(exc)


def check_port(host: str, port: int) -> None:
    """Bind ``host:port`` as the server will (``SO_REUSEADDR``), then release it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot resolve --host {host}: {exc.strerror}") from exc
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise StartupError(_bind_problem(host, port, exc)) from exc


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{where} is in use (another collector, or another program): stop it, or choose "
            "another --port"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: ports below 1024 need root; choose another --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine (--host)"
    return f"cannot listen on {where}: {exc.strerror or exc} (--host, --port)"


def preflight(host: str, port: int, data_dir: Path, database: str | None) -> None:
    """Raise :class:`StartupError` for the first thing that would stop a start."""
    from msgwatch.collector.store import check_store

    check_port(host, port)
    try:
        check_store(data_dir, database)
    except StoreUnavailable as exc:
        raise StartupError(describe(exc)) from exc
