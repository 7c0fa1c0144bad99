"""Asking the test helper to measure, and to say what it received (its control API, docs/helper.md).

- ``helper_measure`` POSTs a list of steps to ``http://HELPER:PORT/v1/measure`` over a traced TCP
  connection (the exchange is part of the evidence) and returns the helper's answer, parsed and
  bounded. The helper runs the probe's own steps; its trace comes back whole and is kept, under
  the transaction id of the request, in ``msgwatch_helper_views``.
- ``helper_flows`` GETs ``/v1/udp/flows`` for several of the probe's UDP flows, one request after
  the other on one keep-alive connection: the helper's own per-interval counts of what it received
  from each flow and what it sent back, how many datagrams it declined to answer and why, and how
  long it stalled itself during the flow (the probe's replays attach them to their records).

- ``helper_send`` POSTs ``/v1/udp/send``: the helper sends call-shaped traffic of its own to the
  probe on a flow the probe opened (a downstream replay, :mod:`msgwatch.steps.downstream`).

A :class:`HelperLink` is one helper as the run sees it: its address, its control port, and a cap
on the control connections open at once. The helper closes the connections of a client above
8 at once (``ControlSettings.max_per_client``), and a probe asks for every call function's view
and counts at the same time, so the link queues them instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import h11

from msgwatch import __version__
from msgwatch import failures as F
from msgwatch.steps.net import TCPConn, endpoint, tcp_connect
from msgwatch.steps.trace import Trace
from msgwatch.wire import helper_api as api
from msgwatch.wire.helper_api import CONTROL_PORT, SendAnswer, SendRequest

MAX_ANSWER = 512 * 1024
CONNECTIONS = 4
"""Control connections open at once to one helper (the helper allows 8 per client)."""
SEND_CONNECTIONS = 3
"""Connections for ``/v1/udp/send`` besides those (short requests that must not wait behind a
``/v1/measure``: a downstream replay is scheduled; 4 + 3 stay under the helper's 8)."""
MAX_FLOW_INTERVALS = 600
"""Intervals kept of each flow's counts (one minute at 100 ms)."""
MAX_COUNT = 2**63 - 1
"""A count larger than this is not a helper's (it counts in 64-bit words)."""


@dataclass
class HelperLink:
    """One test helper of the run: where its control API is, and the queue to it."""

    address: str
    port: int = CONTROL_PORT
    connections: int = CONNECTIONS
    send_connections: int = SEND_CONNECTIONS
    _slots: asyncio.Semaphore | None = field(default=None, repr=False)
    _send_slots: asyncio.Semaphore | None = field(default=None, repr=False)

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # made lazily: a semaphore belongs to the loop that first uses it
            self._slots = asyncio.Semaphore(self.connections)
        return self._slots

    @property
    def send_slots(self) -> asyncio.Semaphore:
        if self._send_slots is None:
            self._send_slots = asyncio.Semaphore(self.send_connections)
        return self._send_slots


def _link(helper: str | HelperLink, port: int) -> HelperLink:
    return helper if isinstance(helper, HelperLink) else HelperLink(helper, port)


@dataclass(frozen=True)
class _Request:
    """One request to the control API (``body``: JSON, or empty)."""

    method: str
    target: str
    body: bytes = b""
    keep_alive: bool = False


async def _exchange(
    conn: TCPConn, client: h11.Connection, host: str, request: _Request, deadline: float
) -> tuple[int | None, bytes]:
    """One request and its whole response on ``conn`` (status, body)."""
    body = request.body
    headers = [("Host", host), ("User-Agent", f"msgwatch/{__version__}")]
    if body:
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    if not request.keep_alive:
        headers.append(("Connection", "close"))
    data = client.send(h11.Request(method=request.method, target=request.target, headers=headers))
    if body:
        data += client.send(h11.Data(data=body))
    await conn.write(data + client.send(h11.EndOfMessage()), deadline)
    status, answer = None, bytearray()
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(await conn.read(deadline))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            answer += event.data
            if len(answer) > MAX_ANSWER:
                raise F.ProbeFailure(F.HELPER_ANSWER_TOO_LARGE)
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return status, bytes(answer)


def _host(link: HelperLink) -> str:
    """The ``Host`` header for ``link``."""
    return endpoint(link.address, link.port)


async def helper_measure(
    trace: Trace,
    txid: int,
    helper: str | HelperLink,
    steps: Sequence[Mapping[str, Any]],
    deadline: float,
    *,
    port: int = CONTROL_PORT,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The helper's results for ``steps`` (each a :class:`~msgwatch.wire.helper_api.MeasureStep`);
    a record (also kept in the trace) that never raises."""
    link = _link(helper, port)
    record: dict[str, Any] = {"transaction_id": txid, "helper": link.address, "steps": list(steps),
                              "results": [], "failure": None, "t0": trace.now()}  # fmt: skip
    conn = None
    try:
        async with asyncio.timeout_at(deadline), link.slots:
            # The helper must answer before our own deadline: its steps get what is left, less a
            # margin.
            left = deadline - asyncio.get_running_loop().time() - 0.5
            budget = round(max(0.5, min(timeout, left)), 3)
            body = json.dumps(api.measure_request(steps, budget)).encode()
            conn = await tcp_connect(trace, txid, link.address, link.port, deadline)
            client = h11.Connection(h11.CLIENT)
            request = _Request("POST", api.MEASURE_PATH, body)
            status, answer = await _exchange(conn, client, _host(link), request, deadline)
        if status != 200:
            raise F.ProbeFailure(F.helper_status(status))
        parsed = json.loads(answer)
        results = parsed.get("results") if isinstance(parsed, dict) else None
        record["results"] = [r for r in results or [] if isinstance(r, dict)][: len(steps)]
        record["helper_trace"] = parsed.get("trace") if isinstance(parsed, dict) else None
    except (h11.RemoteProtocolError, ValueError):
        record["failure"] = F.HELPER_INVALID_RESPONSE
    except Exception as exc:
        record["failure"] = F.classify(exc)
    finally:
        if conn is not None:
            conn.close()
    record["t"] = trace.now()
    trace.helper_view(record)
    return record


def _count(value: Any) -> bool:
    """A datagram or byte count: a non-negative int (not a bool), at most :data:`MAX_COUNT`."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _declined(parsed: dict[str, Any]) -> tuple[bool, dict[str, int] | None]:
    """(valid, the flow's ``declined`` counts). Absent or null (a helper older than the field): valid,
    None. Otherwise an object with a count for each name of the contract's
    :data:`~msgwatch.wire.helper_api.DECLINED`; the probe keeps those of
    :data:`~msgwatch.wire.helper_api.KEPT_DECLINED` (others ignored)."""
    declined = parsed.get("declined")
    if declined is None:
        return True, None
    kept = api.KEPT_DECLINED
    if not isinstance(declined, dict) or not all(_count(declined.get(n)) for n in kept):
        return False, None
    return True, {n: declined[n] for n in kept}


def _stalls(parsed: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """(valid, the helper's ``stalls`` during the flow). Absent or null (a helper older than the
    field): valid, None. Otherwise a count and two finite, non-negative numbers of seconds of at
    most :data:`~msgwatch.wire.helper_api.MAX_STALL_SECONDS`."""
    stalls = parsed.get("stalls")
    if stalls is None:
        return True, None
    if not isinstance(stalls, dict) or not _count(stalls.get("count")):
        return False, None
    kept: dict[str, Any] = {"count": stalls["count"]}
    for name in api.STALLS[1:]:
        value = stalls.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False, None
        if not 0 <= value <= api.MAX_STALL_SECONDS:  # NaN fails this too
            return False, None
        kept[name] = float(value)
    return True, kept


def _counts(parsed: Any) -> dict[str, Any] | None:
    """The part of a ``/v1/udp/flows`` answer the probe keeps, checked and bounded."""
    if not isinstance(parsed, dict) or not isinstance(parsed.get("totals"), dict):
        return None
    valid, declined = _declined(parsed)
    fine, stalls = _stalls(parsed)
    if not valid or not fine:
        return None
    names = api.COUNTS
    totals = parsed["totals"]
    if not all(isinstance(totals.get(n), int) and totals[n] >= 0 for n in names):
        return None
    intervals = []
    for row in parsed.get("intervals") or []:
        if not isinstance(row, dict) or not isinstance(row.get("t"), int | float):
            return None
        if not all(isinstance(row.get(n), int) for n in names):
            return None
        intervals.append({"t": row["t"], **{n: row[n] for n in names}})
    interval = parsed.get("interval")
    originated = parsed.get("originated")
    kept: dict[str, Any] = {}
    if isinstance(originated, dict):
        if not all(_count(originated.get(n)) for n in api.ORIGINATED):
            return None
        kept["originated"] = {n: originated[n] for n in api.ORIGINATED}
    return {
        **kept,
        **{n: totals[n] for n in names},
        "declined": declined,
        "stalls": stalls,
        "interval": interval if isinstance(interval, int | float) else None,
        "intervals": intervals[:MAX_FLOW_INTERVALS],
        "truncated": bool(parsed.get("truncated")) or len(intervals) > MAX_FLOW_INTERVALS,
    }


async def helper_flows(
    trace: Trace,
    txid: int,
    helper: str | HelperLink,
    flows: list[tuple[int, int]],
    deadline: float,
    *,
    port: int = CONTROL_PORT,
) -> tuple[list[dict[str, Any] | None], str | None]:
    """The helper's counts for each (probe's source port, helper's port) in ``flows``, in order:
    a dict (``rx_packets``, ``rx_bytes``, ``tx_packets``, ``tx_bytes``, ``declined`` (the
    datagrams the helper did not answer, by reason; None from a helper that does not say),
    ``interval``, ``intervals``, ``truncated``) or None when the helper has no such flow (it received nothing
    from it: 404 ``no_such_flow``). Never raises: the second item is the failure that stopped
    the exchange (the flows not asked yet are None)."""
    link = _link(helper, port)
    out: list[dict[str, Any] | None] = [None] * len(flows)
    if not flows:
        return out, None
    failure: str | None = None
    conn = None
    try:
        async with asyncio.timeout_at(deadline), link.slots:
            conn = await tcp_connect(trace, txid, link.address, link.port, deadline)
            client = h11.Connection(h11.CLIENT)
            host = _host(link)
            for i, (client_port, local_port) in enumerate(flows):
                target = api.flows_target(client_port, local_port)
                last = i == len(flows) - 1
                request = _Request("GET", target, keep_alive=not last)
                status, answer = await _exchange(conn, client, host, request, deadline)
                if status == 200:
                    out[i] = _counts(json.loads(answer))
                    if out[i] is None:
                        raise ValueError("not a flow's counts")
                elif status != 404:
                    raise F.ProbeFailure(F.helper_status(status))
                if not last:
                    if client.our_state is h11.MUST_CLOSE or client.their_state is h11.MUST_CLOSE:
                        # The helper closes after its request limit: a new connection goes on.
                        conn.close()
                        conn = await tcp_connect(trace, txid, link.address, link.port, deadline)
                        client = h11.Connection(h11.CLIENT)
                    else:
                        client.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError, ValueError):
        failure = F.HELPER_INVALID_RESPONSE
    except Exception as exc:
        failure = F.classify(exc)
    finally:
        if conn is not None:
            conn.close()
    return out, failure


_CHECKED = ("packets", "bytes")
"""The counts of a send's answer the probe relies on."""


async def helper_send(
    trace: Trace,
    txid: int,
    helper: str | HelperLink,
    request: SendRequest,
    deadline: float,
    *,
    port: int = CONTROL_PORT,
) -> tuple[SendAnswer | None, str | None]:
    """Ask the helper to send a downstream replay (``POST /v1/udp/send``, body ``request``).
    Never raises: (the helper's 202 answer: ``packets``, ``bytes``, ``seconds``...; or None, the
    failure: ``helper_status_404``, ``helper_invalid_response``, a network failure)."""
    link = _link(helper, port)
    conn = None
    try:
        async with asyncio.timeout_at(deadline), link.send_slots:
            conn = await tcp_connect(trace, txid, link.address, link.port, deadline)
            client = h11.Connection(h11.CLIENT)
            body = json.dumps(request.to_dict()).encode()
            send = _Request("POST", api.SEND_PATH, body)
            status, answer = await _exchange(conn, client, _host(link), send, deadline)
        if status != 202:
            return None, F.helper_status(status)
        parsed = json.loads(answer)
        if not isinstance(parsed, dict) or not all(_count(parsed.get(n)) for n in _CHECKED):
            raise ValueError("not a send's answer")
        return _send_answer(parsed), None
    except (h11.RemoteProtocolError, h11.LocalProtocolError, ValueError):
        return None, F.HELPER_INVALID_RESPONSE
    except Exception as exc:
        return None, F.classify(exc)
    finally:
        if conn is not None:
            conn.close()


def _send_answer(parsed: dict[str, Any]) -> SendAnswer:
    """The keys of the contract's :class:`~msgwatch.wire.helper_api.SendAnswer` that the helper
    sent (``packets`` and ``bytes`` checked; others the caller does not rely on)."""
    return cast(SendAnswer, {k: v for k, v in parsed.items() if k in api.SEND_ANSWER})
