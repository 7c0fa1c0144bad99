"""The collector's configuration: one frozen value, made by the CLI (options, then environment).

Every field has its meaning next to it. Limits that the doc fixes (4 MiB, 32 MiB, 500 items, 64
levels) live in ``models.py``; what an operator tunes lives here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def default_data_dir() -> Path:
    """``$MSGWATCH_COLLECTOR_DIR``, else ``/var/lib/msgwatch-collector`` for root (beside, not
    inside, the probe's ``/var/lib/msgwatch``) and ``$XDG_DATA_HOME/msgwatch/collector``
    (``~/.local/share/...``) for others."""
    if value := os.environ.get("MSGWATCH_COLLECTOR_DIR"):
        return Path(value)
    if os.geteuid() == 0:
        return Path("/var/lib/msgwatch-collector")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "msgwatch" / "collector"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Archive (``archive/``) and the default SQLite index (``index.sqlite3``)."""
    database: str | None = None
    """``postgresql://…`` for a PostgreSQL index; ``None``: SQLite in ``data_dir``."""
    host: str = "127.0.0.1"
    """Address to listen on (``serve`` only)."""
    port: int = 8080
    """TCP port to listen on (``serve`` only)."""
    probe_tokens_file: Path | None = None
    """One bearer token per line; when set, every submission needs one of them (else 401)."""
    admin_token: str | None = None
    """When set, ``GET /metrics`` needs ``Authorization: Bearer <admin token>``."""
    rate_limit: float = 0.0
    """Submissions per second per client (token, else address), burst 2N; 0: no limit."""
    rate_limit_clients: int = 100_000
    """At most this many clients' buckets are held (in memory only); the least recent go first."""
    backend_version: str = ""
    """Answered by ``POST /report``; the package version when empty."""
    graceful_seconds: float = 10.0
    """On SIGTERM/SIGINT, how long requests in flight may take to finish."""
    max_connections: int = 1024
    """Client connections held at once (``transport.py``: a full table closes the one waiting
    longest for a request head)."""
    max_connections_per_client: int = 64
    """Client connections held at once per address (an IPv6 /64); trusted proxies are exempt."""
    header_timeout: float = 10.0
    """Seconds a request head may take to arrive."""
    forwarded_allow_ips: tuple[str, ...] = ()
    """Proxy addresses or networks whose ``X-Forwarded-For`` names the client; none by default."""
    analysis_dir: Path | None = None
    """The analysis's output directory (``msgwatch analyse OUT``), whose last committed pass
    ``/api/v1/events``, ``aggregates``, ``observations`` and ``verdicts`` serve; ``None``: they
    answer 503 ``analysis_unavailable``."""
    analyse_every: float = 0.0
    """Seconds between the collector's own incremental passes over its archive into
    ``analysis_dir`` (``analyser.py``); 0: none (another process writes it, e.g. a systemd timer)."""
    analysis_bucket: int = 3600
    """The bucket of those passes' aggregates and events, in seconds."""
    dashboard: bool = False
    """Mount the web dashboard (msgwatch.dashboard) at ``/dashboard`` over ``analysis_dir``."""
