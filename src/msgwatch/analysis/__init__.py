"""Analysis that judges what the probe recorded: statistics for original-against-control replays.

- :mod:`~msgwatch.analysis.stats`: KS test, Wehe's area test, two-proportion test, RFC 3550
  jitter, per-interval throughput, and the replay comparison rule of ``docs/method/calls.md``.
"""
