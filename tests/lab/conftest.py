"""Set-up for the namespace lab's tests: skip with a reason where the lab cannot run.

The lab needs root, iproute2 with working network namespaces, and the Debian servers; without any of
them its tests are skipped, saying which. ``lab`` is one lab for a whole test module (about a
second to bring up); tests that bring labs up and down themselves make their own.
"""

from __future__ import annotations

import functools
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from msgwatch.lab.netns import unavailable
from msgwatch.lab.topology import Lab


@functools.cache
def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None (checked once: a namespace is made and removed)."""
    problem = unavailable()
    if problem:
        return problem
    name = f"mwcheck{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns does not work here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


@pytest.fixture
def needs_lab() -> None:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    with Lab() as up:
        yield up
