"""The registry of test kinds (OONI's "nettests"), keyed by ``test_name``.

A run runs the tests ``RunConfig.tests`` names; each kind is one module here declaring a
:class:`~msgwatch.probe.nettests.base.NetTest` (its name, inputs, time, share of the byte budget and
how it measures one input) and one entry in :data:`NETTESTS`. Today there is one kind:

=================  ===========================================================================
msgwatch_service   every endpoint of one catalogue service (:mod:`.service`)
=================  ===========================================================================

A Tor bootstrap test (``msgwatch_tor``) is one more module, e.g. ``tor.py`` with a ``TorTest`` whose
``time`` is a minute (``TimeBudget(job_seconds=60)``), whose ``bytes`` reserve what the client
program downloads (``ByteUse(reserve=...)``, as no trace counts it), and which starts ``tor`` through
:mod:`msgwatch.steps.exec` (fenced); then one line below.
"""

from __future__ import annotations

from msgwatch.probe.nettests.base import NetTest
from msgwatch.probe.nettests.service import ServiceTest

NETTESTS: dict[str, NetTest] = {test.test_name: test for test in (ServiceTest(),)}
"""Every test kind the probe can run, by ``test_name``."""


def nettest(test_name: str) -> NetTest:
    """The test kind named ``test_name``; ValueError when there is none."""
    try:
        return NETTESTS[test_name]
    except KeyError:
        known = ", ".join(sorted(NETTESTS))
        raise ValueError(f"unknown test {test_name!r} (known: {known})") from None
