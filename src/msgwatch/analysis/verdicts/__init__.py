"""The judge: verdicts from a measurement alone, by rules kept as data, stamped with their version.

- :func:`judge`: a measurement in, one verdict record per (service, function) out
  (:mod:`~msgwatch.analysis.verdicts.judge`); every record carries ``rules_version``.
- :data:`RULES_VERSION`: the version of the rules (``rules.toml``, ``calls.toml``), bumped on any
  change, so a verdict is recomputed, never trusted, when the rules improve.

The rules read only the measurement (never sockets, the probe or the measuring steps); the call
path's round statistics are :mod:`msgwatch.analysis.rounds`.
"""

from msgwatch.analysis.verdicts.judge import judge
from msgwatch.analysis.verdicts.rules import RULES_VERSION

__all__ = ["RULES_VERSION", "judge"]
