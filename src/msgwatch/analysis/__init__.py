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

DESIGN's observations, verdicts, aggregates and events (step 7), from stored measurements:

- :mod:`~msgwatch.analysis.schema`: the four tables' columns and types, one home for both engines.
- :mod:`~msgwatch.analysis.inputs`: sources of raw lines with checkpoints (JSONL, OONI's bucket).
- :mod:`~msgwatch.analysis.transform`: one measurement in, its observation and verdict rows out.
- :mod:`~msgwatch.analysis.workers`: parse + uid + transform on a process pool, rows as NDJSON.
- :mod:`~msgwatch.analysis.lake`: the output directory: layout, Parquet parts, committed state.
- :mod:`~msgwatch.analysis.passes`: :func:`~msgwatch.analysis.passes.run_pass`, one incremental,
  crash-safe pass from sources to events.
- :mod:`~msgwatch.analysis.aggregates`: the aggregate SQL (the Spark engine mirrors it) and the
  detector's evidence query.
- :mod:`~msgwatch.analysis.events`: the online detector, patterns, country events, controls.
- :mod:`~msgwatch.analysis.query`: :class:`~msgwatch.analysis.query.Lake`, read-only filtered and
  paged queries of the committed pass (the collector's API and the command line).
- :mod:`~msgwatch.analysis.spark`: the same transforms, aggregates and events on PySpark.
"""
