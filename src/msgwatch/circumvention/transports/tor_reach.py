"""Type ``tor_reach``: reachability of Tor's directory authorities, relays and bridges, like OONI's
``tor`` test (ts-023), without bootstrapping tor.

For each target of ``params.targets`` (``name``, ``address``, ``port``, ``protocol``,
``fingerprint``, optional ``params`` and ``source``), at most :data:`PARALLEL` at a time, each
within :data:`TARGET_TIMEOUT` and all within the entry's budget (less a margin, so that the
results are recorded before the runner's cut; a target that could not start in time is recorded
``interrupted`` and not counted):

- ``or_port`` / ``or_port_dirauth``: TCP connect, then a TLS handshake (certificate not verified:
  a relay's link certificate is self-signed) — "connect" and "handshake";
- ``dir_port``: TCP connect, then ``GET /tor/status-vote/current/consensus`` (at most
  :data:`MAX_BODY` bytes read); "handshake" is an HTTP 200 answer;
- ``obfs4``: TCP connect, then a real obfs4 handshake: Debian's ``obfs4proxy`` runs as a
  pluggable-transport client (one for the run, in its own directory under ``ctx.workdir``, always
  stopped; a start that failed is remembered, never retried) and a SOCKS5 CONNECT through it,
  with the target's ``params`` ``cert`` and ``iat-mode`` as the SOCKS username (the PT
  protocol's way), is answered only once the obfs4 handshake with the bridge is done. No Tor link
  handshake follows (as in OONI). ``obfs4proxy`` missing, not starting or its local SOCKS port not
  answering are local failures (``client_not_found``, ``client_failed``).

``run.keys``: ``targets`` keyed by :func:`target_id`, each with ``failure``, ``summary``
{connect, handshake}, ``target_address``, ``target_name``, ``target_protocol``,
``target_source``, ``tcp_connect`` and ``tls_handshakes`` (its own records of the trace); address
and name scrubbed for a private entry only (whose target addresses are also given to the run to
scrub everywhere); and ``{or_port,dir_port,obfs4,or_port_dirauth}_{total,accessible}``.

The stages: ``connect`` fails only when **every** measured target's TCP connect failed, and
``handshake`` only when every target that connected failed its handshake — one authority offline
(routine) is not a blocked network; some targets failing and others not gives passed stages and
counts the judge reads as partial reachability. A failed stage's failure is the first network
failure among its targets (a local one only when there is none). Nothing is yielded (no tunnel).
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
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msgwatch import failures as F
from msgwatch.circumvention.model import Context, Entry, Run, Tunnel
from msgwatch.circumvention.transports.tor import local_socks
from msgwatch.circumvention.transports.vpnkit import (
    CLIENT_FAILED,
    CLIENT_NOT_FOUND,
    bad_params,
    die_with_parent,
    executable,
)
from msgwatch.steps.http import Get, http_get
from msgwatch.steps.net import tcp_connect
from msgwatch.steps.tls import tls_handshake
from msgwatch.steps.trace import Trace

PROTOCOLS = ("or_port", "or_port_dirauth", "dir_port", "obfs4")
PARALLEL = 32
"""Targets measured at once (a TCP connect and a handshake each: a lab's or the catalogue's
authorities all fit one wave within the budget)."""
TARGET_TIMEOUT = 10.0
MIN_TARGET_SECONDS = 1.0
"""A target that would have less than this left of the budget is not started (``interrupted``)."""
MARGIN = 2.0
"""Seconds before the runner's cut at which every target's deadline falls (at most a quarter of
the budget)."""
PT_START_SECONDS = 5.0
"""Seconds ``obfs4proxy`` has to offer its SOCKS port."""
MAX_TARGETS = 64
MAX_BODY = 256 * 1024
CONSENSUS = "/tor/status-vote/current/consensus"
MAX_PT_LINES, MAX_LINE = 32, 512
"""Lines of ``obfs4proxy``'s PT protocol read at most, and bytes kept of each."""
INTERRUPTED = "interrupted"
LOCAL = frozenset({INTERRUPTED, CLIENT_NOT_FOUND, CLIENT_FAILED, "bad_params", F.NOT_ALLOWED,
                   "budget_exceeded", "internal", F.UDP_NOT_CARRIED})  # fmt: skip
"""Failures that are the probe's, not the network's (the spec's local failures)."""
_CMETHOD = re.compile(r"^CMETHOD obfs4 socks5 127\.0\.0\.1:(\d{1,5})$")
_FIELDS = {"name", "address", "port", "protocol", "fingerprint", "params", "source"}


def check_params(entry: Entry) -> list[str]:
    """Problems with ``params.targets`` ([] when fine)."""
    targets = entry.params.get("targets")
    unknown = sorted(set(entry.params) - {"targets"})
    problems = [f"unknown params: {', '.join(k[:40] for k in unknown[:5])}"] if unknown else []
    if not isinstance(targets, list) or not 0 < len(targets) <= MAX_TARGETS:
        return [*problems, f"targets: a list of 1 to {MAX_TARGETS} targets"]
    for i, target in enumerate(targets):
        if not isinstance(target, Mapping):
            problems.append(f"targets.{i}: not a table")
            continue
        problems += [f"targets.{i}.{p}" for p in _check_target(target)]
    return problems


def _check_target(target: Mapping[str, Any]) -> list[str]:
    problems = [f"{str(k)[:40]}: unknown" for k in sorted(set(target) - _FIELDS, key=str)][:3]
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
    params = target.get("params", {})
    if not isinstance(params, Mapping) or not all(
        isinstance(v, str) and len(v) <= 200 for v in params.values()
    ):
        problems.append("params: a table of strings")
    source = target.get("source", "")
    if not isinstance(source, str) or len(source) > 200:
        problems.append("source: at most 200 characters")
    return problems


def _hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def target_id(target: Mapping[str, Any]) -> str:
    """OONI's target id: the hex sha256 of ``address:port`` and the fingerprint."""
    key = f"{target['address']}:{target['port']}{target.get('fingerprint', '')}"
    return hashlib.sha256(key.encode()).hexdigest()


def _unique_id(target: Mapping[str, Any], taken: Mapping[str, Any]) -> str:
    """:func:`target_id`, or when two targets share it (one port tested as two protocols, or a
    repeated target) the sha256 of it with the protocol (and a counter)."""
    key = target_id(target)
    if key not in taken:
        return key
    for n in range(len(taken) + 1):
        key = hashlib.sha256(
            f"{target_id(target)}{target['protocol']}{n or ''}".encode()
        ).hexdigest()
        if key not in taken:
            return key
    raise AssertionError("unreachable")


class PTClient:
    """``obfs4proxy`` as a managed pluggable-transport client: started on first use (once: a
    failed start is remembered and its process stopped at once), its SOCKS port read from its
    ``CMETHOD obfs4 socks5 127.0.0.1:PORT`` line (bounded), always stopped."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.proc: asyncio.subprocess.Process | None = None
        self.port: int | None = None
        self.workdir: Path | None = None
        self.failure: F.ProbeFailure | None = None
        self._started = False
        self._lock = asyncio.Lock()

    async def socks_port(self, deadline: float) -> int:
        async with self._lock:
            if self.port is not None:
                return self.port
            if self._started:  # one start only: the first failed (or was cancelled)
                failure = self.failure or F.ProbeFailure(CLIENT_FAILED, "obfs4proxy did not start")
                raise F.ProbeFailure(failure.failure, str(failure))
            self._started = True
            loop = asyncio.get_running_loop()
            try:
                self.port = await self._start(min(deadline, loop.time() + PT_START_SECONDS))
            except Exception as exc:
                failure = exc if isinstance(exc, F.ProbeFailure) else F.ProbeFailure(
                    CLIENT_FAILED, f"obfs4proxy: {F.classify(exc)}")  # fmt: skip
                if failure.failure not in (CLIENT_NOT_FOUND, CLIENT_FAILED):
                    failure = F.ProbeFailure(CLIENT_FAILED, f"obfs4proxy: {failure.failure}")
                self.failure = failure
                await asyncio.shield(self.stop())
                raise failure from exc
            return self.port

    async def _start(self, deadline: float) -> int:
        exe = executable(self.ctx, "obfs4proxy")
        self.workdir = Path(tempfile.mkdtemp(prefix="obfs4-", dir=self.ctx.workdir))
        env = {"TOR_PT_MANAGED_TRANSPORT_VER": "1", "TOR_PT_CLIENT_TRANSPORTS": "obfs4",
               "TOR_PT_STATE_LOCATION": str(self.workdir), "TOR_PT_EXIT_ON_STDIN_CLOSE": "1"}  # fmt: skip
        try:
            self.proc = await asyncio.create_subprocess_exec(
                exe, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True,
                preexec_fn=die_with_parent(),
            )  # fmt: skip
        except FileNotFoundError as exc:
            raise F.ProbeFailure(CLIENT_NOT_FOUND, "obfs4proxy is not installed") from exc
        except OSError as exc:
            raise F.ProbeFailure(CLIENT_FAILED, f"obfs4proxy did not start: {exc}"[:200]) from exc
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout_at(deadline):
                for _ in range(MAX_PT_LINES):
                    line = (await self.proc.stdout.readline())[:MAX_LINE]
                    text = line.decode("ascii", "replace").strip()
                    found = _CMETHOD.match(text)
                    if found and 0 < int(found.group(1)) < 65536:
                        return int(found.group(1))
                    if not line or text.startswith(("CMETHOD-ERROR", "ENV-ERROR",
                                                    "VERSION-ERROR")):  # fmt: skip
                        break
        except (TimeoutError, ValueError) as exc:  # ValueError: a line past the reader's limit
            raise F.ProbeFailure(CLIENT_FAILED, "obfs4proxy gave no port in time") from exc
        raise F.ProbeFailure(CLIENT_FAILED, "obfs4proxy did not offer an obfs4 SOCKS port")

    async def stop(self) -> None:
        """Kill the process (its group) and remove its directory; safe to call again."""
        proc, workdir = self.proc, self.workdir
        self.proc = self.workdir = None
        self.port = None
        try:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # it keeps no state worth a grace
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(3):
                        await proc.wait()
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)


async def _obfs4(run: Run, pt: PTClient, target: Mapping[str, Any], txid: int,
                 deadline: float) -> None:  # fmt: skip
    """The obfs4 handshake with the bridge, through the PT client."""
    params = target.get("params") or {}
    args = f"cert={params.get('cert', '')};iat-mode={params.get('iat-mode', '0')}"
    ip, port = str(target["address"]), int(target["port"])
    conn = await local_socks(run.trace, txid, await pt.socks_port(deadline), ip, port, deadline,
                             program="obfs4proxy", username=args, password="\0")  # fmt: skip
    conn.close()


async def _measure(
    run: Run, target: Mapping[str, Any], pt: PTClient, deadline: float
) -> dict[str, Any]:
    """One target's connect and handshake (each ``None`` or a failure string; ``None`` handshake
    also when none was tried), and the transactions it used."""
    trace, protocol = run.trace, target["protocol"]
    ip, port = str(ipaddress.ip_address(target["address"])), int(target["port"])
    txids = [trace.new_transaction()]
    connect: str | None = None
    handshake: str | None = None
    conn = None
    try:
        conn = await tcp_connect(trace, txids[0], ip, port, deadline)
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
                txids.append(trace.new_transaction())
                await _obfs4(run, pt, target, txids[-1], deadline)
        except Exception as exc:
            handshake = F.classify(exc)
        finally:
            conn.close()
    return {"connect": connect, "handshake": handshake, "measured": True, "txids": txids}


NOT_MEASURED: Mapping[str, Any] = {"connect": INTERRUPTED, "handshake": None, "measured": False,
                                   "txids": []}  # fmt: skip


def _record(
    entry: Entry, target: Mapping[str, Any], result: Mapping[str, Any], trace: Trace | None
) -> dict[str, Any]:
    hidden = entry.private
    record: dict[str, Any] = {
        "failure": result["connect"] or result["handshake"],
        "summary": {"connect": {"failure": result["connect"]},
                    "handshake": {"failure": result["handshake"]}},
        "target_address": "[scrubbed]" if hidden else f"{target['address']}:{target['port']}",
        "target_name": "[scrubbed]" if hidden else target["name"],
        "target_protocol": target["protocol"],
        "target_source": str(target.get("source", ""))[:200],
    }  # fmt: skip
    if trace is not None:
        txids = set(result.get("txids") or ())
        record["tcp_connect"] = [r for r in trace.tcp_connect if r["transaction_id"] in txids]
        record["tls_handshakes"] = [r for r in trace.tls_handshakes
                                    if r.get("transaction_id") in txids]  # fmt: skip
    return record


def _pick(failures: Iterable[str]) -> str:
    """The failure a stage records: the first network failure, else the first (local) one."""
    found = list(failures)
    network = (f for f in found if f not in LOCAL and not f.startswith(F.UNKNOWN_PREFIX))
    return next(network, found[0])


def deadline_of(start: float, budget: float) -> float:
    """Every target's last moment: a margin before the runner's cut."""
    return start + budget - min(MARGIN, budget / 4)


@contextlib.asynccontextmanager
async def bring_up(entry: Entry, ctx: Context, run: Run) -> AsyncIterator[Tunnel | None]:
    """Measure every target; ``connect``/``handshake`` fail only when every target did."""
    problems = check_params(entry)
    if problems:
        raise bad_params(run, problems)
    targets: list[Mapping[str, Any]] = list(entry.params["targets"])
    run.endpoint_addresses.update(str(ipaddress.ip_address(t["address"])) for t in targets)
    loop = asyncio.get_running_loop()
    end = deadline_of(loop.time(), ctx.budget(entry.type))
    gate = asyncio.Semaphore(PARALLEL)
    pt = PTClient(ctx)

    async def one(target: Mapping[str, Any]) -> Mapping[str, Any]:
        async with gate:
            now = loop.time()
            if now + MIN_TARGET_SECONDS > end:
                return NOT_MEASURED
            return await _measure(run, target, pt, min(now + TARGET_TIMEOUT, end))

    async with run.stage("connect") as detail:
        try:
            results = list(await asyncio.gather(*(one(t) for t in targets)))
        finally:
            await asyncio.shield(pt.stop())
        run.keys |= keys(entry, targets, results, run.trace)
        measured = [r for r in results if r["measured"]]
        detail["measured"] = len(measured)
        detail["accessible"] = sum(1 for r in measured if not (r["connect"] or r["handshake"]))
        if not measured:
            raise F.ProbeFailure(INTERRUPTED, "no target could be measured within the budget")
        if all(r["connect"] for r in measured):
            raise F.ProbeFailure(_pick(r["connect"] for r in measured))
    async with run.stage("handshake"):
        connected = [r for r in measured if not r["connect"]]
        if all(r["handshake"] for r in connected):
            raise F.ProbeFailure(_pick(r["handshake"] for r in connected))
    yield None


def keys(
    entry: Entry, targets: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
    trace: Trace | None = None,
) -> dict[str, Any]:  # fmt: skip
    """OONI ``tor``'s test keys for these results (a target not measured is recorded but not
    counted)."""
    out: dict[str, Any] = {"targets": {}}
    for protocol in PROTOCOLS:
        out[f"{protocol}_total"] = out[f"{protocol}_accessible"] = 0
    for target, result in zip(targets, results, strict=True):
        record = _record(entry, target, result, trace)
        out["targets"][_unique_id(target, out["targets"])] = record
        if result.get("measured", True):
            out[f"{target['protocol']}_total"] += 1
            out[f"{target['protocol']}_accessible"] += record["failure"] is None
    return out
