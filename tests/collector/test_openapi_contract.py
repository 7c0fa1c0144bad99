"""``/openapi.json`` and the collector's behaviour agree (issue 9, item 23), checked by schemathesis.

schemathesis generates requests from the document — valid ones, which must be accepted, and
invalid ones, which must be refused with a 4xx — and checks every answer against what the document
says (status codes, content types, headers, response schemas, methods, no 5xx), for every
operation, including the stateful sequences it infers (a report opened, then added to and closed).
It runs with **all** its checks against a real collector (the production uvicorn configuration,
the real store) and must find nothing.

Where the collector is lenient on purpose (as OONI's collector is), the document says so, and the
check sees it: a batch's items are judged one by one (``measurements.items`` is "any value", a
bad item is refused in its result, not by the request's status); a missing ``probe_cc`` or
``probe_asn`` is ``ZZ``/``AS0``; ``probe_ip`` may be anything, it is replaced.

One configuration: a request refused as too large answers 413, which the document lists for the
submission routes (the spool splits a batch on it); schemathesis' negative-data check does not
count 413 among refusals by default, so it is added to its expected statuses. The analysis's
routes serve a lake written by a real pass over OONI measurements (else they would answer 503;
schemathesis reuses values it reads in answers, and a msgwatch_service test name it would take
from msgwatch rows makes a generated submission subject to that format); their cursors are opaque
and valid only as issued, so a generated one is refused (400) although it fits the document.

Bounded: ``MAX_EXAMPLES`` per operation and phase (about 20 s on a quiet machine); the seed is
fixed so a failure reproduces (``MSGWATCH_SCHEMATHESIS_SEED`` picks another one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector.analysis_data import ooni_analysed
from tests.collector.liveserver import ThreadServer, make_settings, thread_server

MAX_EXAMPLES = 15  # × 12 operations (the suite stays under 20 minutes)
SEED = os.environ.get("MSGWATCH_SCHEMATHESIS_SEED", "20261124")
CONFIG = """\
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
                     "429", "5xx"]

# the analysis's cursors are opaque keyset positions, valid only as issued: a generated one is 400
[[operations]]
include-path-regex = "^/api/v1/(events|aggregates|observations|verdicts)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ThreadServer]:
    lake = ooni_analysed(tmp_path / "lake")  # the analysis's routes answer 200, not 503
    with thread_server(make_settings(tmp_path / "data", analysis_dir=lake)) as running:
        yield running


def schemathesis() -> str:
    command = Path(sys.executable).parent / "schemathesis"
    if not command.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return str(command)


@pytest.mark.timeout(240)
def test_the_openapi_document_is_what_the_collector_does(
    server: ThreadServer, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            schemathesis(),
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"http://127.0.0.1:{server.port}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--generation-database",
            "none",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    report = result.stdout[-12000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert " generated, " in report and " passed" in report, report  # it did run cases
