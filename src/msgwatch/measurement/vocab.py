"""The format's vocabulary: every name a measurement is written and read with, here once.

Rules:

- A name that goes into a measurement (a key of ``test_keys``, a target's ``role`` or
  ``failed_step``, a verdict) is a constant of this module; writers and readers import it instead
  of spelling the string. ``docs/spec/ts-msgwatch-service.md`` defines what each one means.
- Failure strings keep their own home, :mod:`msgwatch.failures` (OONI's df-007 and msgwatch's
  additions), and the wire codecs' strings stay in :mod:`msgwatch.wire` (which imports nothing of
  msgwatch); :data:`FAILURES` lists them all, for the validator.
- This module imports only those two and the standard library: the probe, the helper, the
  analysis and the collector can all read it.
"""

from __future__ import annotations

from typing import Final, Literal

from msgwatch import failures as F
from msgwatch.wire import mtproto, whatsapp

# --- test_keys: the standard keys (OONI's sub-formats) ---------------------------------------------

QUERIES: Final = "queries"
TCP_CONNECT: Final = "tcp_connect"
TLS_HANDSHAKES: Final = "tls_handshakes"
REQUESTS: Final = "requests"
NETWORK_EVENTS: Final = "network_events"
STANDARD_KEYS: Final = (QUERIES, TCP_CONNECT, TLS_HANDSHAKES, REQUESTS, NETWORK_EVENTS)

# --- test_keys: msgwatch's own keys ----------------------------------------------------------------

CATALOGUE_VERSION: Final = "msgwatch_catalogue_version"
SERVICE: Final = "msgwatch_service"
SERVICE_NETWORKS: Final = "msgwatch_service_networks"
FUNCTIONS_KEY: Final = "msgwatch_functions"
TEST_HELPER: Final = "msgwatch_test_helper"
TARGETS: Final = "msgwatch_targets"
UDP_EXCHANGES: Final = "msgwatch_udp_exchanges"
THROUGHPUT: Final = "msgwatch_throughput"
APP_HANDSHAKES: Final = "msgwatch_app_handshakes"
REPLAYS: Final = "msgwatch_replays"
HELPER_VIEWS: Final = "msgwatch_helper_views"
PROBE_LAG: Final = "msgwatch_probe_lag"
DROPPED_EVENTS: Final = "msgwatch_dropped_events"
BYTES: Final = "msgwatch_bytes"
VERDICTS_KEY: Final = "msgwatch_verdicts"
"""Written by probes before 0.3.0 only (the analysis judges now); readers accept it."""

# --- target roles (``msgwatch_targets[].role``) -----------------------------------------------------

ENDPOINT: Final = "endpoint"
CALL_PATH: Final = "call_path"
REPLAY_ORIGINAL: Final = "replay_original"
REPLAY_CONTROL: Final = "replay_control"
REPLAY_PLAIN: Final = "replay_plain"
REPLAY_NEUTRAL: Final = "replay_neutral"
REPLAY_DOMESTIC: Final = "replay_domestic"
REPLAY_DOWN_ORIGINAL: Final = "replay_down_original"
REPLAY_DOWN_CONTROL: Final = "replay_down_control"
HELPER_VIEW: Final = "helper_view"
POOL_VIEW: Final = "pool_view"
DOWN_ROLES: Final = (REPLAY_DOWN_ORIGINAL, REPLAY_DOWN_CONTROL)
"""The downstream pair: sent by the helper towards the probe."""
REPLAY_ROLES: Final = (
    REPLAY_ORIGINAL,
    REPLAY_CONTROL,
    REPLAY_PLAIN,
    REPLAY_NEUTRAL,
    REPLAY_DOMESTIC,
    *DOWN_ROLES,
)
"""The roles of ``msgwatch_replays[].role`` (and of their targets)."""
ROLES: Final = (ENDPOINT, CALL_PATH, *REPLAY_ROLES, HELPER_VIEW, POOL_VIEW)
Role = Literal[
    "endpoint",
    "call_path",
    "replay_original",
    "replay_control",
    "replay_plain",
    "replay_neutral",
    "replay_domestic",
    "replay_down_original",
    "replay_down_control",
    "helper_view",
    "pool_view",
]

# --- a target's failed step and why it was not measured ---------------------------------------------

FailedStep = Literal[
    "dns",
    "tcp_connect",
    "tls_handshake",
    "http_request",
    "udp_exchange",
    "app_handshake",
    "replay",
    "helper_view",
    "internal",
]
"""``internal``: the probe's own error while measuring (a bug, recorded, never fatal)."""
NotMeasured = Literal["fence", "no_time"]

# --- verdicts -----------------------------------------------------------------------------------

OK: Final = "ok"
BLOCKED: Final = "blocked"
INCONCLUSIVE: Final = "inconclusive"
THROTTLED: Final = "throttled"
DEGRADED: Final = "degraded"
NOT_MEASURED: Final = "not_measured"
Verdict = Literal["ok", "blocked", "inconclusive", "throttled", "degraded", "not_measured"]
VERDICTS: Final = (OK, BLOCKED, INCONCLUSIVE, THROTTLED, DEGRADED, NOT_MEASURED)
SEVERITY: Final[dict[str, float]] = {
    OK: 0.0,
    NOT_MEASURED: 0.5,
    INCONCLUSIVE: 1.0,
    DEGRADED: 2.0,
    THROTTLED: 3.0,
    BLOCKED: 4.0,
}
"""How bad a verdict is: of two verdicts for one function, the more severe one stands."""
INTERFERENCE: Final = (BLOCKED, THROTTLED, DEGRADED)
"""Verdicts that say something interfered (as opposed to ``inconclusive``)."""

# --- functions (the catalogue's) -------------------------------------------------------------------

FUNCTIONS: Final[tuple[str, ...]] = ("text", "voice", "video", "media", "web", "registration")
Function = Literal["text", "voice", "video", "media", "web", "registration"]

# --- failure strings (defined in msgwatch.failures and msgwatch.wire) --------------------------------

FAILURES: Final = frozenset(
    {
        F.CONNECTION_REFUSED,
        F.CONNECTION_RESET,
        F.EOF_ERROR,
        F.TIMEOUT,
        F.HOST_UNREACHABLE,
        F.NETWORK_UNREACHABLE,
        F.DNS_NXDOMAIN,
        F.DNS_NO_ANSWER,
        F.DNS_REFUSED,
        F.DNS_SERVFAIL,
        F.DNS_WRONG_QUERY_ID,
        F.DNS_INVALID,
        F.SSL_INVALID_HOSTNAME,
        F.SSL_UNKNOWN_AUTHORITY,
        F.SSL_INVALID_CERTIFICATE,
        F.SSL_FAILED_HANDSHAKE,
        F.HTTP_INVALID,
        F.STUN_INVALID,
        F.STUN_ERROR,
        F.TURN_NO_CHALLENGE,
        F.NOT_ALLOWED,
        F.BUDGET_EXCEEDED,
        F.HELPER_ANSWER_TOO_LARGE,
        F.HELPER_INVALID_RESPONSE,
        F.SOCKS_BAD_REPLY,
        F.SOCKS_NO_ACCEPTABLE_METHOD,
        F.SOCKS_AUTH_FAILED,
        F.SOCKS_REFUSED,
        F.SOCKS_COMMAND_NOT_SUPPORTED,
        F.SOCKS_UDP_CLOSED,
        F.HTTP_CONNECT_REFUSED,
        F.HTTP_CONNECT_BAD_REPLY,
        F.UDP_NOT_CARRIED,
        mtproto.INVALID,
        mtproto.TRUNCATED,
        mtproto.NONCE_MISMATCH,
        mtproto.TRANSPORT_ERROR,
        whatsapp.INVALID,
        whatsapp.TRUNCATED,
    }
)
"""Every exact failure string a measurement may hold; :data:`FAILURE_PREFIXES` covers the rest."""
FAILURE_PREFIXES: Final = (F.DNS_SERVER_FAILURE_PREFIX, F.HELPER_STATUS_PREFIX)
"""``dns_server_failure_<rcode>``, ``helper_status_<code>``; and ``unknown_failure <text>``."""


def is_failure(value: object) -> bool:
    """Whether ``value`` is a failure string of the format (``None``, success, is not)."""
    if type(value) is not str:
        return False
    if value in FAILURES or value == F.UNKNOWN_PREFIX:
        return True
    if value.startswith(F.UNKNOWN_PREFIX + " "):
        return True
    for prefix in FAILURE_PREFIXES:
        rest = value[len(prefix) :]
        if value.startswith(prefix) and rest.isascii() and rest.isalnum():
            return True
    return False
