"""Type ``tor_reach``: reachability of Tor's directory authorities, relays and bridges, like OONI's
``tor`` test (ts-023), without bootstrapping tor.

For each target of ``params.targets`` (``name``, ``address``, ``port``, ``protocol``,
``fingerprint``), at most :data:`PARALLEL` at a time, each within :data:`TARGET_TIMEOUT`:

- ``or_port`` / ``or_port_dirauth``: TCP connect, then a TLS handshake (certificate not verified:
  a relay's link certificate is self-signed) — "connect" and "handshake";
- ``dir_port``: TCP connect, then ``GET /tor/status-vote/current/consensus`` (at most
  :data:`MAX_BODY` bytes read); "handshake" is an HTTP 200 answer;
- ``obfs4``: TCP connect, then a real obfs4 handshake: Debian's ``obfs4proxy`` runs as a
  pluggable-transport client (one for the run, in its own directory under ``ctx.workdir``, always
  stopped) and a SOCKS5 CONNECT through it, with the target's ``params`` ``cert`` and
  ``iat-mode`` as the SOCKS username (the PT protocol's way), is answered only once the obfs4
  handshake with the bridge is done. No Tor link handshake follows (as in OONI).

``run.keys``: ``targets`` keyed by :func:`target_id`, each with
``failure``, ``summary`` {connect, handshake}, ``target_address``, ``target_name``,
``target_protocol``, ``target_source`` (address and name scrubbed for a private entry), and
``{or_port,dir_port,obfs4,or_port_dirauth}_{total,accessible}``. The stages ``connect`` and
``handshake`` carry the first failure of their kind over all targets. Nothing is yielded (no
tunnel).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import re
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention.model import Context, Entry, Run, Tunnel
from msgwatch.steps.http import Get, http_get
from msgwatch.steps.net import tcp_connect
from msgwatch.steps.socks import socks5_connect
from msgwatch.steps.tls import tls_handshake

PROTOCOLS = ("or_port", "or_port_dirauth", "dir_port", "obfs4")
PARALLEL = 4
TARGET_TIMEOUT = 10.0
MAX_TARGETS = 64
MAX_BODY = 256 * 1024
CONSENSUS = "/tor/status-vote/current/consensus"
MAX_PT_LINES, MAX_LINE = 32, 512
"""Lines of ``obfs4proxy``'s PT protocol read at most, and bytes kept of each."""
_CMETHOD = re.compile(r"^CMETHOD obfs4 socks5 127\.0\.0\.1:(\d{1,5})$")
_FIELDS = {"name", "address", "port", "protocol", "fingerprint", "params", "source"}


def check_params(entry: Entry) -> list[str]:
    """Problems with ``params.targets`` ([] when fine)."""
    targets = entry.params.get("targets")
    unknown = sorted(set(entry.params) - {"targets"})
    problems = [f"unknown params: {', '.join(unknown[:5])}"] if unknown else []
    if not isinstance(targets, list) or not 0 < len(targets) <= MAX_TARGETS:
        return [*problems, f"targets: a list of 1 to {MAX_TARGETS} targets"]
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping):
            problems.append(f"targets.{i}: not a table")
            continue
        problems += [f"targets.{i}.{p}" for p in _check_target(target)]
    return problems


def _check_target(target: Mapping[str, Any]) -> list[str]:
    problems = [f"{k}: unknown" for k in sorted(set(target) - _FIELDS)][:3]
    name = target.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        problems.append("name: 1 to 64 characters")
    try:
        ipaddress.ip_address(str(target.get("address")))
    except ValueError:
        problems.append("address: an IP address")
    port = target.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        problems.append("port: 1 to 65535")
    if target.get("protocol") not in PROTOCOLS:
        problems.append(f"protocol: one of {', '.join(PROTOCOLS)}")
    fpr = target.get("fingerprint", "")
    if not isinstance(fpr, str) or (fpr and (len(fpr) != 40 or not _hex(fpr))):
        problems.append("fingerprint: 40 hex digits")
    return problems


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def target_id(target: Mapping[str, Any]) -> str:
    """sha256 of ``address:port``, fingerprint and protocol (OONI keys by the first two; the
    protocol keeps two tests of one port apart)."""
    key = f"{target['address']}:{target['port']}{target.get('fingerprint', '')}{target['protocol']}"
    return hashlib.sha256(key.encode()).hexdigest()


class PTClient:
    """``obfs4proxy`` as a managed pluggable-transport client: started on first use, its SOCKS
    port read from its ``CMETHOD obfs4 socks5 127.0.0.1:PORT`` line (bounded), always stopped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.workdir: Path | None = None
        self._lock = asyncio.Lock()

    async def socks_port(self, deadline: float) -> int:
        async with self._lock:
            if self.port is None:
                self.port = await self._start(deadline)
            return self.port

    async def _start(self, deadline: float) -> int:
        self.workdir = Path(tempfile.mkdtemp(prefix="obfs4-", dir=self.ctx.workdir))
        env = {"TOR_PT_MANAGED_TRANSPORT_VER": "1", "TOR_PT_CLIENT_TRANSPORTS": "obfs4",
               "TOR_PT_STATE_LOCATION": str(self.workdir), "TOR_PT_EXIT_ON_STDIN_CLOSE": "1"}  # fmt: skip
        exe = self.ctx.executables.get("obfs4proxy") or shutil.which("obfs4proxy") or "obfs4proxy"
        self.proc = await asyncio.create_subprocess_exec(
            exe, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        async with asyncio.timeout_at(deadline):
            for _ in range(MAX_PT_LINES):
                line = (await self.proc.stdout.readline())[:MAX_LINE].decode("ascii", "replace")
                found = _CMETHOD.match(line.strip())
                if found and 0 < int(found.group(1)) < 65536:
                    return int(found.group(1))
                if not line or line.startswith(("CMETHOD-ERROR", "ENV-ERROR", "VERSION-ERROR")):
                    break
        raise F.ProbeFailure(F.unknown("obfs4proxy did not offer an obfs4 SOCKS port"))

    async def stop(self) -> None:
        try:
            if self.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # it keeps no state worth a grace
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        await self.proc.wait()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)


async def _obfs4(run: Run, pt: PTClient, target: Mapping[str, Any], deadline: float) -> None:
    """The obfs4 handshake with the bridge, through the PT client."""
    params = target.get("params") or {}
    args = f"cert={params.get('cert', '')};iat-mode={params.get('iat-mode', '0')}"
    ip, port = str(target["address"]), int(target["port"])
    conn = await socks5_connect(run.trace, run.trace.new_transaction(), "127.0.0.1",
                                await pt.socks_port(deadline), ip, port, deadline,
                                username=args, password="\0")  # fmt: skip
    conn.close()


async def _measure(
    run: Run, ctx: Context, target: Mapping[str, Any], pt: PTClient
) -> dict[str, Any]:
    """One target's connect and handshake (each ``None`` or a failure string; ``None`` handshake
    also when none was tried)."""
    trace, protocol = run.trace, target["protocol"]
    ip, port = str(ipaddress.ip_address(target["address"])), int(target["port"])
    deadline = asyncio.get_running_loop().time() + TARGET_TIMEOUT
    connect: str | None = None
    handshake: str | None = None
    conn = None
    try:
        conn = await tcp_connect(trace, trace.new_transaction(), ip, port, deadline)
    except Exception as exc:
        connect = F.classify(exc)
    if conn is not None:
        try:
            if protocol in ("or_port", "or_port_dirauth"):
                await tls_handshake(conn, None, deadline, verify=False, alpn=())
            elif protocol == "dir_port":
                got = await http_get(conn, trace, conn.txid, Get.to("http", ip, port, CONSENSUS,
                                     max_body=MAX_BODY), deadline)  # fmt: skip
                handshake = got.failure or (None if got.status == 200
                                            else F.helper_status(got.status))  # fmt: skip
            elif protocol == "obfs4":
                conn.close()
                await _obfs4(run, pt, target, deadline)
        except Exception as exc:
            handshake = F.classify(exc)
        finally:
            conn.close()
    return {"connect": connect, "handshake": handshake}


def _record(entry: Entry, target: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    hidden = entry.private or bool(target.get("source"))
    return {
        "failure": result["connect"] or result["handshake"],
        "summary": {"connect": {"failure": result["connect"]},
                    "handshake": {"failure": result["handshake"]}},
        "target_address": "[scrubbed]" if hidden else f"{target['address']}:{target['port']}",
        "target_name": "[scrubbed]" if hidden else target["name"],
        "target_protocol": target["protocol"],
        "target_source": str(target.get("source", ""))[:200],
    }  # fmt: skip


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Measure every target; record ``connect``/``handshake`` from the first failure of each."""
    problems = check_params(entry)
    if problems:
        raise run.fail("connect", F.unknown("invalid params: " + "; ".join(problems))[:200])
    targets: list[Mapping[str, Any]] = list(entry.params["targets"])
    gate = asyncio.Semaphore(PARALLEL)
    pt = PTClient(ctx)

    async def one(target: Mapping[str, Any]) -> dict[str, Any]:
        async with gate:
            return await _measure(run, ctx, target, pt)

    results: list[dict[str, Any]] = []
    async with run.stage("connect") as detail:
        try:
            async with asyncio.timeout(ctx.budget(entry.type)):
                results = list(await asyncio.gather(*(one(t) for t in targets)))
        finally:
            await asyncio.shield(pt.stop())
        run.keys |= keys(entry, targets, results)
        detail["accessible"] = sum(1 for r in results if not (r["connect"] or r["handshake"]))
        first = next((r["connect"] for r in results if r["connect"]), None)
        if first:
            raise F.ProbeFailure(first)
    async with run.stage("handshake"):
        first = next((r["handshake"] for r in results if r["handshake"]), None)
        if first:
            raise F.ProbeFailure(first)
    yield None


def keys(
    entry: Entry, targets: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """OONI ``tor``'s test keys for these results."""
    out: dict[str, Any] = {"targets": {}}
    for protocol in PROTOCOLS:
        out[f"{protocol}_total"] = out[f"{protocol}_accessible"] = 0
    for target, result in zip(targets, results, strict=True):
        record = _record(entry, target, result)
        out["targets"][target_id(target)] = record
        out[f"{target['protocol']}_total"] += 1
        out[f"{target['protocol']}_accessible"] += record["failure"] is None
    return out
