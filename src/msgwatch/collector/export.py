"""Export the collector's archive as JSON Lines or Parquet.

``export(data_dir, fmt, out, since=None, until=None) -> int`` reads the archive (the source of
truth) in the order it was written and writes each stored measurement **exactly once**: a record
is exported only when the index holds its uid as the measurement of its key. That skips what the
archive may hold without being a stored measurement — a group written and synced whose index
commit failed, followed by the client's retry written again under a new uid (see
:mod:`msgwatch.collector.store.writer`) — and what a running collector has written but not yet
committed. A torn trailing member is not an error here (the collector may be writing it).

``since``/``until`` select on ``measurement_start_time`` like the read API (inclusive, exclusive):
a ``date``, a ``datetime`` or the text ``YYYY-MM-DD[ HH:MM:SS]``. The index answers which uids of
each archive file are in range, so files with nothing to export are not even read.

Formats:

- ``jsonl``: one measurement per line, as stored, with ``measurement_uid`` set to the collector's
  uid (OONI's own exports carry it the same way; a value sent by the probe is replaced).
- ``parquet`` (via DuckDB): flat summary columns — ``measurement_uid``, ``report_id``,
  ``measurement_start_time``, ``received_at``, ``probe_cc``, ``probe_asn``, ``test_name``,
  ``software_name``, ``input`` (text: the string, or the JSON of another value), ``verdicts`` (a
  list of ``{service, function, verdict, mechanism}``) — and ``measurement``, the raw measurement
  as a JSON string. The rows are staged as JSON lines next to ``out`` and converted with an
  explicit schema, so no type is guessed from the data.

The export opens the index read-only and takes no lock: it can run beside a live collector. With
a PostgreSQL index pass its URL as ``database``. The output is written to a temporary name and
renamed into place, so ``out`` is never a half-written file.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from msgwatch.collector.store import open_index
from msgwatch.collector.store.archive import Archive, lines_of
from msgwatch.collector.store.base import StoreUnavailable
from msgwatch.collector.store.index import Index
from msgwatch.collector.store.writer import STORE_ID_FILE, dumps, parse_record
from msgwatch.collector.summary import summarise

Format = Literal["jsonl", "parquet"]
TimeBound = str | dt.date | dt.datetime | None

_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$")

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
    "verdicts": "STRUCT(service VARCHAR, function VARCHAR, verdict VARCHAR, mechanism VARCHAR)[]",
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
    index = open_index(data_dir, database, readonly=True)
    try:
        store_id = (data_dir / STORE_ID_FILE).read_text().strip()
        index.check_identity(store_id)
        temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            if fmt == "jsonl":
                count = _write_jsonl(data_dir, index, first, last, temporary)
            else:
                count = _write_parquet(data_dir, index, first, last, temporary)
            os.replace(temporary, out)
        finally:
            temporary.unlink(missing_ok=True)
    finally:
        index.close()
    return count


def time_bound(value: TimeBound) -> str | None:
    """A bound as the index compares it: ``YYYY-MM-DD HH:MM:SS`` (a day means its midnight)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d 00:00:00")
    text = value.strip().replace("T", " ")
    if not _TIME.match(text):
        raise ValueError(f"not YYYY-MM-DD[ HH:MM:SS]: {value!r}")
    return text if len(text) > 10 else text + " 00:00:00"


def stored_records(
    data_dir: Path, index: Index, since: str | None, until: str | None
) -> Iterator[tuple[str, str | None, str, dict[str, Any], bytes]]:
    """``(uid, report_id, received_at, measurement, measurement_json)`` of each stored
    measurement in range, in archive order, each once."""
    archive = Archive(data_dir)
    for file in archive.files():
        canonical = index.canonical_uids(file, since, until)
        if not canonical:
            continue
        for member in archive.scan(file, 0):
            for _, line in lines_of(member.data):
                parsed = parse_record(line)
                if parsed is None or parsed[0] not in canonical:
                    continue
                uid, _, report_id, received_at, measurement = parsed
                canonical.discard(uid)  # each once, even if a damaged file repeated a member
                yield uid, report_id, received_at, measurement, line


def _write_jsonl(
    data_dir: Path, index: Index, since: str | None, until: str | None, path: Path
) -> int:
    count = 0
    with open(path, "wb") as f:
        for uid, _, _, measurement, _ in stored_records(data_dir, index, since, until):
            measurement["measurement_uid"] = uid
            f.write(dumps(measurement) + b"\n")
            count += 1
        _sync(f)
    return count


def _write_parquet(
    data_dir: Path, index: Index, since: str | None, until: str | None, path: Path
) -> int:
    import duckdb

    staging = path.with_name(path.name + ".jsonl")
    count = 0
    try:
        with open(staging, "wb") as f:
            for uid, report_id, received_at, measurement, _ in stored_records(
                data_dir, index, since, until
            ):
                summary = summarise(measurement, report_id)
                raw_input = measurement.get("input")
                row = {
                    "measurement_uid": uid,
                    "report_id": summary.report_id,
                    "measurement_start_time": summary.measurement_start_time,
                    "received_at": received_at,
                    "probe_cc": summary.probe_cc,
                    "probe_asn": summary.probe_asn,
                    "test_name": summary.test_name,
                    "software_name": summary.software_name,
                    "input": raw_input
                    if isinstance(raw_input, str) or raw_input is None
                    else summary.input_json,
                    "verdicts": [v.as_dict() for v in summary.verdicts],
                    "measurement": dumps(measurement).decode(),
                }
                f.write(orjson.dumps(row) + b"\n")
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
    with open(path, "rb+") as f:
        _sync(f)
    return count


def _sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
