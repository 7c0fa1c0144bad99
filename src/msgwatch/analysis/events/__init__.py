"""Blocking events over time: an online detector per series, patterns, country events, controls.

Engine-independent and pure: the DuckDB pass and the Spark job both hand it aggregate rows
(:data:`msgwatch.analysis.schema.AGGREGATE_COLUMNS`) and verdict references for the evidence, and
get the same events back. Entry point: :func:`msgwatch.analysis.events.detect.detect`.
"""
