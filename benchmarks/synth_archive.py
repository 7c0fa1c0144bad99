"""A synthetic collector data directory made from the real lab measurements, for the analysis benchmarks.

    .venv/bin/python benchmarks/synth_archive.py DATA                  # 200,000 measurements
    .venv/bin/python benchmarks/synth_archive.py DATA --count 50000 --networks 200 --days 14

What it writes is what a collector writes: ``DATA/store-id``, ``DATA/archive/YYYY-MM-DD/NNNNNN.jsonl.gz``
(gzip members of archive records, :func:`~msgwatch.collector.store.records.record_line`, appended by
the store's :class:`~msgwatch.collector.store.archive.Archive`) and the SQLite index
(``DATA/index.sqlite3``, rows committed with the archive's progress by the index's own ``commit``),
so ``ArchiveSource`` and ``msgwatch collector serve`` read it as their own. Plus ``DATA/synth.json``:
the configuration and the injected blocking periods (the ground truth).

Rules:

- Base measurements: the 40 of ``tests/data/lab-measurements.jsonl.gz`` (format 0.3.0, az-2017 and
  baseline scenarios), judged once by :func:`msgwatch.analysis.verdicts.judge`: per service, the
  bases with an interference verdict (*failing*) and those without (*ok*).
- Networks: ``--networks`` networks (``AS64600`` on) in ``--countries`` countries, each with 1–3
  probes (per-network tags, as :mod:`msgwatch.spool.identity` makes them: 16 hex digits, keys
  ``<tag>.<32 hex>``); each network measures the services that have a failing base plus others, up
  to ``--services`` services, evenly over ``--days`` days with jitter.
- Failures: every series has its own background failure rate (0–3 %); in about a third of the
  countries a blocking campaign hits a service with a failing base on most of the country's networks:
  an episodic phase (50 % of the measurements fail) then a continuous one (all fail), each a few
  days, at times that differ per country. A failing measurement is a failing base of that service.
- Each copy gets the network's ``probe_cc``, ``probe_asn``, name, its own times and ``report_id``;
  the base's JSON is encoded once and spliced, so a copy costs no encoding.
- Groups of ``--group`` measurements in time order, each written as the collector's writer writes
  a group: gzip members (level 1) of at most ``MAX_MEMBER_BYTES`` of text (about 170 lab
  measurements), compressed on two threads while the next are built; all of a group share a
  reception time a few minutes after its last measurement (the archive's day is that time's).

Prints its own time and size.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gzip
import hashlib
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from msgwatch.analysis.verdicts import judge  # noqa: E402
from msgwatch.collector.store import open_index  # noqa: E402
from msgwatch.collector.store.archive import Archive, compress_member, make_store_id  # noqa: E402
from msgwatch.collector.store.index import IndexRow  # noqa: E402
from msgwatch.collector.store.records import dumps, record_line  # noqa: E402
from msgwatch.collector.store.writer import (  # noqa: E402
    COMPRESSION_LEVEL,
    MAX_MEMBER_BYTES,
    make_uid,
    received_text,
)
from msgwatch.collector.summary import SummaryRow, summarise  # noqa: E402
from msgwatch.measurement import vocab  # noqa: E402

LAB = ROOT / "tests" / "data" / "lab-measurements.jsonl.gz"
TRUTH_FILE = "synth.json"
COUNTRIES = (
    "AZ", "BY", "CN", "CU", "EG", "ET", "IN", "IR", "KZ", "MM",
    "PK", "RU", "SA", "SD", "SY", "TM", "TR", "UZ", "VE", "VN",
)  # fmt: skip
VARIED = ("probe_cc", "probe_asn", "probe_network_name", "measurement_start_time",
          "test_start_time", "report_id")  # fmt: skip
TIME = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class SynthConfig:
    count: int = 200_000
    networks: int = 200
    countries: int = 20
    days: int = 14
    services: int = 5
    """Services each network measures (those with a failing base first)."""
    group: int = 1000
    """Measurements per gzip member."""
    seed: int = 11
    start: dt.datetime = dt.datetime(2026, 10, 5, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Base:
    service: str
    test_name: str
    body: bytes
    """The measurement's JSON without :data:`VARIED`: ``{...}``."""
    summary: SummaryRow


@dataclass(frozen=True)
class Network:
    cc: str
    asn: str
    name: str
    tags: tuple[str, ...]
    services: tuple[str, ...]
    background: dict[str, float]


@dataclass(frozen=True)
class Period:
    """An injected blocking period: ``share`` of the measurements of ``service`` fail."""

    cc: str
    asns: tuple[str, ...]
    service: str
    start: dt.datetime
    end: dt.datetime
    share: float
    pattern: str

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["start"], out["end"] = self.start.strftime(TIME), self.end.strftime(TIME)
        return out


@dataclass
class Synth:
    """The generator's plan: bases, networks, periods, and a random source."""

    config: SynthConfig
    ok: dict[str, list[Base]]
    failing: dict[str, list[Base]]
    networks: list[Network] = field(default_factory=list)
    periods: list[Period] = field(default_factory=list)


def load_bases(path: Path = LAB) -> tuple[dict[str, list[Base]], dict[str, list[Base]]]:
    """The lab's measurements as bases, split by service into ok and failing ones."""
    ok: dict[str, list[Base]] = {}
    failing: dict[str, list[Base]] = {}
    with gzip.open(path) as f:
        for line in f:
            measurement = orjson.loads(line)
            verdicts = {str(r.get("verdict")) for r in judge(measurement)}
            summary = summarise(measurement, measurement.get("report_id"))
            service = summary.service or str(measurement.get("input"))
            body = orjson.dumps({k: v for k, v in measurement.items() if k not in VARIED})
            base = Base(service, str(measurement["test_name"]), body, summary)
            side = failing if verdicts & set(vocab.INTERFERENCE) else ok
            side.setdefault(service, []).append(base)
    return ok, failing


def plan(config: SynthConfig, rng: random.Random) -> Synth:
    """Networks (with their services and background rates) and the injected periods."""
    ok, failing = load_bases()
    synth = Synth(config, ok, failing)
    blockable = sorted(s for s in failing if s in ok)
    others = sorted(s for s in ok if s not in failing)
    countries = COUNTRIES[: config.countries]
    for i in range(config.networks):
        cc = countries[i % len(countries)]
        asn = f"AS{64600 + i}"
        tags = tuple(
            hashlib.sha256(f"{config.seed}/{asn}/{p}".encode()).hexdigest()[:16]
            for p in range(rng.randint(1, 3))
        )
        extra = rng.sample(others, max(0, min(len(others), config.services - len(blockable))))
        services = tuple(blockable[: config.services] + extra)
        background = {s: rng.uniform(0.0, 0.03) if s in failing else 0.0 for s in services}
        synth.networks.append(Network(cc, asn, f"Synthetic ISP {i}", tags, services, background))
    span = dt.timedelta(days=config.days)
    for cc in countries[::3]:
        asns = tuple(n.asn for n in synth.networks if n.cc == cc and rng.random() < 0.7)
        if not asns or not blockable:
            continue
        service = rng.choice(blockable)
        start = config.start + span * rng.uniform(0.15, 0.5)
        episodic = dt.timedelta(hours=rng.uniform(24, 72))
        continuous = dt.timedelta(hours=rng.uniform(24, 96))
        synth.periods.append(Period(cc, asns, service, start, start + episodic, 0.5, "episodic"))
        after = start + episodic
        synth.periods.append(
            Period(cc, asns, service, after, after + continuous, 1.0, "continuous")
        )
    return synth


def schedule(synth: Synth, rng: random.Random) -> list[tuple[dt.datetime, int, str]]:
    """``(time, network index, service)`` of every measurement, in time order."""
    series = [(i, s) for i, n in enumerate(synth.networks) for s in n.services]
    per, extra = divmod(synth.config.count, len(series))
    span = synth.config.days * 86400
    out: list[tuple[dt.datetime, int, str]] = []
    for k, (i, service) in enumerate(series):
        n = per + (1 if k < extra else 0)
        step = span / max(n, 1)
        for j in range(n):
            at = synth.config.start + dt.timedelta(seconds=(j + rng.uniform(0, 0.5)) * step)
            out.append((at.replace(microsecond=0), i, service))
    out.sort()
    return out


def pick(synth: Synth, network: Network, service: str, at: dt.datetime, rng: random.Random) -> Base:
    """The base of one measurement: failing inside a period (by its share) or by background."""
    share = network.background.get(service, 0.0)
    for p in synth.periods:
        if p.service == service and network.asn in p.asns and p.start <= at < p.end:
            share = p.share
    failing = synth.failing.get(service)
    if failing and rng.random() < share:
        return rng.choice(failing)
    return rng.choice(synth.ok[service])


def copy_of(
    base: Base, network: Network, at: dt.datetime, report_id: str
) -> tuple[bytes, SummaryRow]:
    """The measurement's JSON (the base spliced with the network and times) and its summary."""
    when = at.strftime(TIME)
    head = b"".join(
        (
            b'{"probe_cc":', dumps(network.cc), b',"probe_asn":', dumps(network.asn),
            b',"probe_network_name":', dumps(network.name),
            b',"measurement_start_time":', dumps(when), b',"test_start_time":', dumps(when),
            b',"report_id":', dumps(report_id),
        )
    )  # fmt: skip
    body = head + (b"," + base.body[1:] if len(base.body) > 2 else b"}")
    summary = dataclasses.replace(
        base.summary,
        report_id=report_id,
        measurement_start_time=when,
        probe_cc=network.cc,
        probe_asn=network.asn,
    )
    return body, summary


@dataclass
class Group:
    now: dt.datetime
    lines: list[bytes]
    rows: list[tuple[str, str, str, SummaryRow, int, int]]
    """Per line: uid, key, received_at, summary, offset and length in the member."""


def groups(synth: Synth, rng: random.Random) -> Iterator[Group]:
    """The archive's members, in time order (lines built, not yet compressed): a group's, of at
    most ``MAX_MEMBER_BYTES`` of text each."""
    entries = schedule(synth, rng)
    size = max(1, synth.config.group)
    for first in range(0, len(entries), size):
        chunk = entries[first : first + size]
        now = chunk[-1][0] + dt.timedelta(seconds=rng.randint(60, 600))
        received = received_text(now)
        group = Group(now, [], [])
        offset = 0
        for at, i, service in chunk:
            network = synth.networks[i]
            base = pick(synth, network, service, at, rng)
            tag = rng.choice(network.tags)
            report_id = f"{at:%Y%m%dT000000Z}_msgwatch_{network.cc}_{network.asn[2:]}_n1_{tag[:16]}"
            body, summary = copy_of(base, network, at, report_id)
            uid = make_uid(now, network.cc, base.test_name)
            key = f"{tag}.{rng.getrandbits(128):032x}"
            line = record_line(uid, key, report_id, received, body)
            if group.lines and offset + len(line) + 1 > MAX_MEMBER_BYTES:  # as the writer splits
                yield group
                group, offset = Group(now, [], []), 0
            group.lines.append(line)
            group.rows.append((uid, key, received, summary, offset, len(line)))
            offset += len(line) + 1
        yield group


def write(data_dir: Path, config: SynthConfig) -> dict[str, Any]:
    """Write the data directory (fresh: refuses one that has an archive); returns figures."""
    archive = Archive(data_dir)
    if archive.files():
        raise SystemExit(f"{data_dir} already holds an archive: give a fresh directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(config.seed)
    started = time.perf_counter()
    synth = plan(config, rng)
    index = open_index(data_dir)
    index.open_writer(make_store_id(data_dir))
    raw = compressed = measurements = 0
    try:
        with ThreadPoolExecutor(2, thread_name_prefix="synth-gzip") as pool:
            pending: list[tuple[Group, Future[bytes]]] = []
            for group in groups(synth, rng):
                text = b"\n".join([*group.lines, b""])
                raw += len(text)
                pending.append((group, pool.submit(compress_member, text, COMPRESSION_LEVEL)))
                group.lines = []
                if len(pending) >= 3:
                    compressed += _commit(archive, index, *pending.pop(0))
            for done in pending:
                compressed += _commit(archive, index, *done)
            measurements = config.count
    finally:
        index.close()
    seconds = time.perf_counter() - started
    truth = {
        "config": {**dataclasses.asdict(config), "start": config.start.strftime(TIME)},
        "periods": [p.to_json() for p in synth.periods],
        "networks": [{"cc": n.cc, "asn": n.asn, "probes": len(n.tags)} for n in synth.networks],
    }
    (data_dir / TRUTH_FILE).write_bytes(orjson.dumps(truth, option=orjson.OPT_INDENT_2))
    return {
        "measurements": measurements,
        "seconds": seconds,
        "raw_bytes": raw,
        "archive_bytes": compressed,
        "periods": len(synth.periods),
    }


def _commit(archive: Archive, index: Any, group: Group, member: Future[bytes]) -> int:
    """Append a group's member, then commit its index rows with the file's progress."""
    data = member.result()
    placement = archive.append(group.now.strftime("%Y-%m-%d"), data)
    rows = [
        IndexRow(uid, key, received, summary, placement.file, placement.offset,
                 placement.length, offset, length)
        for uid, key, received, summary, offset, length in group.rows
    ]  # fmt: skip
    index.commit(rows, {placement.file: placement.offset + placement.length})
    return len(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    defaults = SynthConfig()
    for name in ("count", "networks", "countries", "days", "services", "group", "seed"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))
    args = parser.parse_args(argv)
    if not 1 <= args.countries <= len(COUNTRIES) or args.networks < 1 or args.count < 1:
        parser.error(f"--countries is 1..{len(COUNTRIES)}; --networks and --count at least 1")
    config = SynthConfig(
        **{k: getattr(args, k) for k in ("count", "networks", "countries", "days", "services")},
        group=args.group,
        seed=args.seed,
    )
    figures = write(args.data_dir, config)
    print(
        f"synth_archive: {figures['measurements']:,} measurements in {figures['seconds']:.1f} s "
        f"({figures['measurements'] / figures['seconds']:,.0f}/s); "
        f"{figures['raw_bytes'] / 1e9:.2f} GB of records, {figures['archive_bytes'] / 1e9:.2f} GB "
        f"archived; {figures['periods']} blocking periods ({args.data_dir / TRUTH_FILE})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
