"""models.py: the envelope rules of docs/design/002-collector.md, unit by unit and by property.

The property tests build valid envelopes (opaque ``test_keys`` of any JSON), check they come back
normalised, then mutate them — at the JSON level and at the byte level — and check every outcome is
either a clean measurement or a :class:`Rejection` with a 4xx reason code, never another exception.
"""

from __future__ import annotations

import datetime as dt
import json
import string
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgwatch.collector import models
from msgwatch.collector.models import Rejection

DATA = Path(__file__).resolve().parents[1] / "data"
OONI = Path("/work/shared/ooni-samples/real.jsonl")


def envelope(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "probe_asn": "AS30722",
        "probe_cc": "IT",
        "probe_ip": "127.0.0.1",
        "test_name": "signal",
        "measurement_start_time": "2024-01-02 03:04:05",
        "test_keys": {"signal_backend_status": "ok"},
        "software_name": "ooniprobe-cli",
        "software_version": "3.20.0",
        "input": None,
    }
    base.update(changes)
    return base


def reason(raw: bytes, client: str | None = None) -> str:
    with pytest.raises(Rejection) as info:
        models.parse_measurement(raw, client)
    assert 400 <= info.value.status < 500
    return info.value.reason


# --- the rules one by one --------------------------------------------------------------------------


def test_valid_envelope_is_normalised() -> None:
    clean = models.parse_measurement(orjson.dumps(envelope(probe_cc="it", probe_ip="203.0.113.9")))
    assert clean["probe_cc"] == "IT"
    assert clean["probe_ip"] == "127.0.0.1"
    assert clean["test_keys"] == {"signal_backend_status": "ok"}


@pytest.mark.parametrize("cc", ["", "I", "ITA", "1T", "é1", None, 12, ["IT"], "Ü𝔸"])
def test_probe_cc_that_is_not_two_letters_becomes_zz(cc: Any) -> None:
    assert models.parse_measurement(orjson.dumps(envelope(probe_cc=cc)))["probe_cc"] == "ZZ"


def test_absent_probe_ip_stays_absent() -> None:
    measurement = envelope()
    del measurement["probe_ip"]
    assert "probe_ip" not in models.parse_measurement(orjson.dumps(measurement))


def test_lenient_where_ooni_is() -> None:
    measurement = envelope()
    del measurement["probe_asn"], measurement["probe_cc"]
    measurement["test_keys"] = None
    clean = models.parse_measurement(orjson.dumps(measurement))
    assert (clean["probe_asn"], clean["probe_cc"], clean["test_keys"]) == ("AS0", "ZZ", None)


@pytest.mark.parametrize("key", models.REQUIRED_KEYS)
def test_each_required_key(key: str) -> None:
    measurement = envelope()
    del measurement[key]
    assert reason(orjson.dumps(measurement)) == "missing_key"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"probe_asn": "30722"}, "bad_asn"),
        ({"probe_asn": "as30722"}, "bad_asn"),
        ({"probe_asn": "AS"}, "bad_asn"),
        ({"probe_asn": "AS-1"}, "bad_asn"),
        ({"probe_asn": "AS4294967296"}, "bad_asn"),
        ({"probe_asn": "AS 1"}, "bad_asn"),
        ({"probe_asn": 30722}, "bad_type"),
        ({"measurement_start_time": "2024-01-02T03:04:05Z"}, "bad_time"),
        ({"measurement_start_time": "2024-01-02 03:04"}, "bad_time"),
        ({"measurement_start_time": "2024-02-30 03:04:05"}, "bad_time"),
        ({"measurement_start_time": "2024-01-02 25:04:05"}, "bad_time"),
        ({"measurement_start_time": "２０２４-01-02 03:04:05"}, "bad_time"),
        ({"measurement_start_time": 1700000000}, "bad_type"),
        ({"test_keys": []}, "bad_type"),
        ({"test_name": 3}, "bad_type"),
        ({"software_name": None}, "bad_type"),
        ({"software_version": ["1"]}, "bad_type"),
    ],
)
def test_bad_values(changes: dict[str, Any], expected: str) -> None:
    assert reason(orjson.dumps(envelope(**changes))) == expected


def test_asn_edges_accepted() -> None:
    for asn in ("AS0", "AS1", "AS4294967295"):
        assert models.parse_measurement(orjson.dumps(envelope(probe_asn=asn)))["probe_asn"] == asn


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "malformed_json"),
        (b"{", "malformed_json"),
        (b'{"a": 1,}', "malformed_json"),
        (b"{} {}", "malformed_json"),
        (b'{"a": NaN}', "malformed_json"),
        (b"[]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"null", "not_an_object"),
        (b'{"a": "\xe9t\xe9"}', "bad_encoding"),  # Latin-1
        ('{"a": "été"}'.encode("utf-16"), "bad_encoding"),  # with a byte-order mark
        ('{"a": "b"}'.encode("utf-16-le"), "bad_encoding"),  # without one: NUL bytes
        (b"\xff\xd8\xff\xe0 a jpeg", "bad_encoding"),
    ],
)
def test_bodies_that_are_not_json_objects(raw: bytes, expected: str) -> None:
    assert reason(raw) == expected


def test_utf8_byte_order_mark_is_tolerated() -> None:
    assert models.parse_measurement(b"\xef\xbb\xbf" + orjson.dumps(envelope()))["probe_cc"] == "IT"


def nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def with_deep_test_keys(measurement: dict[str, Any], levels: int) -> bytes:
    """``measurement`` with ``test_keys.deep`` nested ``levels`` lists deep (orjson.dumps itself
    stops at 255 levels, so the bytes are spliced)."""
    raw = orjson.dumps({**measurement, "test_keys": {"deep": "@DEEP@"}})
    return raw.replace(b'"@DEEP@"', b"[" * levels + b"1" + b"]" * levels)


def test_depth_limit_is_64_levels_from_the_measurement() -> None:
    # the measurement is level 1, test_keys level 2: 62 more lists reach exactly 64
    models.parse_measurement(orjson.dumps(envelope(test_keys={"x": nested(62)})))
    assert reason(orjson.dumps(envelope(test_keys={"x": nested(63)}))) == "too_deep"


def test_deep_bodies_are_refused_without_building_them() -> None:
    # orjson stops at 1,024 levels while parsing; beyond that the body is never built
    assert reason(b"[" * 100_000 + b"]" * 100_000) == "too_deep"
    assert reason(b'{"a":' * 100_000) == "too_deep"
    assert reason(b"[" * 100_000) == "too_deep"
    assert reason(b"[" * 1000 + b"]" * 1000) == "not_an_object"
    assert reason(b'{"test_keys":' + b"[" * 1000 + b"]" * 1000 + b"}") == "missing_key"
    assert reason(with_deep_test_keys(envelope(), 1000)) == "too_deep"
    assert reason(with_deep_test_keys(envelope(), 63)) == "too_deep"
    models.parse_measurement(with_deep_test_keys(envelope(), 62))


def test_size_limits() -> None:
    filler = "x" * (models.MAX_MEASUREMENT_BYTES - 400)
    raw = orjson.dumps(envelope(test_keys={"filler": filler}))
    assert len(raw) <= models.MAX_MEASUREMENT_BYTES
    models.parse_measurement(raw)
    big = orjson.dumps(envelope(test_keys={"filler": filler + "x" * 500}))
    with pytest.raises(Rejection) as info:
        models.parse_measurement(big)
    assert (info.value.reason, info.value.status) == ("body_too_large", 413)


# --- the client's own address ----------------------------------------------------------------------


def test_client_address_is_scrubbed_everywhere_but_not_from_longer_numbers() -> None:
    measurement = envelope(
        test_keys={
            "a": "203.0.113.7",
            "b": "203.0.113.7:443",
            "c": "[203.0.113.7]",
            "d": "x 203.0.113.7 y",
            "keep": ["203.0.113.70", "1203.0.113.7", "203.0.113.7.5", "203.0.113.77"],
            "203.0.113.7": "key too",
        }
    )
    clean = models.parse_measurement(orjson.dumps(measurement), client="203.0.113.7")
    keys = clean["test_keys"]
    assert keys["a"] == "127.0.0.1"
    assert keys["b"] == "127.0.0.1:443"
    assert keys["c"] == "[127.0.0.1]"
    assert keys["d"] == "x 127.0.0.1 y"
    assert keys["keep"] == ["203.0.113.70", "1203.0.113.7", "203.0.113.7.5", "203.0.113.77"]
    assert "127.0.0.1" in keys and "203.0.113.7" not in keys


def test_ipv6_and_mapped_client_addresses() -> None:
    measurement = envelope(
        test_keys={"a": "2001:DB8::7", "b": "[2001:db8::7]:443", "c": "2001:db8::70"}
    )
    clean = models.parse_measurement(orjson.dumps(measurement), client="2001:db8::7")
    assert clean["test_keys"] == {"a": "127.0.0.1", "b": "[127.0.0.1]:443", "c": "2001:db8::70"}
    mapped = models.parse_measurement(
        orjson.dumps(envelope(test_keys={"a": "198.51.100.4"})), client="::ffff:198.51.100.4"
    )
    assert mapped["test_keys"] == {"a": "127.0.0.1"}


def test_unparseable_client_address_is_ignored() -> None:
    models.parse_measurement(orjson.dumps(envelope()), client="not-an-address")


# --- report ids, keys ------------------------------------------------------------------------------


def test_report_ids() -> None:
    good = "20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPtQ"
    assert models.check_report_id(good) == good
    for bad in (
        "",
        "20261124T103225Z_msgwatch_ZZ_0_n1_wufdnDubOTspuPt",
        "20261124T103225Z_msg_watch_ZZ_0_n1_wufdnDubOTspuPtQ",
        "20261124T103225Z_msgwatch_zz_0_n1_wufdnDubOTspuPtQ",
        "20261124T103225Z_msgwatch_ZZ_AS0_n1_wufdnDubOTspuPtQ",
        "20200110T172519Z_AS30722_5UdG13d6rEfOVCTHEdMjuXGah8vF6dpShA0jditnrHCmH10o1K",
        good + "\n",
    ):
        with pytest.raises(Rejection) as info:
            models.check_report_id(bad)
        assert info.value.reason == "bad_report_id"


def test_new_report_id_has_the_checked_form() -> None:
    report = models.parse_open_report(
        orjson.dumps(
            {
                "probe_asn": "AS30722",
                "probe_cc": "it",
                "software_name": "ooniprobe",
                "software_version": "3.20",
                "test_name": "web_connectivity",
                "test_version": "0.4.3",
                "data_format_version": "0.2.0",
                "format": "json",
            }
        )
    )
    now = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    rid = models.new_report_id(report, now, random="A" * 16)
    assert rid == "20240102T030405Z_webconnectivity_IT_30722_n1_AAAAAAAAAAAAAAAA"
    assert models.check_report_id(models.new_report_id(report, now)) is not None


def test_open_report_refuses_other_formats() -> None:
    body = {"probe_asn": "AS1", "probe_cc": "IT", "software_name": "a", "software_version": "1"}
    with pytest.raises(Rejection) as info:
        models.parse_open_report(orjson.dumps({**body, "test_name": "x", "format": "yaml"}))
    assert info.value.reason == "unsupported_format"
    with pytest.raises(Rejection) as info:
        models.parse_open_report(orjson.dumps(body))
    assert info.value.reason == "missing_key"


@pytest.mark.parametrize("key", ["a", "probe.0123:abc-DEF_9", "k" * 128, "SHA256:" + "0" * 64])
def test_good_idempotency_keys(key: str) -> None:
    assert models.check_idempotency_key(key) == key


@pytest.mark.parametrize("key", ["", "k" * 129, "a b", "a/b", "é", "a\n", 12, None])
def test_bad_idempotency_keys(key: Any) -> None:
    with pytest.raises(Rejection) as info:
        models.check_idempotency_key(key)
    assert info.value.reason == "bad_idempotency_key"


def test_content_key_ignores_key_order_and_whitespace() -> None:
    a = models.parse_measurement(orjson.dumps(envelope(test_keys={"x": 1, "y": {"b": 2, "a": 1}})))
    reordered = json.dumps(
        {
            k: v
            for k, v in reversed(list(envelope(test_keys={"y": {"a": 1, "b": 2}, "x": 1}).items()))
        },
        indent=2,
    ).encode()
    b = models.parse_measurement(reordered)
    assert models.content_key(a) == models.content_key(b)
    assert models.content_key(a).startswith("sha256:") and len(models.content_key(a)) == 71
    c = models.parse_measurement(orjson.dumps(envelope(test_keys={"x": 2})))
    assert models.content_key(c) != models.content_key(a)


# --- the OONI add route and batches ------------------------------------------------------------------


def test_report_content() -> None:
    raw = orjson.dumps({"format": "json", "content": envelope()})
    assert models.parse_report_content(raw)["test_name"] == "signal"
    for body, expected in (
        ({"format": "yaml", "content": envelope()}, "unsupported_format"),
        ({"format": "json"}, "missing_key"),
        ({"format": "json", "content": "text"}, "not_an_object"),
        ([envelope()], "not_an_object"),
    ):
        with pytest.raises(Rejection) as info:
            models.parse_report_content(orjson.dumps(body))
        assert info.value.reason == expected


def test_batch_items_are_judged_one_by_one() -> None:
    raw = orjson.dumps(
        {
            "measurements": [
                {"idempotency_key": "k1", "measurement": envelope()},
                {"idempotency_key": "k2", "measurement": envelope(probe_asn="x")},
                {"idempotency_key": "bad key", "measurement": envelope()},
                {"measurement": envelope()},
                "not an item",
                {"idempotency_key": "k5"},
            ]
        }
    )
    items = models.parse_batch(raw)
    assert isinstance(items[0], models.BatchItem) and items[0].idempotency_key == "k1"
    assert isinstance(items[1], models.BatchRefusal) and items[1].rejection.reason == "bad_asn"
    assert items[1].idempotency_key == "k2"
    assert isinstance(items[2], models.BatchRefusal)
    assert items[2].rejection.reason == "bad_idempotency_key"
    assert isinstance(items[3], models.BatchItem) and items[3].idempotency_key.startswith("sha256:")
    assert (
        isinstance(items[4], models.BatchRefusal) and items[4].rejection.reason == "not_an_object"
    )
    assert items[4].idempotency_key is None
    assert isinstance(items[5], models.BatchRefusal) and items[5].rejection.reason == "missing_key"


def test_batch_as_a_whole() -> None:
    for body, expected in (
        ({"measurements": [{"measurement": envelope()}] * 501}, "batch_too_large"),
        ({"measurements": {}}, "bad_type"),
        ({}, "missing_key"),
        ([], "not_an_object"),
    ):
        with pytest.raises(Rejection) as info:
            models.parse_batch(orjson.dumps(body))
        assert info.value.reason == expected
    assert models.parse_batch(orjson.dumps({"measurements": []})) == []


def test_one_oversized_item_in_a_large_batch() -> None:
    big = envelope(test_keys={"x": "y" * (models.MAX_MEASUREMENT_BYTES + 10)})
    items = models.parse_batch(
        orjson.dumps({"measurements": [{"measurement": big}, {"measurement": envelope()}]})
    )
    assert isinstance(items[0], models.BatchRefusal)
    assert items[0].rejection.reason == "body_too_large"
    assert isinstance(items[1], models.BatchItem)


# --- real data -------------------------------------------------------------------------------------


def test_msgwatch_measurements_are_accepted_unchanged() -> None:
    for line in (DATA / "minilab-demo.jsonl").read_bytes().splitlines():
        assert models.parse_measurement(line) == orjson.loads(line)


@pytest.mark.skipif(not OONI.exists(), reason="OONI samples not present")
def test_ooni_samples() -> None:
    refused = {}
    for number, line in enumerate(OONI.read_bytes().splitlines()):
        try:
            clean = models.parse_measurement(line)
        except Rejection as exc:
            refused[number] = exc.reason
            continue
        original = orjson.loads(line)
        assert clean["test_keys"] == original["test_keys"]
        if "probe_ip" in original:
            assert clean["probe_ip"] == "127.0.0.1"
    # every real one, including a 2015 one without probe_asn/probe_cc and one with null test_keys
    assert refused == {}


# --- properties ------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
times = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)).map(
    lambda t: t.strftime("%Y-%m-%d %H:%M:%S")
)
ccs = (
    st.text(alphabet=string.ascii_letters, min_size=2, max_size=2) | st.text(max_size=3) | st.none()
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    measurement: dict[str, Any] = {
        "probe_asn": f"AS{draw(st.integers(0, 2**32 - 1))}",
        "probe_cc": draw(ccs),
        "test_name": draw(st.text(max_size=30)),
        "measurement_start_time": draw(times),
        "test_keys": draw(st.dictionaries(st.text(max_size=10), json_values, max_size=6)),
        "software_name": draw(st.text(max_size=20)),
        "software_version": draw(st.text(max_size=10)),
    }
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=4))
    for key, value in extra.items():
        measurement.setdefault(key, value)
    if draw(st.booleans()):
        measurement["probe_ip"] = draw(st.ip_addresses().map(str))
    return measurement


def expected_normalisation(measurement: dict[str, Any]) -> dict[str, Any]:
    out = dict(measurement)
    cc = out["probe_cc"]
    ok = isinstance(cc, str) and len(cc) == 2 and all(c in string.ascii_letters for c in cc)
    out["probe_cc"] = cc.upper() if ok else "ZZ"
    if "probe_ip" in out:
        out["probe_ip"] = "127.0.0.1"
    return out


@settings(max_examples=150, deadline=None)
@given(envelopes())
def test_valid_envelopes_are_accepted_and_normalised(measurement: dict[str, Any]) -> None:
    clean = models.parse_measurement(orjson.dumps(measurement))
    assert clean == expected_normalisation(measurement)
    batch = models.parse_batch(orjson.dumps({"measurements": [{"measurement": measurement}]}))
    assert isinstance(batch[0], models.BatchItem)
    assert batch[0].measurement == clean
    assert batch[0].idempotency_key == models.content_key(clean)


def outcome(raw: bytes) -> str:
    """The reason code, or "ok"; anything but a Rejection fails the test."""
    try:
        models.parse_measurement(raw, client="198.51.100.23")
    except Rejection as exc:
        assert exc.reason in models.REASONS
        assert 400 <= exc.status < 500
        return exc.reason
    return "ok"


wrong_values = st.sampled_from(
    [None, 0, -1, 1.5, True, "", "x", [], {}, ["AS1"], {"a": 1}, "AS", "2024-01-02", "\u0000"]
)


@st.composite
def json_mutations(draw: st.DrawFn) -> tuple[bytes, str]:
    measurement = draw(envelopes())
    kind = draw(st.sampled_from(["delete", "retype", "asn", "time", "wrap", "deep"]))
    key = draw(st.sampled_from(models.REQUIRED_KEYS))
    if kind == "delete":
        del measurement[key]
    elif kind == "retype":
        measurement[key] = draw(wrong_values)
    elif kind == "asn":
        measurement["probe_asn"] = draw(st.text(max_size=12))
    elif kind == "time":
        measurement["measurement_start_time"] = draw(st.text(max_size=25))
    elif kind == "wrap":
        return orjson.dumps(draw(st.sampled_from([[measurement], "text", 3, None]))), kind
    else:
        return with_deep_test_keys(measurement, draw(st.integers(63, 1100))), kind
    return orjson.dumps(measurement), kind


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_mutations())
def test_json_mutations_are_refused_with_a_reason(mutation: tuple[bytes, str]) -> None:
    raw, kind = mutation
    result = outcome(raw)
    expected = {
        "delete": {"missing_key"},
        "wrap": {"not_an_object"},
        "deep": {"too_deep"},
    }.get(kind)
    if expected is not None:
        assert result in expected
    else:
        # probe_cc takes anything (it becomes ZZ); a random text may happen to be a valid AS or time
        assert result in {"ok", "bad_type", "bad_asn", "bad_time"}


@st.composite
def byte_mutations(draw: st.DrawFn) -> bytes:
    raw = orjson.dumps(draw(envelopes()))
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "encode", "random"]))
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    if kind == "insert":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if kind == "delete":
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + raw[at + draw(st.integers(1, 8)) :]
    if kind == "encode":
        text = raw.decode()
        return text.encode(
            draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1"])), "replace"
        )
    return draw(st.binary(max_size=200))


@settings(max_examples=300, deadline=None)
@given(byte_mutations())
def test_byte_mutations_never_raise_anything_but_a_rejection(raw: bytes) -> None:
    outcome(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_batches_never_raise_anything_but_a_rejection(raw: bytes) -> None:
    try:
        items = models.parse_batch(b'{"measurements":[' + raw + b"]}")
    except Rejection as exc:
        assert 400 <= exc.status < 500
        return
    for item in items:
        assert isinstance(item, models.BatchItem | models.BatchRefusal)


# --- issue 9: escaped addresses, keys left alone, the reserved key namespace, exact patterns -------


def _escaped(text: str, chars: str) -> str:
    """``text`` as JSON string content with each character of ``chars`` written as ``\\uXXXX``."""
    return "".join(f"\\u{ord(c):04x}" if c in chars else c for c in text)


@pytest.mark.parametrize(
    ("client", "written"),
    [
        ("203.0.113.7", _escaped("203.0.113.7", ".")),
        ("203.0.113.7", _escaped("203.0.113.7", "0123456789.")),
        ("203.0.113.7", _escaped("203.0.113.7", ".").upper().replace("\\U", "\\u")),
        ("2001:db8::7", _escaped("2001:db8::7", ":")),
        ("2001:db8::7", _escaped("2001:DB8::7", "DB")),
    ],
)
def test_json_escaped_client_address_is_scrubbed(client: str, written: str) -> None:
    raw = (
        b'{"test_name": "t", "measurement_start_time": "2024-01-02 03:04:05", "test_keys": '
        b'{"body": "you are ' + written.encode() + b'", "' + written.encode() + b'": 1}, '
        b'"software_name": "s", "software_version": "1"}'
    )
    assert client.encode() not in raw  # the escapes hide it from a byte-level search
    clean = models.parse_measurement(raw, client=client)
    text = json.dumps(clean).lower()
    assert client.lower() not in text
    assert clean["test_keys"] == {"body": "you are 127.0.0.1", "127.0.0.1": 1}


def test_escapes_of_other_characters_keep_the_fast_path_exact() -> None:
    raw = orjson.dumps(envelope(test_keys={"html": "<p>203.0.113.70</p>"})).replace(
        b"<", b"\\u003c"
    )
    clean = models.parse_measurement(raw, client="203.0.113.7")
    assert clean["test_keys"] == {"html": "<p>203.0.113.70</p>"}


def test_batch_idempotency_keys_are_never_rewritten_by_the_scrub() -> None:
    client = "10.1.2.3"
    raw = orjson.dumps(
        {
            "measurements": [
                {"idempotency_key": "10.1.2.3:a", "measurement": envelope(input="10.1.2.3")},
                {"idempotency_key": "127.0.0.1:a", "measurement": envelope(input="x")},
                {"idempotency_key": "10.1.2.3:b", "measurement": envelope(probe_asn="bad")},
            ]
        }
    )
    items = models.parse_batch(raw, client=client)
    assert [item.idempotency_key for item in items] == ["10.1.2.3:a", "127.0.0.1:a", "10.1.2.3:b"]
    assert isinstance(items[0], models.BatchItem) and items[0].measurement["input"] == "127.0.0.1"
    assert isinstance(items[2], models.BatchRefusal)


@pytest.mark.parametrize("key", ["sha256:" + "0" * 64, "sha256:x", "sha256:"])
def test_the_content_key_namespace_is_reserved(key: str) -> None:
    with pytest.raises(Rejection) as info:
        models.check_idempotency_key(key)
    assert info.value.reason == "bad_idempotency_key"
    raw = orjson.dumps({"measurements": [{"idempotency_key": key, "measurement": envelope()}]})
    (item,) = models.parse_batch(raw)
    assert isinstance(item, models.BatchRefusal)
    assert item.rejection.reason == "bad_idempotency_key" and item.idempotency_key == key
    # other keys that merely look alike are the client's own
    for own in ("SHA256:abc", "sha256x", "my.sha256:abc"):
        assert models.check_idempotency_key(own) == own


def _calendar_ok(text: str) -> bool:
    try:
        models.check_time(text)
    except Rejection:
        return False
    return True


@given(
    st.tuples(
        st.integers(0, 10000),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 60),
    )
)
@settings(max_examples=500, deadline=None)
def test_the_documented_time_pattern_is_the_validation(parts: tuple[int, ...]) -> None:
    year, month, day, hour, minute, second = parts
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    if year > 9999:
        text = text[1:]
    assert bool(models.TIME_PATTERN.fullmatch(text)) == _calendar_ok(text)


@pytest.mark.parametrize(
    "text",
    ["2024-02-29 00:00:00", "2000-02-29 00:00:00", "1900-02-28 23:59:59", "0004-02-29 00:00:00"],
)
def test_leap_days_match_the_pattern(text: str) -> None:
    assert models.TIME_PATTERN.fullmatch(text) and _calendar_ok(text)


@pytest.mark.parametrize(
    "text",
    ["2023-02-29 00:00:00", "1900-02-29 00:00:00", "0000-01-01 00:00:00", "2026-68-01 00:00:00"],
)
def test_impossible_dates_match_neither(text: str) -> None:
    assert not models.TIME_PATTERN.fullmatch(text) and not _calendar_ok(text)


@given(st.integers(0, 10**10 + 5) | st.sampled_from([4294967295, 4294967296, 4294967299]))
def test_the_documented_asn_pattern_is_the_validation(number: int) -> None:
    for text in (f"AS{number}", f"AS0{number}"):
        try:
            models.check_asn(text)
            valid = True
        except Rejection:
            valid = False
        assert bool(models.ASN_PATTERN.fullmatch(text)) == valid


@pytest.mark.parametrize("key", ["test_version", "data_format_version"])
@pytest.mark.parametrize("value", [{}, [], 3, True])
def test_open_report_optional_fields_have_their_documented_type(key: str, value: Any) -> None:
    body = {
        "probe_asn": "AS1",
        "probe_cc": "IT",
        "software_name": "s",
        "software_version": "1",
        "test_name": "t",
        key: value,
    }
    with pytest.raises(Rejection) as info:
        models.parse_open_report(orjson.dumps(body))
    assert info.value.reason == "bad_type"
    body[key] = None
    models.parse_open_report(orjson.dumps(body))
