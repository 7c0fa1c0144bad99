"""The reader side: what a stored measurement means, read from the measurement alone.

Nothing here opens a socket or imports the measuring side (steps, probe, helper) or the collector;
the probe may import the pure statistics (:mod:`.stats`, :mod:`.rounds`), never the verdicts.

- :mod:`~msgwatch.analysis.stats`: KS test, Wehe's area test, two-proportion test, RFC 3550
  jitter, per-interval throughput, and the replay comparison rule of ``docs/method/calls.md``.
- :mod:`~msgwatch.analysis.rounds`: the rounds of a call's replays as statistics (pooled, compared
  round by round, the probe's own lag left out), shared by the probe's confirmation step and the
  call judge.
- :mod:`~msgwatch.analysis.verdicts`: the judge, rules as data, every verdict stamped with
  ``RULES_VERSION``.
- :mod:`~msgwatch.analysis.ooni`: OONI's messenger tests' keys read as verdict facts.

DESIGN's observations, aggregates and events are not here yet (step 7).
"""
