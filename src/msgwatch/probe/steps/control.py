"""Asking the test helper to measure from where it stands (its control API, ``docs/helper.md``).

``helper_measure`` POSTs a list of steps to ``http://HELPER:PORT/v1/measure`` over a traced TCP
connection (the exchange is part of the evidence) and returns the helper's answer, parsed and
bounded. The helper runs the probe's own steps; its trace comes back whole and is kept, under the
transaction id of the request, in ``msgwatch_helper_views``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11

from msgwatch import __version__
from msgwatch.probe import failures as F
from msgwatch.probe.net import tcp_connect
from msgwatch.probe.trace import Trace

CONTROL_PORT = 8765
MAX_ANSWER = 512 * 1024


async def helper_measure(
    trace: Trace,
    txid: int,
    helper: str,
    steps: list[dict[str, Any]],
    deadline: float,
    *,
    port: int = CONTROL_PORT,
    timeout: float = 5.0,
) -> dict[str, Any]:
    """The helper's results for ``steps``; a record (also kept in the trace) that never raises."""
    record: dict[str, Any] = {"transaction_id": txid, "helper": helper, "steps": steps,
                              "results": [], "failure": None, "t0": trace.now()}  # fmt: skip
    # The helper must answer before our own deadline: its steps get what is left, less a margin.
    left = deadline - asyncio.get_running_loop().time() - 0.5
    budget = round(max(0.5, min(timeout, left)), 3)
    body = json.dumps({"steps": steps, "timeout": budget}).encode()
    conn = None
    try:
        conn = await tcp_connect(trace, txid, helper, port, deadline)
        client = h11.Connection(h11.CLIENT)
        headers = [("Host", f"{helper}:{port}"), ("User-Agent", f"msgwatch/{__version__}"),
                   ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Connection", "close")]  # fmt: skip
        request = client.send(h11.Request(method="POST", target="/v1/measure", headers=headers))
        await conn.write(
            request + client.send(h11.Data(data=body)) + client.send(h11.EndOfMessage()), deadline
        )
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
                    raise F.ProbeFailure("helper_answer_too_large")
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        if status != 200:
            raise F.ProbeFailure(f"helper_status_{status}")
        parsed = json.loads(answer)
        results = parsed.get("results") if isinstance(parsed, dict) else None
        record["results"] = [r for r in results or [] if isinstance(r, dict)][: len(steps)]
        record["helper_trace"] = parsed.get("trace") if isinstance(parsed, dict) else None
    except (h11.RemoteProtocolError, ValueError):
        record["failure"] = "helper_invalid_response"
    except Exception as exc:
        record["failure"] = F.classify(exc)
    finally:
        if conn is not None:
            conn.close()
    record["t"] = trace.now()
    trace.helper_view(record)
    return record
