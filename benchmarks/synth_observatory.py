"""A synthetic observatory: a year of hourly aggregates and events written directly as a lake, for
the dashboard's benchmark (benchmarks/dashboard.py).

    .venv/bin/python benchmarks/synth_observatory.py                 # 210 networks, 15 countries, 365 days
    .venv/bin/python benchmarks/synth_observatory.py OUT --networks 40 --days 60 --seed 2

What it writes is what an analysis pass writes (``msgwatch.analysis.lake``, docs/spec/analysis.md):
``aggregates/pass-000001-YYYY-MM.parquet`` (one per month, sorted as the pass sorts them), ``events/pass-000001.parquet`` and
``.json``, ``detector/pass-000001.json``, day-partitioned ``verdicts`` and ``observations`` parts named
by :func:`~msgwatch.analysis.lake.part_path`, and ``state.json`` (written last), so
:class:`msgwatch.analysis.query.Lake` and the dashboard's ``Observatory`` read it as their own.

Rules:

- Everything is DuckDB SQL over ``range()``; every draw is a hash of the seed and the row's key
  (no Python loop over rows), so the same parameters give the same lake.
- Networks ``AS64600`` on, spread evenly over ``--countries`` countries; each measures 16 of 24
  service·function series, at its own rate (0.4–3 measurement runs an hour), with 5 % empty
  buckets and up to two outages of 1–5 days; every series fails at its own background rate (0.5–6 %).
- Blocking episodes (6 hours to 30 days; continuous, or episodic: failing 2–8 hours, working as
  long, alternating): country campaigns (a service's calls or all its functions on ~80 % of the
  country's networks) and single-series episodes that overlap no campaign. Inside one, a share of
  30–100 % of the runs fail with the episode's verdict and mechanism.
- Events are derived from the episodes and counted from the same counts the aggregates hold
  (``measurements``, ``failing_share``, the other networks' controls): one network event per episode
  that holds measurements, one country event per campaign of two network events or more. Their evidence measurements (last working before, first 20
  failing, first working after) get verdict rows and observation rows (copied from one real lab
  measurement, tests/data/lab-measurements.jsonl.gz, analysed by the real pass), so event and
  measurement pages have rows.
- Verdict and observation rows are written by one partitioned ``COPY``, each day's file then
  renamed to its part name.
- The output folder holds ``synth.json`` (the parameters, the judge's rules version the rows
  carry, and the summary): a folder whose parameters and rules version match is reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from msgwatch.analysis import lake  # noqa: E402
from msgwatch.analysis.aggregates import write_months  # noqa: E402
from msgwatch.analysis.events.detect import DETECTOR_VERSION  # noqa: E402
from msgwatch.analysis.inputs.jsonl import jsonl_sources  # noqa: E402
from msgwatch.analysis.passes import PassConfig, run_pass  # noqa: E402
from msgwatch.analysis.schema import (  # noqa: E402
    AGGREGATE_COLUMNS,
    EVENT_COLUMNS,
    OBSERVATION_COLUMNS,
    SCHEMA_VERSION,
    VERDICT_COLUMNS,
)
from msgwatch.analysis.transform.verdict_rows import RULES_VERSION  # noqa: E402

LAB = ROOT / "tests" / "data" / "lab-measurements.jsonl.gz"
START = dt.datetime(2025, 12, 1)
COUNTRIES = (
    "AZ",
    "BY",
    "CN",
    "CU",
    "EG",
    "ET",
    "IN",
    "IR",
    "KZ",
    "MM",
    "PK",
    "RU",
    "TM",
    "TR",
    "VE",
)
POOL = (
    ("whatsapp", ("text", "voice", "video", "web", "registration")),
    ("telegram", ("text", "voice", "web", "media")),
    ("signal", ("text", "voice", "registration")),
    ("skype", ("voice", "video", "web")),
    ("viber", ("text", "voice")),
    ("facebook_messenger", ("text", "voice")),
    ("zoom", ("voice", "video")),
    ("discord", ("text", "voice")),
    ("teams", ("voice",)),
)
CALLS = ("voice", "video")
PASS = 1


@dataclasses.dataclass(frozen=True)
class Params:
    """What the lake is made of (the cache key)."""

    networks: int = 210
    countries: int = 15
    days: int = 365
    seed: int = 1
    series_per_network: int = 16


def default_dir(params: Params) -> Path:
    """The cache folder of these parameters (under the temporary folder)."""
    key = f"n{params.networks}-c{params.countries}-d{params.days}-s{params.seed}"
    return Path(tempfile.gettempdir()) / f"msgwatch-synth-observatory-{key}"


SETUP_SQL = """
CREATE MACRO u(a, b, c, d) AS (hash(a, b, c, d) % 1000003) / 1000003.0;
CREATE MACRO at_hour(h) AS TIMESTAMP '{start}' + to_hours(CAST(h AS BIGINT));
CREATE MACRO uid(kind, s, h) AS 'sha256-' || md5(concat_ws(':', {seed}, kind, s, h));
CREATE TABLE pool AS SELECT * FROM (VALUES {pool}) AS t(k, service, function);
CREATE TABLE countries AS SELECT * FROM (VALUES {countries}) AS t(ci, cc);
CREATE TABLE nets AS
SELECT n, 'AS' || (64600 + n) AS asn, cc,
       0.4 + 2.6 * u({seed}, 'rate', n, 0) AS rate,
       1 + CAST(floor(3 * u({seed}, 'probes', n, 0)) AS INTEGER) AS probes,
       CAST(floor({hours} * u({seed}, 'o1', n, 0)) AS INTEGER) AS o1,
       CASE WHEN u({seed}, 'o1n', n, 0) < 0.6 THEN 24 + CAST(floor(96 * u({seed}, 'o1l', n, 0)) AS INTEGER) ELSE 0 END AS o1_len,
       CAST(floor({hours} * u({seed}, 'o2', n, 0)) AS INTEGER) AS o2,
       CASE WHEN u({seed}, 'o2n', n, 0) < 0.3 THEN 24 + CAST(floor(96 * u({seed}, 'o2l', n, 0)) AS INTEGER) ELSE 0 END AS o2_len
FROM range({networks}) r(n) JOIN countries ON ci = n % {ncountries};
CREATE TABLE series AS
SELECT row_number() OVER (ORDER BY n, k) AS s, * FROM (
    SELECT nets.*, pool.k, pool.service, pool.function,
           0.005 + 0.055 * u({seed}, 'bg', n, pool.k) AS bg,
           row_number() OVER (PARTITION BY n ORDER BY hash({seed}, 'pick', n, pool.k)) AS pick
    FROM nets, pool) WHERE pick <= {per_network};
CREATE TABLE campaigns AS
SELECT c.ci * 10 + j AS campaign, c.cc,
       (SELECT list(DISTINCT service ORDER BY service) FROM pool)[1 + CAST(floor(9 * u({seed}, 'csvc', c.ci, j)) AS INTEGER)] AS service,
       u({seed}, 'ccalls', c.ci, j) < 0.5 AS calls_only,
       168 + CAST(floor(({hours} - 504) * u({seed}, 'cstart', c.ci, j)) AS INTEGER) AS start_h,
       12 + CAST(floor(708 * pow(u({seed}, 'clen', c.ci, j), 2)) AS INTEGER) AS len,
       CASE WHEN u({seed}, 'cpat', c.ci, j) < 0.35 THEN 'episodic' ELSE 'continuous' END AS pattern,
       0.6 + 0.4 * u({seed}, 'cshare', c.ci, j) AS share
FROM countries c, range(3) r(j)
WHERE u({seed}, 'cany', c.ci, j) < 0.6 AND c.ci < {ncountries};
CREATE TABLE episodes AS
WITH raw AS (
    SELECT s.s, c.campaign, c.start_h, least(c.start_h + c.len, {hours} + 1) AS end_h, c.pattern, c.share
    FROM campaigns c JOIN series s ON s.cc = c.cc AND s.service = c.service
    WHERE (NOT c.calls_only OR s.function IN {calls}) AND u({seed}, 'cnet', s.s, c.campaign) < 0.8
    UNION ALL
    SELECT s, NULL, start_h, least(start_h + len, {hours} + 1), pattern, share FROM (
        SELECT s,
               168 + CAST(floor(({hours} - 192) * u({seed}, 'estart', s, 0)) AS INTEGER) AS start_h,
               6 + CAST(floor(330 * u({seed}, 'elen', s, 0)) AS INTEGER) AS len,
               CASE WHEN u({seed}, 'epat', s, 0) < 0.35 THEN 'episodic' ELSE 'continuous' END AS pattern,
               0.3 + 0.7 * u({seed}, 'eshare', s, 0) AS share
        FROM series WHERE u({seed}, 'eany', s, 0) < 0.12) e
    WHERE NOT EXISTS (SELECT 1 FROM campaigns c JOIN series x ON x.cc = c.cc AND x.service = c.service
                      WHERE x.s = e.s AND e.start_h < c.start_h + c.len + 48 AND c.start_h < e.start_h + e.len + 48)
)
SELECT row_number() OVER (ORDER BY s, start_h) AS e, raw.*,
       CASE WHEN x.function IN {calls} THEN 'blocked' WHEN u({seed}, 'thr', raw.s, start_h) < 0.2 THEN 'throttled' ELSE 'blocked' END AS verdict,
       CASE WHEN x.function IN {calls} THEN 'udp.dpi_call' WHEN u({seed}, 'thr', raw.s, start_h) < 0.2 THEN 'throttle'
            WHEN u({seed}, 'mech', raw.s, start_h) < 0.5 THEN 'tls.reset' ELSE 'dns.forged' END AS mechanism,
       2 + CAST(floor(7 * u({seed}, 'period', raw.s, start_h)) AS INTEGER) AS period
FROM raw JOIN series x USING (s);
CREATE TABLE cnt AS
WITH grid AS (
    SELECT s.s, s.bg, h,
           CAST(floor(greatest(0, s.rate + (u({seed}, s.n, s.service, h) - 0.5) * 2 * sqrt(s.rate))
                      + u({seed} + 1, s.n, s.service, h)) AS INTEGER) AS runs
    FROM series s, range({hours}) r(h)
    WHERE NOT (h >= o1 AND h < o1 + o1_len) AND NOT (h >= o2 AND h < o2 + o2_len)
      AND u({seed}, 'gap', s.s, h) >= 0.05
), drawn AS (
    SELECT g.s, g.h, g.runs, e.e,
           least(g.runs, CAST(floor(g.runs * (
               CASE WHEN e.e IS NULL OR (e.pattern = 'episodic' AND ((g.h - e.start_h) // e.period) % 2 = 1)
                    THEN g.bg ELSE e.share + (1 - e.share) * g.bg END) + u({seed}, 'f', g.s, g.h)) AS INTEGER)) AS failing,
           CASE WHEN u({seed}, 'inc', g.s, g.h) < 0.03 THEN 1 ELSE 0 END AS inc_draw
    FROM grid g LEFT JOIN episodes e ON e.s = g.s AND g.h >= e.start_h AND g.h < e.end_h
    WHERE g.runs > 0
)
SELECT s, h, runs, e, failing, least(inc_draw, runs - failing) AS inc,
       runs - failing - least(inc_draw, runs - failing) AS ok
FROM drawn;
"""

AGGREGATES_SQL = """
SELECT at_hour(h) AS bucket, CAST(3600 AS INTEGER) AS bucket_seconds, cc AS probe_cc, asn AS probe_asn,
       service, function, r.verdict AS verdict, r.mechanism AS mechanism, CAST(r.m AS BIGINT) AS measurements,
       CAST(least(r.m, probes) AS BIGINT) AS probes,
       CAST(CASE WHEN function IN {calls} AND r.verdict <> 'inconclusive' THEN r.m ELSE 0 END AS BIGINT) AS control_ok
FROM (
    SELECT c.h, x.cc, x.asn, x.service, x.function, x.probes, unnest([
        {{'verdict': 'ok', 'mechanism': '', 'm': c.ok}},
        {{'verdict': coalesce(e.verdict, 'blocked'),
          'mechanism': coalesce(e.mechanism, CASE WHEN x.function IN {calls} THEN 'udp.loss' ELSE 'tcp.timeout' END),
          'm': c.failing}},
        {{'verdict': 'inconclusive', 'mechanism': 'app.unclear', 'm': c.inc}}]) AS r
    FROM cnt c JOIN series x USING (s) LEFT JOIN episodes e USING (e)
) WHERE r.m > 0
ORDER BY bucket, probe_cc, probe_asn, service, function, verdict, mechanism
"""

EVENTS_SQL = """
CREATE TABLE ev_counts AS
SELECT e, sum(runs) AS measurements, sum(failing) AS failing, sum(ok) AS ok FROM cnt WHERE e IS NOT NULL GROUP BY e;
CREATE TABLE ev_near AS
SELECT e.e, x.asn, x.function, x.asn <> se.asn AS other, sum(c.ok) AS ok, sum(c.failing) AS failing
FROM episodes e JOIN series se ON se.s = e.s
JOIN series x ON x.cc = se.cc AND x.service = se.service AND x.s <> se.s
    AND (x.function = se.function OR x.asn = se.asn)
JOIN cnt c ON c.s = x.s AND c.h >= e.start_h AND c.h < e.end_h
GROUP BY ALL;
CREATE TABLE net_events AS
SELECT e.e, e.campaign, e.s, e.start_h, e.end_h,
    'net-' || substr(md5(concat_ws('|', x.cc, x.asn, x.service, x.function, e.start_h)), 1, 20) AS event_id,
    'network' AS level, x.cc AS probe_cc, x.asn AS probe_asn, x.service, x.function, e.verdict, e.mechanism, e.pattern,
    at_hour(e.start_h) AS start, at_hour(e.start_h - 1) AS start_after,
    CASE WHEN e.end_h >= {hours} THEN NULL ELSE at_hour(e.end_h) END AS "end",
    at_hour(least(e.end_h, {hours}) - 1) AS end_before, e.end_h >= {hours} AS ongoing,
    0.9 + 0.1 * u({seed}, 'conf', e.e, 0) AS confidence,
    k.failing / nullif(k.failing + k.ok, 0) AS failing_share,
    CAST(k.measurements AS BIGINT) AS measurements,
    CAST(least(e.end_h, {hours}) - e.start_h AS INTEGER) AS buckets,
    json_object(
        'last_working_before', json_object('measurement_uid', uid('w', e.s, e.start_h - 1),
            'time', strftime(at_hour(e.start_h - 1) + INTERVAL 50 MINUTE, '%Y-%m-%d %H:%M:%S')),
        'first_failing', json_object('measurement_uid', uid('m', e.s, e.start_h),
            'time', strftime(at_hour(e.start_h) + INTERVAL 5 MINUTE, '%Y-%m-%d %H:%M:%S')),
        'inside', list_transform(range(least(20, least(e.end_h, {hours}) - e.start_h)),
                                 lambda k: uid('m', e.s, e.start_h + k)),
        'inside_count', k.failing,
        'first_working_after', CASE WHEN e.end_h >= {hours} THEN NULL ELSE json_object(
            'measurement_uid', uid('w', e.s, e.end_h),
            'time', strftime(at_hour(e.end_h) + INTERVAL 5 MINUTE, '%Y-%m-%d %H:%M:%S')) END
    )::VARCHAR AS evidence,
    json_object(
        'other_networks', coalesce((SELECT list({{'probe_asn': n.asn, 'ok': n.ok, 'failing': n.failing}} ORDER BY n.asn)
                                    FROM ev_near n WHERE n.e = e.e AND n.other), []),
        'other_network_worked', coalesce((SELECT bool_or(n.ok + n.failing >= 3 AND n.ok >= 0.8 * (n.ok + n.failing))
                                          FROM ev_near n WHERE n.e = e.e AND n.other), false),
        'same_network', coalesce((SELECT to_json(map_from_entries(list((n.function, n.ok / nullif(n.ok + n.failing, 0)) ORDER BY n.function)))
                                  FROM ev_near n WHERE n.e = e.e AND NOT n.other), '{{}}'::JSON),
        'control_ok_share', CASE WHEN x.function IN {calls} THEN 1.0 ELSE NULL END
    )::VARCHAR AS controls,
    NULL::VARCHAR AS members,
    format('{{}} {{}} {{}} on {{}} since {{}} UTC ({{}}, {{}}).', x.service, x.function, e.verdict, x.asn,
           strftime(at_hour(e.start_h), '%Y-%m-%d %H:%M'), e.pattern, e.mechanism) AS story
FROM episodes e JOIN series x USING (s) JOIN ev_counts k USING (e);
CREATE TABLE cty_events AS
WITH g AS (
    SELECT probe_cc, campaign, any_value(service) AS service, list(DISTINCT function ORDER BY function) AS functions,
        mode(verdict) AS verdict, mode(mechanism) AS mechanism, mode(pattern) AS pattern,
        min(start) AS start, min(start_after) AS start_after, max("end") AS last_end, max(end_before) AS end_before,
        bool_or(ongoing) AS ongoing, max(confidence) AS confidence,
        sum(failing_share * measurements) / nullif(sum(measurements), 0) AS failing_share,
        CAST(sum(measurements) AS BIGINT) AS measurements, CAST(max(buckets) AS INTEGER) AS buckets,
        list(event_id ORDER BY event_id) AS events, list(DISTINCT probe_asn ORDER BY probe_asn) AS networks
    FROM net_events WHERE campaign IS NOT NULL GROUP BY probe_cc, campaign HAVING count(*) >= 2
)
SELECT 'cty-' || substr(md5(concat_ws('|', probe_cc, campaign, start)), 1, 20) AS event_id, 'country' AS level,
    probe_cc, NULL::VARCHAR AS probe_asn, g.service, CASE WHEN len(g.functions) = 1 THEN g.functions[1] END AS function,
    verdict, mechanism, pattern, start, start_after, CASE WHEN ongoing THEN NULL ELSE last_end END AS "end",
    end_before, ongoing, confidence, failing_share, measurements, buckets,
    json_object('events', events)::VARCHAR AS evidence,
    json_object('works', list_filter(p.functions, lambda f: NOT list_contains(g.functions, f)))::VARCHAR AS controls,
    json_object('events', events, 'networks', networks, 'services', [g.service], 'functions', g.functions)::VARCHAR AS members,
    format('{{}} {{}} on {{}} networks of {{}} since {{}} UTC.', g.service, verdict, len(networks), probe_cc,
           strftime(start, '%Y-%m-%d %H:%M')) AS story
FROM g JOIN (SELECT service, list(function ORDER BY function) AS functions FROM pool GROUP BY service) p USING (service);
"""

EVIDENCE_SQL = """
CREATE TABLE refs AS
SELECT DISTINCT * FROM (
    SELECT e.s, uid('m', e.s, e.start_h + k) AS measurement_uid, e.start_h + k AS h,
           at_hour(e.start_h + k) + INTERVAL 5 MINUTE AS t, true AS failing
    FROM episodes e, range(20) r(k) WHERE e.start_h + k < least(e.end_h, {hours})
    UNION ALL SELECT s, uid('w', s, start_h - 1), start_h - 1, at_hour(start_h - 1) + INTERVAL 50 MINUTE, false FROM episodes
    UNION ALL SELECT s, uid('w', s, end_h), end_h, at_hour(end_h) + INTERVAL 5 MINUTE, false FROM episodes WHERE end_h < {hours});
CREATE TABLE v_all AS
SELECT r.measurement_uid, r.t AS measurement_start_time, CAST(r.t AS DATE) AS day, se.cc AS probe_cc,
    se.asn AS probe_asn, substr(md5(se.asn), 1, 16) AS probe_tag, 'msgwatch' AS source, 'msgwatch_service' AS test_name,
    x.service, x.function,
    CASE WHEN r.failing AND ex.e IS NOT NULL THEN ex.verdict ELSE 'ok' END AS verdict,
    CASE WHEN r.failing AND ex.e IS NOT NULL THEN ex.mechanism END AS mechanism,
    CASE WHEN r.failing AND ex.e IS NOT NULL THEN 0.7 ELSE 1.0 END AS confidence,
    CASE WHEN r.failing AND ex.e IS NOT NULL THEN 'synth.' || ex.mechanism ELSE 'synth.ok' END AS rule_id,
    '{rules_version}' AS rules_version, '[]' AS evidence, NULL::BOOLEAN AS ooni_anomaly,
    CASE WHEN x.function IN {calls} THEN true END AS control_ok,
    CASE WHEN r.failing AND ex.e IS NOT NULL THEN 'Synthetic: ' || ex.mechanism || '.' ELSE 'Synthetic: it worked.' END AS explanation,
    r.failing AND ex.e IS NOT NULL AS broken
FROM refs r JOIN series se ON se.s = r.s JOIN series x ON x.n = se.n AND x.service = se.service
LEFT JOIN episodes ex ON ex.s = x.s AND r.h >= ex.start_h AND r.h < ex.end_h;
CREATE TABLE o_all AS
SELECT m.measurement_uid, m.measurement_start_time, m.day, m.probe_cc, m.probe_asn, m.probe_tag, m.source, m.test_name,
       m.service, t.* EXCLUDE (measurement_uid, measurement_start_time, day, probe_cc, probe_asn, probe_tag,
                               source, test_name, service, broken_template)
FROM (SELECT measurement_uid, any_value(measurement_start_time) AS measurement_start_time, any_value(day) AS day,
             any_value(probe_cc) AS probe_cc, any_value(probe_asn) AS probe_asn, any_value(probe_tag) AS probe_tag,
             any_value(source) AS source, any_value(test_name) AS test_name,
             any_value(service) FILTER (WHERE broken) AS broken_service, any_value(service) AS service, bool_or(broken) AS broken
      FROM v_all GROUP BY measurement_uid) m
JOIN template t ON t.broken_template = m.broken;
"""


def _sql(text: str, params: Params) -> str:
    hours = params.days * 24
    pool = ", ".join(
        f"({k}, '{service}', '{function}')"
        for k, (service, function) in enumerate(
            (service, function) for service, functions in POOL for function in functions
        )
    )
    countries = ", ".join(f"({i}, '{cc}')" for i, cc in enumerate(COUNTRIES))
    return text.format(
        start=START.strftime("%Y-%m-%d %H:%M:%S"),
        seed=params.seed,
        pool=pool,
        countries=countries,
        hours=hours,
        networks=params.networks,
        ncountries=min(params.countries, len(COUNTRIES)),
        per_network=params.series_per_network,
        calls=str(CALLS),
        rules_version=RULES_VERSION,
    )


def _template(connection: Any, work: Path) -> None:
    """``template``: the observation rows of one blocked and one open lab WhatsApp measurement."""
    out = work / "template"
    run_pass(PassConfig(sources=jsonl_sources([LAB]), out_dir=out, workers=1))
    files = lake.read_parquet_sql(
        sorted(os.fspath(p) for p in out.glob("observations/*/*.parquet"))
    )
    connection.execute(f"""
        CREATE TABLE template AS
        WITH picked AS (
            SELECT probe_asn = 'AS64512' AS broken_template, min(measurement_uid) AS uid
            FROM {files} WHERE service = 'whatsapp' AND probe_asn IN ('AS64512', 'AS64513') GROUP BY 1)
        SELECT o.*, p.broken_template FROM {files} o JOIN picked p ON o.measurement_uid = p.uid""")


def _typed(columns: Any, source: str) -> str:
    """``SELECT`` of ``columns`` from ``source``, each cast to the table's type."""
    casts = ", ".join(f'CAST("{name}" AS {kind}) AS "{name}"' for name, kind in columns)
    return f"SELECT {casts} FROM {source}"


def _write_days(connection: Any, out: Path, source: str, table: str, columns: Any) -> list[str]:
    """The rows of ``source`` written as ``table``'s parts, one per day (one partitioned ``COPY``
    into the work folder, then each day's file renamed into place); returns the relative paths."""
    staging = out / lake.WORK / f"{table}-days"
    select = _typed(columns, f"{source} ORDER BY measurement_start_time")
    connection.execute(
        f"COPY (SELECT *, strftime(day, '%Y-%m-%d') AS part FROM ({select})) TO "
        f"{lake.sql_text(os.fspath(staging))} (FORMAT PARQUET, PARTITION_BY (part))"
    )
    written = []
    for folder in sorted(staging.iterdir()):
        (part,) = folder.iterdir()
        relative = lake.part_path(table, folder.name.removeprefix("part="), PASS, 0)
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        part.rename(out / relative)
        written.append(relative)
    return written


def _count(connection: Any, table: str) -> int:
    (found,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone() or (0,)
    return int(found)


def _json_rows(connection: Any, select: str) -> list[dict[str, Any]]:
    cursor = connection.execute(select)
    columns = [d[0] for d in cursor.description]
    return [
        {
            c: v.strftime("%Y-%m-%d %H:%M:%S") if isinstance(v, dt.datetime) else v
            for c, v in zip(columns, row, strict=True)
        }
        for row in cursor.fetchall()
    ]


def generate(out: Path, params: Params) -> dict[str, Any]:
    """Write the lake into ``out`` (emptied first); returns the summary."""
    started = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    work = lake.prepare(out)
    connection = duckdb.connect(":memory:")
    connection.execute("SET threads=2")
    connection.execute("SET memory_limit='6GB'")
    connection.execute("SET temp_directory=?", [os.fspath(work / "duckdb")])
    connection.execute("SET preserve_insertion_order=false")
    timings: dict[str, float] = {}

    def step(name: str, sql: str) -> None:
        began = time.monotonic()
        connection.execute(_sql(sql, params))
        timings[name] = round(time.monotonic() - began, 1)

    step("series and counts", SETUP_SQL)
    began = time.monotonic()
    select = _typed(AGGREGATE_COLUMNS, f"({_sql(AGGREGATES_SQL, params)})")
    aggregates = write_months(connection, select, out, PASS)
    timings["aggregates"] = round(time.monotonic() - began, 1)
    step("events", EVENTS_SQL)
    events = lake.pass_file("events", PASS, ".parquet")
    all_events = _typed(
        EVENT_COLUMNS,
        f"(SELECT *, '{RULES_VERSION}' AS rules_version, '{DETECTOR_VERSION}' AS detector_version"
        " FROM (SELECT * EXCLUDE (e, campaign, s, start_h, end_h) FROM net_events"
        " UNION ALL BY NAME SELECT * FROM cty_events)) ORDER BY start, event_id",
    )
    lake.copy_to_parquet(connection, all_events, out / events)
    began = time.monotonic()
    _template(connection, work)
    step("evidence", EVIDENCE_SQL)
    verdicts = _write_days(connection, out, "v_all", "verdicts", VERDICT_COLUMNS)
    observations = _write_days(connection, out, "o_all", "observations", OBSERVATION_COLUMNS)
    timings["verdicts and observations"] = round(time.monotonic() - began, 1)
    listing = lake.pass_file("events", PASS, ".json")
    (out / listing).write_bytes(orjson.dumps(_json_rows(connection, all_events)))
    detector = lake.pass_file("detector", PASS, ".json")
    horizon = int(START.replace(tzinfo=dt.UTC).timestamp()) // 3600 + params.days * 24
    (out / detector).write_bytes(orjson.dumps({
        "detector_version": DETECTOR_VERSION, "bucket_seconds": 3600, "horizon": horizon, "series": []}))  # fmt: skip
    count = {
        t: _count(connection, t)
        for t in ("series", "episodes", "v_all", "o_all", "net_events", "cty_events")
    }
    ((measurements, aggregate_rows),) = connection.execute(
        f"SELECT sum(measurements), count(*) FROM {lake.read_parquet_sql(lake.absolute(out, aggregates))}"
    ).fetchall()
    network_events, country_events = count["net_events"], count["cty_events"]
    connection.close()
    files = {
        "observations": observations, "verdicts": verdicts, "aggregates": aggregates,
        "events": events, "events_json": listing, "detector": detector,
    }  # fmt: skip
    lake.write_state(out, {
        "schema_version": SCHEMA_VERSION, "rules_version": RULES_VERSION, "detector_version": DETECTOR_VERSION,
        "pass": PASS, "bucket_seconds": 3600, "sources": {}, "files": files,
        "counts": {"aggregates": aggregate_rows, "events": network_events + country_events},
        "committed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
    })  # fmt: skip
    lake.remove_unlisted(out, lake.read_state(out))
    listed = lake.listed_files(lake.read_state(out))
    summary = {
        "params": dataclasses.asdict(params),
        "rules_version": RULES_VERSION,
        "measurements": int(measurements), "aggregate_rows": aggregate_rows,
        "networks": params.networks, "series": count["series"], "episodes": count["episodes"],
        "network_events": network_events, "country_events": country_events,
        "verdict_rows": count["v_all"], "observation_rows": count["o_all"],
        "files": len(listed) + 1, "bytes": sum((out / f).stat().st_size for f in listed),
        "span": [START.strftime("%Y-%m-%d %H:%M:%S"),
                 (START + dt.timedelta(hours=params.days * 24 - 1)).strftime("%Y-%m-%d %H:%M:%S")],
        "seconds": round(time.monotonic() - started, 1), "timings": timings,
    }  # fmt: skip
    (out / "synth.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def ensure(out: Path | None, params: Params) -> tuple[Path, dict[str, Any], bool]:
    """The lake of ``params`` in ``out`` (default: the cache folder): reused when its
    ``synth.json`` has the same parameters and rules version, else generated. Returns (folder, summary, reused)."""
    out = out or default_dir(params)
    try:
        summary = orjson.loads((out / "synth.json").read_bytes())
        same = summary.get("params") == dataclasses.asdict(params)
        if same and summary.get("rules_version") == RULES_VERSION and (out / lake.STATE).is_file():
            return out, summary, True
    except (OSError, orjson.JSONDecodeError):
        pass
    return out, generate(out, params), False


def describe(out: Path, summary: dict[str, Any], reused: bool) -> str:
    """The summary as lines of text."""
    t = summary
    lines = [
        f"synthetic observatory {out} ({'reused' if reused else 'generated'} in {t['seconds']} s)",
        f"  {t['measurements']:,} measurements in {t['aggregate_rows']:,} aggregate rows; "
        f"{t['networks']} networks, {t['series']} series, {t['episodes']} episodes",
        f"  events: {t['network_events']} network, {t['country_events']} country; "
        f"{t['verdict_rows']:,} verdict rows, {t['observation_rows']:,} observation rows",
        f"  {t['files']} files, {t['bytes'] / 1e6:,.1f} MB; span {t['span'][0]} → {t['span'][1]}",
        f"  timings: {t['timings']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, help="output folder (default: a cache folder)")
    parser.add_argument("--networks", type=int, default=Params.networks)
    parser.add_argument("--countries", type=int, default=Params.countries)
    parser.add_argument("--days", type=int, default=Params.days)
    parser.add_argument("--seed", type=int, default=Params.seed)
    parser.add_argument("--force", action="store_true", help="regenerate even when cached")
    args = parser.parse_args(argv)
    params = Params(args.networks, args.countries, args.days, args.seed)
    if args.force:
        shutil.rmtree(args.out or default_dir(params), ignore_errors=True)
    out, summary, reused = ensure(args.out, params)
    print(describe(out, summary, reused))
    return 0


if __name__ == "__main__":
    sys.exit(main())
