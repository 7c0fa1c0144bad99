"""Export the collector's archive as JSON Lines or Parquet.

``export(data_dir, fmt, out, since=None, until=None) -> int`` writes each stored measurement
**exactly once**, in the order it was written: it reads the store through its public scan
(:mod:`msgwatch.collector.store.scan`, whose rules say what "stored" means and what a torn member
or a record without an index row does), on a read-only ``StoreReader`` (``store.open_reader``)
that takes no lock, so it can run beside a live collector. With a PostgreSQL index
pass its URL as ``database``.

``since``/``until`` select on ``measurement_start_time`` like the read API (inclusive, exclusive):
a ``date``, a ``datetime`` or the text ``YYYY-MM-DD[ HH:MM:SS]``; a bound of another form is a
``ValueError`` before anything is read.

Formats:

- ``jsonl``: one measurement per line, as stored, with ``measurement_uid`` set to the collector's
  uid (OONI's own exports carry it the same way; a value sent by the probe is replaced).
- ``parquet`` (via DuckDB): flat summary columns — ``measurement_uid``, ``report_id``,
  ``measurement_start_time``, ``received_at``, ``probe_cc``, ``probe_asn``, ``test_name``,
  ``software_name``, ``input`` (text: the string, or the JSON of another value), ``service`` (a
  catalogue id or null) and ``functions`` (a list): what it measured (:mod:`.summary`) — and
  ``measurement``, the raw measurement as a JSON string. The rows are staged as JSON lines next to ``out`` and converted with an
  explicit schema, so no type is guessed from the data.

The output is written under a temporary name, synced and renamed into place
(:func:`msgwatch.durable.replacing`), so ``out`` is never a half-written file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import orjson

from msgwatch.collector.store import Record, StoreUnavailable, TimeBound, open_reader
from msgwatch.collector.store.records import dumps
from msgwatch.collector.store.scan import time_bound
from msgwatch.collector.summary import summarise
from msgwatch.durable import replacing

Format = Literal["jsonl", "parquet"]
__all__ = ["PARQUET_COLUMNS", "Format", "export", "time_bound"]

PARQUET_COLUMNS = {
    "measurement_uid": "VARCHAR",
    "report_id": "VARCHAR",
    "measurement_start_time": "VARCHAR",
    "received_at": "VARCHAR",
    "probe_cc": "VARCHAR",
    "probe_asn": "VARCHAR",
    "test_name": "VARCHAR",
    "software_name": "VARCHAR",
    "input": "VARCHAR",
    "service": "VARCHAR",
    "functions": "VARCHAR[]",
    "measurement": "VARCHAR",
}


def export(
    data_dir: Path,
    fmt: str,
    out: Path,
    since: TimeBound = None,
    until: TimeBound = None,
    *,
    database: str | None = None,
) -> int:
    """Write every stored measurement (in range) to ``out``; the number written."""
    if fmt not in ("jsonl", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}: jsonl or parquet")
    first, last = time_bound(since), time_bound(until)
    try:
        return _export(data_dir, fmt, out, first, last, database)
    except StoreUnavailable as exc:  # callers handle OSError: the data cannot be read
        raise OSError(f"cannot read the index: {exc}") from exc


def _export(
    data_dir: Path, fmt: str, out: Path, first: str | None, last: str | None, database: str | None
) -> int:
    with open_reader(data_dir, database) as reader, replacing(out) as temporary:
        records = reader.scan(first, last)
        if fmt == "jsonl":
            return _write_jsonl(records, temporary)
        return _write_parquet(records, temporary)


def _write_jsonl(records: Iterator[Record], path: Path) -> int:
    count = 0
    with open(path, "wb") as f:
        for record in records:
            record.measurement["measurement_uid"] = record.uid
            f.write(dumps(record.measurement) + b"\n")
            count += 1
    return count


def _write_parquet(records: Iterator[Record], path: Path) -> int:
    import duckdb

    staging = path.with_name(path.name + ".jsonl")
    count = 0
    try:
        with open(staging, "wb") as f:
            for record in records:
                f.write(orjson.dumps(_parquet_row(record)) + b"\n")
                count += 1
        columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in PARQUET_COLUMNS.items()) + "}"
        with duckdb.connect(":memory:") as db:
            db.execute(
                "COPY (SELECT * FROM read_json(?, format = 'newline_delimited', "
                f"columns = {columns}, maximum_object_size = 268435456)) "
                "TO ? (FORMAT parquet, COMPRESSION zstd)",
                [str(staging), str(path)],
            )
    finally:
        staging.unlink(missing_ok=True)
    return count


def _parquet_row(record: Record) -> dict[str, object]:
    measurement = record.measurement
    summary = summarise(measurement, record.report_id)
    raw_input = measurement.get("input")
    return {
        "measurement_uid": record.uid,
        "report_id": summary.report_id,
        "measurement_start_time": summary.measurement_start_time,
        "received_at": record.received_at,
        "probe_cc": summary.probe_cc,
        "probe_asn": summary.probe_asn,
        "test_name": summary.test_name,
        "software_name": summary.software_name,
        "input": raw_input
        if isinstance(raw_input, str) or raw_input is None
        else summary.input_json,
        "service": summary.service,
        "functions": list(summary.functions),
        "measurement": dumps(measurement).decode(),
    }
