"""Every error becomes a stable failure string, here and only here.

Steps catch exceptions at their boundary and call :func:`classify`; nothing else in the probe
inspects exception types. The strings are OONI's (df-007) where OONI has one, and msgwatch's own in
the same style otherwise (``docs/spec/ts-msgwatch-service.md``). Anything not recognised becomes
``unknown_failure <text>`` with every IP address in the text replaced by ``[scrubbed]`` — exception
texts often carry addresses, and one of them may be the probe's.

Exceptions the probe raises itself, for conditions that are not OS errors:

    ProbeFailure                (carries the failure string it maps to)
"""

from __future__ import annotations

import asyncio
import errno
import re
import ssl

CONNECTION_REFUSED = "connection_refused"
CONNECTION_RESET = "connection_reset"
EOF_ERROR = "eof_error"
TIMEOUT = "generic_timeout_error"
HOST_UNREACHABLE = "host_unreachable"
NETWORK_UNREACHABLE = "network_unreachable"
DNS_NXDOMAIN = "dns_nxdomain_error"
DNS_NO_ANSWER = "dns_no_answer"
DNS_REFUSED = "dns_refused_error"
DNS_SERVFAIL = "dns_servfail_error"
DNS_INVALID = "dns_invalid_response"
SSL_INVALID_HOSTNAME = "ssl_invalid_hostname"
SSL_UNKNOWN_AUTHORITY = "ssl_unknown_authority"
SSL_INVALID_CERTIFICATE = "ssl_invalid_certificate"
SSL_FAILED_HANDSHAKE = "ssl_failed_handshake"
HTTP_INVALID = "http_invalid_response"
STUN_INVALID = "stun_invalid_response"
STUN_ERROR = "stun_error_response"
TURN_NO_CHALLENGE = "turn_no_challenge"
NOT_ALLOWED = "destination_not_allowed"
"""The safety fence (:mod:`msgwatch.fence`) refused the destination: the run's configuration, not
the network's behaviour."""
BUDGET_EXCEEDED = "budget_exceeded"
"""Sending would exceed the run's byte budget; nothing was sent."""
DNS_WRONG_QUERY_ID = "dns_reply_with_wrong_query_id"
DNS_SERVER_FAILURE_PREFIX = "dns_server_failure_"
"""Followed by any other non-zero rcode's name, lower-cased (``dns_server_failure_notimp``)."""
HELPER_ANSWER_TOO_LARGE = "helper_answer_too_large"
HELPER_INVALID_RESPONSE = "helper_invalid_response"
HELPER_STATUS_PREFIX = "helper_status_"
"""Followed by the HTTP status the test helper's control API answered instead of 200."""
SOCKS_BAD_REPLY = "socks_bad_reply"
"""A SOCKS5 proxy answered something that is not SOCKS5 (wrong version, unknown address type,
a method it was not offered, a UDP relay address that is not an address)."""
SOCKS_NO_ACCEPTABLE_METHOD = "socks_no_acceptable_method"
"""A SOCKS5 proxy accepted none of the authentication methods offered (method 0xFF)."""
SOCKS_AUTH_FAILED = "socks_auth_failed"
"""A SOCKS5 proxy refused the username and password (RFC 1929 status not 0)."""
SOCKS_REFUSED = "socks_refused"
"""A SOCKS5 proxy answered a request with a reply code other than success."""
SOCKS_COMMAND_NOT_SUPPORTED = "socks_command_not_supported"
"""A SOCKS5 proxy answered "command not supported" (reply 7; e.g. no UDP ASSOCIATE)."""
SOCKS_UDP_CLOSED = "socks_udp_association_closed"
"""The TCP control connection of a SOCKS5 UDP association ended: the relay stops relaying."""
HTTP_CONNECT_REFUSED = "http_connect_refused"
"""An HTTP proxy answered CONNECT with a status other than 2xx."""
HTTP_CONNECT_BAD_REPLY = "http_connect_bad_reply"
"""An HTTP proxy's answer to CONNECT is not an HTTP/1.x status line and headers within 8 KB."""
UDP_NOT_CARRIED = "udp_not_carried"
"""A tunnel that carries only streams (Tor, HTTP CONNECT) was asked for a UDP socket."""
UNKNOWN_PREFIX = "unknown_failure"
"""``unknown_failure <text>``: anything else (:func:`unknown`)."""

# The collector client's own failures (the spool's submission log; never in a measurement).
RESPONSE_TOO_LARGE = "response_too_large"
DNS_LOOKUP_ERROR = "dns_lookup_error"

_ERRNO = {
    errno.ECONNREFUSED: CONNECTION_REFUSED,
    errno.ECONNRESET: CONNECTION_RESET,
    errno.EPIPE: CONNECTION_RESET,
    errno.ECONNABORTED: CONNECTION_RESET,
    errno.EHOSTUNREACH: HOST_UNREACHABLE,
    errno.ENETUNREACH: NETWORK_UNREACHABLE,
    errno.ETIMEDOUT: TIMEOUT,
}

# OpenSSL X509_V_ERR_* codes that say "who signed this is unknown".
_UNKNOWN_CA = {2, 18, 19, 20, 21}
_HOSTNAME_MISMATCH = 62

_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d])")
_IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")


class ProbeFailure(Exception):
    """A condition the probe detected itself; ``failure`` is its stable string."""

    def __init__(self, failure: str, detail: str = "") -> None:
        super().__init__(detail or failure)
        self.failure = failure


def scrub_addresses(text: str) -> str:
    """Replace every IPv4/IPv6 address in ``text`` by ``[scrubbed]``."""
    text = _IPV4.sub("[scrubbed]", text)
    return _IPV6.sub(lambda m: "[scrubbed]" if m.group(0).count(":") >= 2 else m.group(0), text)


def unknown(text: str) -> str:
    cleaned = " ".join(scrub_addresses(text).split())[:200]
    return f"{UNKNOWN_PREFIX} {cleaned}".rstrip()


def _ssl_failure(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == _HOSTNAME_MISMATCH:
            return SSL_INVALID_HOSTNAME
        if code in _UNKNOWN_CA:
            return SSL_UNKNOWN_AUTHORITY
        return SSL_INVALID_CERTIFICATE
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return EOF_ERROR
    return SSL_FAILED_HANDSHAKE


def helper_status(status: int | None) -> str:
    """The failure for an answer of the helper's control API with ``status`` instead of 200."""
    return f"{HELPER_STATUS_PREFIX}{status}"


def dns_server_failure(rcode_name: str) -> str:
    """The failure for a DNS answer with a non-zero rcode that has no df-007 name."""
    return f"{DNS_SERVER_FAILURE_PREFIX}{rcode_name.lower()}"


def classify(exc: BaseException) -> str:
    """The stable failure string for ``exc``."""
    if isinstance(exc, ProbeFailure):
        return exc.failure
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return TIMEOUT
    if isinstance(exc, ssl.SSLError):
        return _ssl_failure(exc)
    if isinstance(exc, asyncio.IncompleteReadError | EOFError):
        return EOF_ERROR
    if isinstance(exc, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return CONNECTION_RESET
    if isinstance(exc, OSError) and exc.errno in _ERRNO:
        return _ERRNO[exc.errno]
    return unknown(f"{type(exc).__name__}: {exc}")
