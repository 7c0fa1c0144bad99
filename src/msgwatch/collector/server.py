"""Run the collector: one uvicorn process, uvloop and httptools, graceful stop on SIGTERM/SIGINT.

Choices, each for a reason:

- **One process.** The store's writer gathers concurrent submissions into one group commit; with
  several worker processes each would hold its own writer on the same archive. One process on
  uvloop sustains the doc's target; scale up with a faster disk, not workers.
- **No access log from uvicorn** (``access_log=False``): it prints client addresses. Ours
  (``accesslog.py``) does not.
- **Hostile clients** (``transport.py``): uvicorn's httptools protocol with bounds on the request
  head (64 KiB, 100 fields, ``--header-timeout``), on connections (``--max-connections``, in all
  and per client), and a lingering close after an early answer (a 413 reaches its client). No
  WebSocket upgrade (``ws="none"``): the collector has no WebSocket route, and an upgraded
  connection would leave the protocol that holds these bounds.
- **No uvicorn proxy headers** (``proxy_headers=False``): the client address that is scrubbed from
  bodies and used for rate limits is the socket's peer, or, only when the peer is one of
  ``--forwarded-allow-ips``, the client its ``X-Forwarded-For`` names (``transport.ForwardedFor``:
  uvicorn's own middleware would trust 127.0.0.1 by default and takes malformed entries as
  addresses).
- **Garbage collector tuned** (``tune_gc``): a 30 KB measurement is ~10,000 small objects, and
  while 50 of them wait for a group commit the default thresholds run full collections over
  millions of objects — pauses that show up in the p99. Measurements hold no reference cycles
  (reference counting frees them), so collections are made rarer and the objects of start-up are
  frozen out of them.
- **Graceful stop** (tested by ``tests/collector/test_shutdown.py`` on a real ``collector serve``,
  SQLite and PostgreSQL, SIGTERM and SIGINT). uvicorn's own SIGTERM/SIGINT handling, step by step:

  1. within 0.1 s (uvicorn's tick) the listening socket is closed: a new connection is refused;
     idle keep-alive connections are closed at once, and a connection with a request in flight
     is marked to close after its answer;
  2. requests in flight are let finish — a body still arriving may end, a group commit is
     waited for, the answer is sent (``Connection: close``) — for at most ``graceful_seconds``
     (``--graceful-seconds``, default 10; uvicorn takes whole seconds, so it is rounded up, and 0
     waits for nothing). A client that trickles its body would otherwise hold the process for the
     body timeout (30 s, ``handlers.py``): the bound wins;
  3. at the bound uvicorn cancels what still runs; ``cutshort.CutShort`` answers each such request
     503 ``storage_unavailable`` in JSON (nothing acknowledged; a retry with the same key stores
     it once — a cancelled waiter whose group was already being written is stored, unacknowledged,
     and its retry answers ``duplicate``);
  4. the lifespan's end closes the store, which first writes the groups still queued;
  5. the process exits 0 (uvicorn would re-raise the signal and die by it: a requested stop is
     a clean exit).

  So the stop takes at most ``graceful_seconds`` plus the store's close (the last group commit);
  under load with nothing slow in flight, a fraction of a second. Every 200 was stored (the
  acknowledgement follows the commit). A second SIGINT while stopping skips the wait and the
  store's close (uvicorn's "force quit"): as after a ``kill -9``, the store's recovery at the next
  start deals with it, and a ``kill -9`` needs no handling here at all.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from msgwatch.collector.app import create_app
from msgwatch.collector.settings import Settings
from msgwatch.collector.transport import (
    Admission,
    ForwardedFor,
    Limits,
    Proxies,
    fit_file_limit,
    parse_networks,
    protocol_class,
)

logger = logging.getLogger("msgwatch.collector")


def configure_logging(level: str = "info") -> None:
    """Plain lines on stderr. The access logger is ``msgwatch.collector.access``."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("uvicorn.access").disabled = True


def limits_of(settings: Settings) -> Limits:
    return Limits(
        max_connections=settings.max_connections,
        max_per_client=settings.max_connections_per_client,
        header_timeout=settings.header_timeout,
    )


def uvicorn_config(
    settings: Settings, log_level: str = "info", app: Any = None, limits: Limits | None = None
) -> uvicorn.Config:
    """The server's configuration (the module's notes); ``app``: an already made
    ``create_app(settings, ...)`` (the tests' in-process servers), else one is made. Its
    ``/metrics`` gets the transport's counters (``app.state.transport``)."""
    app = app if app is not None else create_app(settings)
    proxies = Proxies(parse_networks(settings.forwarded_allow_ips))
    admission = Admission(limits or limits_of(settings), proxies)
    app.state.transport = admission
    return uvicorn.Config(
        ForwardedFor(app, proxies, admission),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_class(admission),
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=graceful_timeout(settings.graceful_seconds),
        timeout_keep_alive=15,
    )


def graceful_timeout(seconds: float) -> int:
    """uvicorn's ``timeout_graceful_shutdown``: whole seconds, rounded up; never ``None``, which
    would wait for ever (``int(0.5) or None`` did)."""
    return math.ceil(max(seconds, 0.0))


def tune_gc() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM start the graceful stop; unlike uvicorn's, not re-raised afterwards."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        stops = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings, log_level: str = "info") -> bool:
    """Serve until SIGTERM/SIGINT; ``False`` when the server never started (the store could not be
    opened, the address could not be bound)."""
    limits = fit_file_limit(limits_of(settings))
    server = _Server(uvicorn_config(settings, log_level, limits=limits))
    logger.info(
        "at most %d connections, %d per client; request heads within %g s, %d bytes, %d fields%s",
        limits.max_connections,
        limits.max_per_client,
        limits.header_timeout,
        limits.max_head_bytes,
        limits.max_headers,
        f"; X-Forwarded-For read from {', '.join(settings.forwarded_allow_ips)}"
        if settings.forwarded_allow_ips
        else "",
    )
    tune_gc()
    server.run()
    return server.started
