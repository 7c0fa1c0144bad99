"""The lake's layout rules: what the state does not list is removed; a bad state is no state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from msgwatch.analysis import lake
from msgwatch.analysis.schema import VERDICT_COLUMNS


def test_unlisted_files_and_the_work_folder_are_removed(tmp_path: Path) -> None:
    lake.prepare(tmp_path)
    kept = lake.part_path("verdicts", "2026-05-22", 1, 0)
    for name in (
        kept,
        lake.part_path("verdicts", "2026-05-23", 2, 0),
        lake.pass_file("aggregates", 2, ".parquet"),
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "verdicts" / "day=2026-05-22" / ".pass-000002-0.parquet.1234abcd.tmp").write_bytes(
        b"x"
    )
    state = {
        "pass": 1,
        "files": {"verdicts": [kept], "aggregates": "aggregates/pass-000001.parquet"},
    }
    assert lake.remove_unlisted(tmp_path, state) == 3
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")] == [kept]
    assert not (tmp_path / "verdicts" / "day=2026-05-23").exists()
    assert not (tmp_path / lake.WORK).exists()


def test_links_in_the_lake_are_removed_never_followed(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    lake.prepare(out)
    outside.mkdir()
    (outside / "keep.parquet").write_bytes(b"x")
    day = out / "verdicts" / "day=2026-05-22"
    day.mkdir(parents=True)
    (day / "file-link.parquet").symlink_to(outside / "keep.parquet")
    (day / "folder-link").symlink_to(outside)
    (out / "aggregates" / "dangling.parquet").symlink_to(tmp_path / "nowhere")
    assert lake.remove_unlisted(out, {"files": {}}) == 3
    assert (outside / "keep.parquet").read_bytes() == b"x"  # what they pointed at is untouched
    assert not day.exists() and not (out / "aggregates" / "dangling.parquet").is_symlink()


def test_a_state_that_is_not_an_object_or_a_link_is_no_state(tmp_path: Path) -> None:
    assert lake.read_state(tmp_path) is None
    (tmp_path / lake.STATE).write_bytes(b"[1]")
    assert lake.read_state(tmp_path) is None
    (tmp_path / lake.STATE).write_bytes(b"{broken")
    assert lake.read_state(tmp_path) is None
    (tmp_path / "elsewhere.json").write_bytes(b'{"pass": 3}')
    (tmp_path / lake.STATE).unlink()
    (tmp_path / lake.STATE).symlink_to(tmp_path / "elsewhere.json")
    assert lake.read_state(tmp_path) is None
    lake.write_state(tmp_path, {"pass": 3})  # replaces the link itself
    assert lake.read_state(tmp_path) == {"pass": 3}
    assert lake.read_json_file(tmp_path, "../outside.json") is None


def test_the_flusher_writes_in_the_background_and_raises_its_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = lake.prepare(tmp_path)
    stager = lake.Stager(tmp_path, work, "verdicts", VERDICT_COLUMNS, 1)
    threads: list[str] = []
    write_parts = stager.write_parts

    def recorded(*args: Any) -> None:
        threads.append(threading.current_thread().name)
        write_parts(*args)

    monkeypatch.setattr(stager, "write_parts", recorded)
    row = b'{"measurement_uid": "u1", "day": "2026-05-22", "service": "whatsapp"}\n'
    with lake.connect(work) as connection, lake.Flusher(connection) as flusher:
        stager.add({"2026-05-22": [row]}, {"2026-05-22": 1})
        flusher.flush([stager])
        stager.add({"2026-05-22": [row]}, {"2026-05-22": 1})  # staged while it writes
        flusher.flush([stager])
        flusher.wait()
        assert stager.written == [
            lake.part_path("verdicts", "2026-05-22", 1, 0),
            lake.part_path("verdicts", "2026-05-22", 1, 1),
        ]
        for part in stager.written:
            (count,) = connection.execute(
                f"SELECT count(*) FROM read_parquet({lake.sql_text(str(tmp_path / part))})"
            ).fetchone() or (0,)
            assert count == 1
        assert not list((work / "verdicts").iterdir())  # the staging files are gone
        assert threads and all(name.startswith("msgwatch-flush") for name in threads), threads
        stager.add({"2026-05-23": [b'{"day": "2026-05-23", "confidence": "high"}\n']},
                   {"2026-05-23": 1})  # fmt: skip
        flusher.flush([stager])
        with pytest.raises(Exception, match=r"(?i)conver|cast|could not"):
            flusher.wait()


def test_the_flusher_writes_on_one_duckdb_thread_and_gives_the_others_back(tmp_path: Path) -> None:
    def threads(connection: Any) -> int:
        (value,) = connection.execute("SELECT current_setting('threads')").fetchone() or (0,)
        return int(value)

    work = lake.prepare(tmp_path)
    with lake.connect(work) as connection:
        assert threads(connection) == lake.DUCKDB_THREADS > lake.FLUSH_THREADS
        with lake.Flusher(connection):
            assert threads(connection) == lake.FLUSH_THREADS  # the workers have the cores
        assert threads(connection) == lake.DUCKDB_THREADS  # the aggregates and events get them


def test_measurement_lines_give_the_rows_that_whole_rows_give(tmp_path: Path) -> None:
    """A measurement's observations said once per measurement (its envelope in ``m``, each row's
    own columns in ``r``) are written as the same Parquet rows, types and order as the whole rows
    one per line; a column a row does not name is NULL, and text that looks like JSON stays text."""
    from msgwatch.analysis.schema import ENVELOPE_COLUMNS, OBSERVATION_COLUMNS, names
    from msgwatch.analysis.workers import measurement_line

    envelope: dict[str, Any] = {
        "measurement_uid": "u1", "measurement_start_time": "2026-05-22 10:00:00",
        "day": "2026-05-22", "probe_cc": "AZ", "probe_asn": "AS28787", "probe_tag": "p1",
        "source": "msgwatch", "test_name": "msgwatch_service",
    }  # fmt: skip
    parts: list[list[dict[str, Any]]] = [
        [
            {"service": "whatsapp", "function": "text", "kind": "dns", "hostname": "a\u2028b",
             "answers": '["198.18.0.1"]', "t0": 0.5, "transaction_id": 2**40},
            {"service": "whatsapp", "function": "voice", "kind": "replay", "loss": 1.0,
             "packets_sent": 25, "port": 3478, "failure": None},
        ],
        [{"service": None, "function": None, "kind": "tcp", "ip": "198.18.0.2", "attempt": 2}],
    ]  # fmt: skip
    envelopes = [envelope, {**envelope, "measurement_uid": "u2", "probe_tag": None}]
    whole = [
        {**dict.fromkeys(names(OBSERVATION_COLUMNS)), **env, **own}
        for env, rows in zip(envelopes, parts, strict=True)
        for own in rows
    ]
    work = tmp_path / "work"
    work.mkdir()
    nested = lake.Stager(tmp_path / "a", work, "o1", OBSERVATION_COLUMNS, 1, ENVELOPE_COLUMNS)
    flat = lake.Stager(tmp_path / "b", work, "o2", OBSERVATION_COLUMNS, 1)
    lines = [measurement_line(env, rows) for env, rows in zip(envelopes, parts, strict=True)]
    nested.add({"2026-05-22": lines}, {"2026-05-22": 3})
    flat.add({"2026-05-22": [orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in whole]},
             {"2026-05-22": 3})  # fmt: skip
    with lake.connect(work) as connection:
        nested.flush(connection)
        flat.flush(connection)
        read = [
            connection.execute(f"SELECT * FROM read_parquet('{out}/*/*/*.parquet')").fetchall()
            for out in (tmp_path / "a", tmp_path / "b")
        ]
        types = [
            connection.execute(
                f"DESCRIBE SELECT * FROM read_parquet('{out}/*/*/*.parquet')"
            ).fetchall()
            for out in (tmp_path / "a", tmp_path / "b")
        ]
    assert read[0] == read[1] and len(read[0]) == 3
    assert types[0] == types[1]
    first = dict(zip(names(OBSERVATION_COLUMNS), read[0][0], strict=True))
    assert first["hostname"] == "a\u2028b" and first["transaction_id"] == 2**40
    assert first["answers"] == '["198.18.0.1"]' and first["loss"] is None
    assert dict(zip(names(OBSERVATION_COLUMNS), read[0][2], strict=True))["probe_tag"] is None
