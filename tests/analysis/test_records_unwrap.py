"""inputs.records.unwrap_at: a record line read in place, inside a member's text, gives what
unwrap gives for the line alone (the archive feed cuts each record out once with it)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgwatch.analysis.inputs.records import unwrap, unwrap_at

HEADER = b'{"measurement_uid":"u1","idempotency_key":"tag.1","received_at":"2026-12-04 10:00:00"'
LINES = [
    HEADER + b',"measurement":{"test_name":"x"}}',
    HEADER + b',"measurement": {"a":1} }  ',
    HEADER + b',"measurement":{}}\r',
    HEADER + b',"measurement":{}',  # no closing brace of the record
    HEADER + b',"measurement":}',  # no measurement
    HEADER + b',"measurement":[1]}',
    HEADER + b',"report_id":"r","measurement":{"b":2}}',
    b'{"measurement_uid":1,"idempotency_key":"k","received_at":"t","measurement":{}}',
    b'{"measurement_uid":"u","extra":1,"idempotency_key":"k","received_at":"t","measurement":{}}',
    b'{"measurement_uid":"u' + b',"measurement":{}}',  # a header that does not parse
    b'{"test_name":"x","measurement_uid":"u"}',  # a bare measurement
    b"   ",
    b"",
]


def check(line: bytes, before: bytes = b"junk\n", after: bytes = b"\nmore}") -> None:
    data = before + line + after
    found = unwrap_at(data, len(before), len(before) + len(line))
    expected = unwrap(line)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        header, start, end = found
        assert (header, data[start:end]) == expected


@pytest.mark.parametrize("line", LINES)
def test_known_lines_are_read_in_place_as_alone(line: bytes) -> None:
    check(line)
    check(line, b"", b"")


@given(
    st.sampled_from(LINES),
    st.binary(max_size=8),
    st.binary(max_size=8),
    st.text(alphabet=" \t\r\x0b\x0c{}", max_size=4).map(str.encode),
)
def test_any_line_is_read_in_place_as_alone(
    line: bytes, before: bytes, after: bytes, tail: bytes
) -> None:
    check(line + tail, before, after)
