"""The helper's wire contract, shared by the probe (the client) and the helper (the server).

Nothing here opens a socket or reads a clock; the probe and the helper both import it, and neither
imports the other. Rules:

- every name or bound the client and the server must agree on is defined here once: the routes,
  the request bodies and query, the answers' keys, the reasons a datagram was declined. The
  server validates requests against these (its own pydantic models take their field names and
  limits from here; ``tests/helper/test_contract.py`` checks that they cannot drift), and the
  client builds its requests with them and checks answers by them;
- the shapes are plain ``TypedDict`` and frozen dataclasses (no pydantic: ``wire`` depends on
  nothing of msgwatch but itself), each with the JSON it stands for.

What it holds:

- the default ports: the control API's TCP port, the neutral echo port, the call ports the helper
  listens on. The helper answers nothing that comes from one of its own UDP ports (a forged source
  there would start a packet loop between two helpers, :mod:`msgwatch.helper.udp`), so a probe whose
  kernel happened to pick such an ephemeral source port (40000 lies in Linux's default range) would
  see a flow go unanswered and take the helper's silence for loss.
  :func:`msgwatch.steps.net.udp_open` therefore refuses these as local ports;
- ``POST /v1/measure``: :class:`MeasureStep`, :class:`MeasureRequest` and their bounds; the answer
  :class:`MeasureAnswer`;
- ``GET /v1/udp/flows``: the query (:func:`flows_target`) and the answer :class:`FlowView`, whose
  counters are named by :data:`COUNTS`, :data:`DECLINED` and :data:`ORIGINATED`;
- ``POST /v1/udp/send``: :class:`Schedule` (what to send), :class:`SendRequest` (to which flow),
  the answer :class:`SendAnswer`; the longest send :data:`MAX_SECONDS` and :func:`schedule`, the
  datagrams the helper sends (the probe builds the same list to know every payload it should see).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, NotRequired, Required, TypedDict, cast, get_args

from msgwatch.wire import calltraffic as C

CONTROL_PORT = 8765
"""The helper's control API (``/v1/measure``, ``/v1/udp/flows``, ``/v1/udp/send``)."""
NEUTRAL_PORT = 40000
"""A port no messenger uses for calls (the helper echoes on it by default)."""
CALL_PORTS = (443, 596, 3478, 3479, 3480, 3481, 4244, 5242, 5243, 7985, 7987, 8801, 10000, 19302,
              NEUTRAL_PORT, 50001)  # fmt: skip
"""Default UDP and TCP ports: the catalogue's call ports and the neutral high port."""
MIN_PORT, MAX_PORT = 1, 65535
"""A port in a request or a query (0 is never a flow's)."""

HEALTH_PATH = "/v1/health"
MEASURE_PATH = "/v1/measure"
FLOWS_PATH = "/v1/udp/flows"
SEND_PATH = "/v1/udp/send"


class ErrorBody(TypedDict):
    """Every 4xx/5xx answer: a stable reason (``bad_request``, ``no_such_flow``...), a detail."""

    error: str
    detail: NotRequired[str]


# -- POST /v1/measure ----------------------------------------------------------------------------

StepKind = Literal["dns", "tcp", "tls", "http", "stun", "turn"]
STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)
Scheme = Literal["http", "https"]
MAX_STEPS = 32
"""Steps in one request at most (they run concurrently under one deadline)."""
MAX_MEASURE_TIMEOUT = 15.0
DEFAULT_MEASURE_TIMEOUT = 10.0


class MeasureStep(TypedDict, total=False):
    """One step the helper runs (``msgwatch.helper.measure`` says what each kind does)."""

    kind: Required[StepKind]
    host: str
    """A host name: resolved by the helper, or the name a ``dns`` step asks for."""
    address: str
    """An IP address (for ``dns``: the resolver to ask)."""
    port: int
    server_name: str
    """The SNI of a ``tls`` step (default ``host``)."""
    path: str
    """The path of an ``http`` step (default ``/``)."""
    scheme: Scheme
    verify: bool
    """Whether a ``tls`` step checks the certificate (default true)."""


class MeasureRequest(TypedDict):
    """The body of ``POST /v1/measure`` (the server also takes a bare list of steps)."""

    steps: list[MeasureStep]
    timeout: float
    """Seconds the helper's steps may take, at most :data:`MAX_MEASURE_TIMEOUT`."""


class MeasureAnswer(TypedDict):
    """The 200 answer: the helper's trace (measurement format) and one result per step."""

    trace: dict[str, Any]
    results: list[dict[str, Any]]
    """Each with ``kind``, ``transaction_id`` and ``failure`` (None: the step worked)."""


def measure_request(steps: Sequence[Mapping[str, Any]], timeout: float) -> MeasureRequest:
    """The body for ``steps`` (each a :class:`MeasureStep`: the server checks them)."""
    return MeasureRequest(steps=[cast(MeasureStep, dict(s)) for s in steps], timeout=timeout)


# -- GET /v1/udp/flows ---------------------------------------------------------------------------

FLOW_QUERY = ("client_port", "local_port")
"""The query's names: the probe's source port and the helper's port of the flow."""
COUNTS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
"""A flow's counters, in its totals and in each interval."""
DECLINED = ("over_limits", "send_buffer_full", "source_port", "own_reply")
"""Why the helper answered nothing to a datagram it received (``declined`` in a flow's view):
its budgets, a full send buffer, a source port it never answers, its own reply coming back."""
KEPT_DECLINED = DECLINED[:3]
"""The reasons the probe keeps in its measurement (an ``own_reply`` decline is a loop, which a
probe's replay never causes: docs/helper.md)."""
ORIGINATED = ("tx_packets", "tx_bytes", "over_limits", "send_buffer_full", "not_echoed")
"""A downstream send's counts on its flow: sent, withheld (limits, send buffer), not echoed."""


def flows_target(client_port: int, local_port: int) -> str:
    """The request target asking for one flow's counts."""
    query = "&".join(f"{n}={p}" for n, p in zip(FLOW_QUERY, (client_port, local_port), strict=True))
    return f"{FLOWS_PATH}?{query}"


class FlowCounts(TypedDict):
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int


class FlowInterval(FlowCounts):
    t: float
    """The interval's start, seconds since ``first_seen``."""


class StallCounts(TypedDict):
    """The helper's own stalls during a flow (its event loop at least 50 ms late): how many, their
    seconds together and the longest. Echoes of datagrams that waited out a stall left late."""

    count: int
    seconds: float
    longest: float


STALLS = ("count", "seconds", "longest")
MAX_STALL_SECONDS = 86400.0
"""The largest ``seconds`` or ``longest`` a client accepts (a day: more is not a stall count)."""


class FlowView(TypedDict):
    """The 200 answer: one flow as the helper counted it (404 ``no_such_flow``: no such flow)."""

    interval: float
    first_seen: float
    """Unix time (the helper's clock), as ``last_seen``."""
    last_seen: float
    intervals: list[FlowInterval]
    totals: FlowCounts
    declined: dict[str, int]
    """A count for each name of :data:`DECLINED`."""
    truncated: bool
    originated: NotRequired[dict[str, int]]
    """A count for each name of :data:`ORIGINATED` (only on a flow that carried a send)."""
    stalls: NotRequired[StallCounts]
    """The helper's own stalls from just before the flow's first datagram to its last activity
    (absent from a helper older than the field)."""


# -- POST /v1/udp/send ---------------------------------------------------------------------------

Profile = Literal["voice", "video"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
Variant = Literal["original", "control", "plain"]
"""``original``: the profile with the marker; ``control``: every bit inverted; ``plain``: random
bytes of the same sizes and times."""
VARIANTS: tuple[Variant, ...] = get_args(Variant)
MAX_SECONDS = 10.0
"""The longest downstream send the helper makes."""
MAX_SEED = 2**32 - 1


def schedule(
    profile: str, variant: str, seconds: float, seed: int, marker: C.Marker | None
) -> list[C.Packet]:
    """The datagrams of a downstream send, as the probe's replays build the same kind."""
    make = C.voice_profile if profile == "voice" else C.video_profile
    packets = make(seconds, seed, None if variant == "plain" else marker)
    if variant == "control":
        return C.control(packets)
    if variant == "plain":
        return C.random_payload(packets, seed)
    return packets


@dataclass(frozen=True)
class Schedule:
    """What a downstream send plays (:func:`schedule`)."""

    profile: Profile
    variant: Variant
    seconds: float
    """At most :data:`MAX_SECONDS`, more than 0."""
    seed: int
    """0 to :data:`MAX_SEED`."""
    marker: C.Marker | None = None

    @classmethod
    def checked(
        cls, profile: str, variant: str, seconds: float, seed: int, marker: C.Marker | None = None
    ) -> Schedule:
        """From names not typed as the contract's; ``ValueError`` for one the helper refuses."""
        if profile not in PROFILES or variant not in VARIANTS:
            raise ValueError(f"no such downstream send: {profile} {variant}")
        return cls(profile, variant, seconds, seed, marker)

    def packets(self) -> list[C.Packet]:
        return schedule(self.profile, self.variant, self.seconds, self.seed, self.marker)


@dataclass(frozen=True)
class SendRequest:
    """The body of ``POST /v1/udp/send``: a :class:`Schedule` for one flow, as flat JSON."""

    client_port: int
    """The probe's UDP port: the flow's source port, where the datagrams go."""
    local_port: int
    """The helper's UDP port the flow reached, where the datagrams come from."""
    schedule: Schedule

    def to_dict(self) -> dict[str, Any]:
        return {"client_port": self.client_port, "local_port": self.local_port,
                **asdict(self.schedule)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SendRequest:
        """From a body already validated (the server's model); unknown keys are a TypeError."""
        rest = {k: v for k, v in data.items() if k not in FLOW_QUERY}
        return cls(data["client_port"], data["local_port"], Schedule(**rest))


SEND_FIELDS = (*FLOW_QUERY, *(f.name for f in fields(Schedule)))
"""The keys of a :class:`SendRequest` body."""


class SendAnswer(TypedDict):
    """The 202 answer, once the send is scheduled."""

    client_port: int
    local_port: int
    packets: int
    """Datagrams it will send."""
    bytes: int
    seconds: float
    """The last datagram's offset."""


SEND_ANSWER: tuple[str, ...] = tuple(SendAnswer.__annotations__)
