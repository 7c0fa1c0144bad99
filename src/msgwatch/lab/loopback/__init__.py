"""The lab's back-end without namespaces: a mini-Internet on loopback, with real servers, a
catalogue pointing at them, and the ground truth.

``msgwatch demo --mini`` runs the real probe against it and compares each verdict with the expected
one (:mod:`msgwatch.lab.truth`, as ``lab run`` does)::

    with MiniInternet() as net:
        results = run_probe(catalogue=net.catalogue_dir, resolver=net.resolver,
                            ca_bundle=net.ca_bundle)
        rows = truth.against(net.expected, verdicts_of(results))

Design:

- **Loopback only.** Every server binds specific 127.x.y.z addresses (never a wildcard); every
  address in the catalogue is 127.x.y.z; each service owns a /24 that stands for its real networks
  (see :mod:`~msgwatch.lab.loopback.topology`, the address plan and ground truth as data). Servers that
  bind anything else are stopped at start (:func:`~msgwatch.lab.loopback.servers.foreign_binds`).
- **Real behaviour, no mocks.** dnsmasq answers the names, NXDOMAIN and a forged answer; nginx
  serves HTTPS with a per-name certificate from a CA made at start (:mod:`~msgwatch.lab.procs.certs`),
  a certificate for another name, and block pages; coturn answers STUN Binding and challenges TURN
  Allocate with 401. Sockets held open by this process and never served give the timeouts: the kernel
  completes the TCP handshake into the backlog of a listener that never accepts (``tls.timeout``); a
  bound UDP socket that is never read swallows STUN (``udp.timeout``).
- **Nothing left behind**, by the namespace lab's lifecycle (:mod:`msgwatch.lab.lifecycle`).
  :meth:`MiniInternet.stop` is idempotent and also runs on SIGINT/SIGTERM (then the previous handler
  runs) and at interpreter exit; each server is the leader of its own process group, stopped with
  SIGTERM then SIGKILL and checked gone (:mod:`msgwatch.lab.procs`). Records under
  ``/run/msgwatch-minilab/<id>/`` (:mod:`~msgwatch.lab.loopback.runtime`) let :func:`gc` stop what a
  ``kill -9``'d run left; :meth:`MiniInternet.start` calls it first. A failed start keeps only the
  logs its error message names, until the next :func:`gc`.
- **One at a time.** The address plan is fixed, so :meth:`MiniInternet.start` refuses while another
  mini-Internet is up (its owner process alive).
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType

from msgwatch.lab.lifecycle import Guard
from msgwatch.lab.loopback import runtime, servers, topology
from msgwatch.lab.loopback.catalogue import write_catalogue
from msgwatch.lab.loopback.runtime import gc
from msgwatch.lab.loopback.servers import MiniInternetError, unavailable
from msgwatch.lab.loopback.topology import Expectation
from msgwatch.lab.procs.certs import Authority
from msgwatch.lab.procs.registry import record

__all__ = ["Expectation", "MiniInternet", "MiniInternetError", "gc", "unavailable"]


class MiniInternet:
    """Real servers on loopback plus the catalogue and ground truth that describe them."""

    def __init__(self, workdir: Path | None = None) -> None:
        self.id = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.entry = runtime.REGISTRY.entry(self.id)
        self.run_dir = Path(workdir).resolve() if workdir is not None else self.entry
        self.catalogue_dir = self.run_dir / "catalogue"
        self.ca_bundle = self.run_dir / "ca.pem"
        self.resolver = f"{topology.RESOLVER_IP}:53"
        self.expected: list[Expectation] = list(topology.EXPECTED)
        self.servers: list[servers.Server] = []
        self.timings: dict[str, float] = {}
        self._own_run_dir = workdir is None
        self._sockets: list[socket.socket] = []
        self._guard = Guard(self.stop)
        self._state = "new"
        self._keep_logs = False

    def __enter__(self) -> MiniInternet:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> MiniInternet:
        if self._state != "new":
            raise MiniInternetError("a MiniInternet starts once; make a new one")
        problem = unavailable()
        if problem:
            raise MiniInternetError(problem)
        t0 = time.monotonic()
        gc()  # a crashed run's servers would hold the addresses
        others = runtime.live_entries()
        if others:
            raise MiniInternetError(
                "another mini-Internet is up ("
                + ", ".join(f"{i}, owner pid {p}" for i, p in others)
                + "): stop it first"
            )
        self._state = "up"
        try:
            runtime.create_entry(self.id)
            self._guard.arm()
            self._build()
        except BaseException:
            self._keep_logs = True  # the error names a log: keep it (gc() removes it later)
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _build(self) -> None:
        run, certs = self.run_dir, self.run_dir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        ca = Authority()
        ca.write(self.ca_bundle)
        write_catalogue(self.catalogue_dir)

        @functools.cache
        def issue(name: str) -> tuple[Path, Path]:
            return ca.issue(name, certs)

        silent = [(socket.SOCK_STREAM, w) for w in topology.SILENT_TCP]
        for kind, where in silent + [(socket.SOCK_DGRAM, w) for w in topology.SILENT_UDP]:
            sock = socket.socket(socket.AF_INET, kind)
            self._sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
            if kind == socket.SOCK_STREAM:
                sock.listen(64)  # never accepted: handshakes complete, nothing ever answers
        self.servers = servers.build(run, issue)
        for server in self.servers:
            record(self.entry, server.name, server.start(run))
        for server in self.servers:
            server.wait_ready()

    def stop(self) -> None:
        """Stop every server (checked gone), close the sockets, remove the run's files. Idempotent."""
        if self._state != "up":
            return
        self._state = "stopped"
        t0 = time.monotonic()
        failed = [s.name for s in reversed(self.servers) if not s.stop()]
        for sock in self._sockets:
            sock.close()
        self._guard.disarm()
        if failed:  # keep the server records, drop the owner's: gc() may try again at once
            runtime.REGISTRY.disown(self.id)
            raise MiniInternetError(f"could not stop {', '.join(failed)}; run {__name__}.gc()")
        if self._own_run_dir and self._keep_logs:
            for path in self.run_dir.iterdir():
                if path.suffix not in (".log", ".out"):
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        else:
            shutil.rmtree(self.entry, ignore_errors=True)
            if self._own_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            runtime.REGISTRY.tidy()
        self.timings["stop"] = time.monotonic() - t0
