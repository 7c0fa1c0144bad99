"""One measurement in, its observation rows and verdict rows out: pure, engine-independent.

:func:`transform` is what both engines run on every measurement (DuckDB's pass on its worker
processes, Spark's executors). It never does I/O and never raises for odd content inside
``test_keys``; an envelope without the keys the analysis needs raises :class:`BadMeasurement`
with a short reason (``missing_key:test_keys``, ``wrong_type:probe_asn``,
``bad_value:measurement_start_time``), which the pass counts and reports with where the line
was. msgwatch's two tests are read: ``msgwatch_service`` (:mod:`.msgwatch`) and
``msgwatch_circumvention`` (:mod:`.circumvention`), both judged by the same judge. A test name
the analysis does not read gives no rows and ``skipped = "unknown_test"``; a
``web_connectivity`` measurement of a domain outside the catalogue ``"not_a_catalogue_domain"``
(both counted, not problems). Should the judge fail on odd content of a msgwatch measurement,
the observations stay and ``problem`` says why there are no verdict rows (the pass may report
it). docs/spec/analysis.md is the specification.
"""

from __future__ import annotations

from typing import Any

from msgwatch.analysis.transform import circumvention as circumvention_test
from msgwatch.analysis.transform import msgwatch as msgwatch_test
from msgwatch.analysis.transform import ooni_observations
from msgwatch.analysis.transform.base import (
    BadMeasurement,
    Meta,
    Transformed,
    cap,
    envelope,
    scrub,
)
from msgwatch.analysis.transform.ooni_map import TESTS as OONI_TESTS
from msgwatch.analysis.transform.ooni_map import read
from msgwatch.analysis.transform.verdict_rows import RULES_VERSION, msgwatch_rows, ooni_rows
from msgwatch.analysis.verdicts.circumvention import TEST_NAME as CIRCUMVENTION
from msgwatch.measurement.envelope import TEST_NAME

__all__ = ["RULES_VERSION", "BadMeasurement", "Meta", "Transformed", "transform"]

MSGWATCH_TESTS = frozenset({TEST_NAME, CIRCUMVENTION})


def transform(measurement: Any, meta: Meta) -> Transformed:
    """The observation and verdict rows of ``measurement`` (raises :class:`BadMeasurement`)."""
    if not isinstance(measurement, dict):
        raise BadMeasurement("wrong_type:measurement")
    test = measurement.get("test_name")
    if test is None:
        raise BadMeasurement("missing_key:test_name")
    if not isinstance(test, str):
        raise BadMeasurement("wrong_type:test_name")
    test = test[:64]
    if test not in MSGWATCH_TESTS and test not in OONI_TESTS:
        return Transformed(test, skipped="unknown_test")
    env = envelope(measurement, meta, test)
    out = Transformed(test, envelope=env.base)
    if test in MSGWATCH_TESTS:
        observe = (
            circumvention_test.observations if test == CIRCUMVENTION else msgwatch_test.observations
        )
        out.parts = cap(observe(env))
        out.verdicts, out.problem = msgwatch_rows(env, measurement)
    else:
        mapped = read(test, env.keys, env.input)
        if isinstance(mapped, str):
            out.skipped = mapped
            return out
        out.parts = cap(ooni_observations.observations(env, test, mapped))
        out.verdicts = ooni_rows(env, mapped)
    scrub(out.parts, env.probe_ip)
    scrub(out.verdicts, env.probe_ip)
    return out
