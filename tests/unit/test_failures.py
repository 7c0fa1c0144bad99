"""Every error becomes a stable failure string; unknown ones carry no address."""

from __future__ import annotations

import asyncio
import errno
import ssl

import pytest

from msgwatch.failures import ProbeFailure, classify, scrub_addresses, unknown


def _verify_error(code: int) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code = code
    return exc


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (TimeoutError(), "generic_timeout_error"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "connection_reset"),
        (BrokenPipeError(errno.EPIPE, "pipe"), "connection_reset"),
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "connection_reset"),
        (OSError(errno.EHOSTUNREACH, "no route"), "host_unreachable"),
        (OSError(errno.ENETUNREACH, "unreachable"), "network_unreachable"),
        (OSError(errno.ETIMEDOUT, "timed out"), "generic_timeout_error"),
        (OSError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (asyncio.IncompleteReadError(b"ab", 10), "eof_error"),
        (EOFError(), "eof_error"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), "eof_error"),
        (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), "eof_error"),
        (ssl.SSLError(1, "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE]"), "ssl_failed_handshake"),
        (_verify_error(62), "ssl_invalid_hostname"),
        (_verify_error(20), "ssl_unknown_authority"),
        (_verify_error(19), "ssl_unknown_authority"),
        (_verify_error(18), "ssl_unknown_authority"),
        (_verify_error(10), "ssl_invalid_certificate"),  # expired
        (ProbeFailure("dns_nxdomain_error"), "dns_nxdomain_error"),
        (ProbeFailure("destination_not_allowed", "detail"), "destination_not_allowed"),
    ],
)
def test_classify(exc: BaseException, failure: str) -> None:
    assert classify(exc) == failure


def test_unknown_failure_scrubs_addresses() -> None:
    exc = ValueError("bad reply from 10.1.2.3:53 via 2001:db8::1 and [fe80::1%eth0]:443")
    assert classify(exc) == (
        "unknown_failure ValueError: bad reply from [scrubbed]:53 via [scrubbed] and "
        "[[scrubbed]%eth0]:443"
    )


def test_unknown_failure_is_one_bounded_line() -> None:
    text = unknown("line one\n\tline two " + "x" * 500)
    assert text.startswith("unknown_failure line one line two xxx")
    assert "\n" not in text
    assert len(text) == len("unknown_failure ") + 200
    assert unknown("") == "unknown_failure"


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("192.0.2.1", "[scrubbed]"),
        ("connect 198.51.100.255:443 failed", "connect [scrubbed]:443 failed"),
        ("::1", "[scrubbed]"),
        ("2001:db8:0:1:2:3:4:5", "[scrubbed]"),
        ("::ffff:192.0.2.1", "[scrubbed][scrubbed]"),  # both halves: more than needed, never less
        ("version 1.2.3", "version 1.2.3"),
        ("port 8080, errno 104", "port 8080, errno 104"),
        ("key: value", "key: value"),
    ],
)
def test_scrub_addresses(text: str, scrubbed: str) -> None:
    assert scrub_addresses(text) == scrubbed
