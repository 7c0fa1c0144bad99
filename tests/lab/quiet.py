"""Keep the circumvention lab's bring-up out of the way of the labs that measure (lab pair phase).

The lab pair phase runs two labs at once (tests/conftest.py). The circumvention lab's bring-up keeps
both cores of a 2-core machine busy for 10-30 s (tor-gencert's RSA-3072 identity keys for the
private Tor network's authorities, the relays' own keys), and a matrix or scenario run on the other
worker during it saw its probe stall for seconds: in CI, every call path of the first matrix run
read ``inconclusive`` (the probe saying so, rightly) and one ``ok`` for a blocked one. A
measurement is not made on a machine that a test itself makes that busy: a run holds a shared
lock for its probes (:func:`measuring`), the bring-up an exclusive one (:func:`heavy`). A
turnstile lock keeps a bring-up that waits from being overtaken by the next run.

Both are ``flock`` on files in the temporary directory, shared by every worker of the machine; the
kernel drops a lock with its process, so a crashed worker blocks nobody.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DIRECTORY = Path(tempfile.gettempdir())
LOCK = DIRECTORY / "msgwatch-lab-quiet.lock"
TURNSTILE = DIRECTORY / "msgwatch-lab-quiet.turnstile"


@contextmanager
def _locked(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def measuring() -> Iterator[None]:
    """While a lab run measures: no :func:`heavy` section runs (others may measure too)."""
    with _locked(TURNSTILE, fcntl.LOCK_EX):
        pass  # wait behind a bring-up that is waiting for its turn
    with _locked(LOCK, fcntl.LOCK_SH):
        yield


@contextmanager
def heavy() -> Iterator[None]:
    """While something makes the machine busy on purpose: no lab run measures."""
    with _locked(TURNSTILE, fcntl.LOCK_EX), _locked(LOCK, fcntl.LOCK_EX):
        yield
