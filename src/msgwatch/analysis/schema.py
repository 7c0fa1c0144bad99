"""The analysis's tables: their columns and types, one home for both engines (DuckDB and Spark).

``docs/spec/analysis.md`` is the specification; this module mirrors it and a test checks they agree.
Every row the analysis writes is a dict with exactly the columns of its table, values JSON-typed:
times are text ``YYYY-MM-DD HH:MM:SS`` (UTC), days ``YYYY-MM-DD``, JSON-valued columns are JSON text.

Rules:

- :data:`SCHEMA_VERSION` is bumped with every change of a column (the spec says what changed).
- Types are DuckDB's names; the Spark engine maps them (:func:`msgwatch.analysis.spark` owns that).
- ``probe_asn`` is ``AS<n>`` text, ``probe_cc`` two upper-case letters (``ZZ`` when unknown).
- ``probe_tag`` is the per-network probe tag (the first part of the collector's idempotency key),
  never an address; ``None`` when the source has none (OONI's data, plain JSONL).
"""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = "1.2.0"

MAX_BUCKET_SECONDS: Final = 365 * 86_400
"""The longest bucket ``S`` (365 days): a bucket, or a period of whole buckets, holding a time of
the year 9998 (the last a measurement may have) then still ends within the year 9999, the last a
timestamp holds, whatever the size (a period is one bucket from a day on)."""


def checked_bucket_seconds(bucket_seconds: object) -> int:
    """``bucket_seconds`` when it is an integer from 1 to :data:`MAX_BUCKET_SECONDS`, else
    ``ValueError`` saying so."""
    if (
        isinstance(bucket_seconds, bool)
        or not isinstance(bucket_seconds, int)
        or not 1 <= bucket_seconds <= MAX_BUCKET_SECONDS
    ):
        raise ValueError(
            f"bucket_seconds must be an integer from 1 to {MAX_BUCKET_SECONDS:,} (365 days),"
            f" not {bucket_seconds!r}"
        )
    return bucket_seconds


Columns = tuple[tuple[str, str], ...]

_ENVELOPE: Columns = (
    ("measurement_uid", "VARCHAR"),
    ("measurement_start_time", "TIMESTAMP"),
    ("day", "DATE"),
    ("probe_cc", "VARCHAR"),
    ("probe_asn", "VARCHAR"),
    ("probe_tag", "VARCHAR"),
    ("source", "VARCHAR"),  # "msgwatch" | "ooni"
    ("test_name", "VARCHAR"),
)
_MEASUREMENT: Columns = (*_ENVELOPE, ("service", "VARCHAR"), ("function", "VARCHAR"))

ENVELOPE_COLUMNS: Final = tuple(name for name, _ in _ENVELOPE)
"""The measurement's columns that all its observation rows share (service and function are each
row's own)."""

OBSERVATION_COLUMNS: Final[Columns] = (
    *_MEASUREMENT,
    ("target", "VARCHAR"),
    ("role", "VARCHAR"),
    ("kind", "VARCHAR"),  # dns tcp tls http stun turn app replay throughput bootstrap stage
    ("transaction_id", "BIGINT"),
    ("attempt", "INTEGER"),
    ("hostname", "VARCHAR"),
    ("ip", "VARCHAR"),
    ("port", "INTEGER"),
    ("transport", "VARCHAR"),
    ("failure", "VARCHAR"),
    ("t0", "DOUBLE"),
    ("t", "DOUBLE"),
    ("status_code", "INTEGER"),
    ("answers", "VARCHAR"),
    ("loss", "DOUBLE"),
    ("throughput_kbps", "DOUBLE"),
    ("bytes_sent", "BIGINT"),
    ("bytes_received", "BIGINT"),
    ("packets_sent", "BIGINT"),
    ("packets_received", "BIGINT"),
    ("detail", "VARCHAR"),
)
"""One row per DNS query, TCP connect, TLS handshake, HTTP request, UDP/STUN exchange, TURN
allocation, application handshake, call replay, throughput download (and bootstrap of a
tunnel test, stage of a circumvention test)."""

VERDICT_COLUMNS: Final[Columns] = (
    *_MEASUREMENT,
    ("verdict", "VARCHAR"),
    ("mechanism", "VARCHAR"),
    ("confidence", "DOUBLE"),
    ("rule_id", "VARCHAR"),
    ("rules_version", "VARCHAR"),
    ("evidence", "VARCHAR"),  # JSON list of transaction ids (msgwatch) or OONI keys
    ("ooni_anomaly", "BOOLEAN"),
    ("control_ok", "BOOLEAN"),
    ("explanation", "VARCHAR"),
)
"""One row per (measurement, service, function), judged on the reader side."""

AGGREGATE_COLUMNS: Final[Columns] = (
    ("bucket", "TIMESTAMP"),
    ("bucket_seconds", "INTEGER"),
    ("probe_cc", "VARCHAR"),
    ("probe_asn", "VARCHAR"),
    ("service", "VARCHAR"),
    ("function", "VARCHAR"),
    ("verdict", "VARCHAR"),
    ("mechanism", "VARCHAR"),  # "" when the verdict has none (so both engines group alike)
    ("measurements", "BIGINT"),
    ("probes", "BIGINT"),
    ("control_ok", "BIGINT"),
)
"""Per bucket × probe_cc × probe_asn × service × function × verdict × mechanism."""

EVENT_COLUMNS: Final[Columns] = (
    ("event_id", "VARCHAR"),
    ("level", "VARCHAR"),  # "network" | "country"
    ("probe_cc", "VARCHAR"),
    ("probe_asn", "VARCHAR"),  # None for a country event
    ("service", "VARCHAR"),  # None for a country event spanning several
    ("function", "VARCHAR"),  # None for a country event spanning several
    ("verdict", "VARCHAR"),
    ("mechanism", "VARCHAR"),
    ("pattern", "VARCHAR"),  # "continuous" | "episodic"
    ("start", "TIMESTAMP"),
    ("start_after", "TIMESTAMP"),  # the last bucket that worked before the start (onset interval)
    ("end", "TIMESTAMP"),  # None while ongoing
    ("end_before", "TIMESTAMP"),  # the last failing bucket before the end
    ("ongoing", "BOOLEAN"),
    ("confidence", "DOUBLE"),
    ("failing_share", "DOUBLE"),
    ("measurements", "BIGINT"),
    ("buckets", "INTEGER"),
    ("evidence", "VARCHAR"),  # JSON, docs/spec/analysis.md
    ("controls", "VARCHAR"),  # JSON
    (
        "members",
        "VARCHAR",
    ),  # JSON: a country event's network events and networks/services/functions
    ("story", "VARCHAR"),
    ("rules_version", "VARCHAR"),
    ("detector_version", "VARCHAR"),
)


def names(columns: Columns) -> tuple[str, ...]:
    """The column names of a table, in order."""
    return tuple(name for name, _ in columns)
