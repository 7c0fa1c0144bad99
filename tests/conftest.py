"""Shared test set-up.

The probe's fence is raised before anything else is imported: with ``MSGWATCH_ALLOWED_NETWORKS`` set,
every destination outside loopback and the lab's documentation ranges is refused before a socket is
created, and the system resolver is refused altogether, so however the suite is run it does not
reach the Internet. A value already in the environment is kept (to narrow the fence); an empty one,
which would lower the fence, is replaced.

The probe's state (spool, probe id, lock) goes to a fresh temporary directory for the whole session
(``MSGWATCH_STATE_DIR``), never to the machine's ``/var/lib/msgwatch`` or the user's home.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msgwatch.fence import FENCE_VARIABLE, LAB_NETWORKS

if not os.environ.get(FENCE_VARIABLE, "").strip():
    os.environ[FENCE_VARIABLE] = LAB_NETWORKS
os.environ["MSGWATCH_STATE_DIR"] = tempfile.mkdtemp(prefix="msgwatch-test-state-")
atexit.register(functools.partial(shutil.rmtree, os.environ["MSGWATCH_STATE_DIR"], True))

from tests.unit.servers import PKI, make_pki  # noqa: E402  (after the fence is up)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PKI]:
    """A test CA, leaves for ``chat.example.test`` and ``other.example.test``, and a rogue CA's leaf."""
    directory: Path = tmp_path_factory.mktemp("pki")
    yield make_pki(directory)


@pytest.fixture(scope="session")
def observatory_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The dashboard's fixture observatory (tests/dashboard/fixture.py: its measurements' file and
    its lake), built once for the dashboard's and the browser's tests; the dashboard's roll-ups of
    its lake are removed from their cache at the end."""
    from msgwatch.dashboard import data_rollup
    from tests.dashboard import fixture

    built = fixture.build(tmp_path_factory.mktemp("observatory"))
    yield built
    data_rollup.forget(built.lake)


# -- three phases (the Makefile's `unit`) --------------------------------------------------------
# The lab's tests (namespaces, real servers, timed call replays, the loopback mini-Internet, which
# is one per machine) are marked ``lab`` and run after the others: a CPU-bound test beside them
# would make the probe's own lag the story, and their verdicts would rightly say "inconclusive
# (probe overloaded)". Everything else runs first on four workers (pytest-xdist,
# ``-n 4 --dist loadgroup``: many of them wait on processes, sockets and timeouts more than they
# compute); tests sharing one expensive session fixture stay on one worker so it is built once:
# the dashboard's and the browser's fixture observatory, and Spark's JVM.
#
# Of the lab's tests, those marked ``lab_pair`` run two labs at a time (``-n 2 --dist loadgroup
# -m lab_pair``): the shipped scenarios and the call matrix, each test with a lab of its own (its
# own namespaces, servers and collector), and the circumvention tests, which share one lab with a
# private Tor network and so stay together on one worker (group ``circumvention``). Each uses well
# under a core while its probes and tunnels wait on timeouts. The rest (the mini-Internet,
# lifecycle and crash tests, the timeline, the busy-machine test) run alone, one after another.
_LAB_ELSEWHERE = {("spool", "test_collector_integration.py")}
"""Test modules outside tests/lab that bring up a lab or the mini-Internet."""
_LAB_PAIR = {("lab", "test_scenarios.py"), ("lab", "test_call_matrix.py")}
"""Lab test modules whose tests each bring up a whole lab of their own (see above)."""
_LAB_SHARED: dict[tuple[str, ...], str] = {("lab", "circumvention"): "circumvention"}
"""Lab test packages that share one lab: run two labs at a time, beside the others, on one worker."""


def _relative(item: pytest.Item) -> tuple[str, ...]:
    return Path(str(item.path)).resolve().relative_to(Path(__file__).resolve().parent).parts


def _group(parts: tuple[str, ...]) -> str | None:
    if parts[0] == "lab" or parts in _LAB_ELSEWHERE:
        return "lab"
    if parts[0] in ("dashboard", "browser"):
        return "dashboard"
    if parts[0] == "analysis" and parts[-1].startswith("test_spark_"):
        return "spark"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects by the markers added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workers = config.pluginmanager.hasplugin("xdist")  # its marker exists only with it
    for item in items:
        parts = _relative(item)
        group = _group(parts)
        if group == "lab":
            item.add_marker(pytest.mark.lab)
            if parts[:2] in _LAB_PAIR or parts[:2] in _LAB_SHARED:
                item.add_marker(pytest.mark.lab_pair)
                group = _LAB_SHARED.get(parts[:2])  # one worker for a shared lab
        if group not in (None, "lab") and workers:
            item.add_marker(pytest.mark.xdist_group(group))
