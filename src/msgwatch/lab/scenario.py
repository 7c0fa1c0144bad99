"""Scenario files: a censorship policy per ISP, and the ground truth the probe must find.

A scenario (``lab/scenarios/<name>.toml``, format in ``docs/lab.md``) names the services to probe,
one or more **phases** (the policy in force at one time: phases stand for time windows, applied one
after another so that a test needs no wall-clock waiting), the censor **rules** of each phase (each
for one ISP or for ``all``), and the **expectations**: per (phase, ISP, service, function) the
verdict and mechanism. Anything not listed is expected ``ok`` — which is how "domestic traffic
untouched" and "the other ISP unaffected" are asserted.

With an ``[observatory]`` the phases are real time: probes measure on a schedule and submit to a
collector. A phase's ``episodes`` switch its rules on and off run by run (blocking that comes and
goes); ``[analysis]`` runs the analysis over the collector's data afterwards with its ``bucket``,
and ``[[expect_event]]`` lists the events it must find, exactly (:mod:`msgwatch.lab.timeline`).

Rule fields named ``to`` hold **selectors**, resolved against the running lab into prefixes:

    service:<id>     the service's lab subnets (IPv4 /24 and IPv6 /48)
    host:<name>      the lab address of one catalogue host name
    abroad           every service subnet and the abroad infrastructure (198.18.3.0/24)
    domestic         the domestic segment (198.19.0.0/24)
    collector        the observatory's collector abroad (198.18.3.20/32)
    circumvention:<role>  circumvention servers abroad (:data:`CIRCUMVENTION_SELECTORS`: a role
                     of ``msgwatch.lab.plan.CIRCUMVENTION`` such as ``tor-bridge`` or ``openvpn``,
                     or a set of them: ``tor-relays``, ``tor``, ``vpn``, ``proxies``, ``all``)
    <prefix>         a literal prefix, which must lie inside the lab's ranges

A scenario may also ask for the lab's **circumvention servers** (``circumvention = ["tor", "vpn",
"proxies"]``, :mod:`msgwatch.lab.circumvention`): each phase then runs ``msgwatch circumvent`` in
the probes' namespaces as well (options in ``[circumvent]``), and ``[[expect_circumvention]]``
states the ground truth per (phase, ISP, entry, function): ``function`` is ``tunnel``
(``reachability`` for ``tor-reach``) or ``<service>.<function>`` for what went through a tunnel
(``whatsapp.voice``); ``mechanism`` is ``<stage>.<kind>``, and may list alternatives
(``tunnel.timeout|transfer.timeout``) where the lab cannot pin down which of two stages a block
shows at. Every lab entry run is expected ``ok`` unless listed (:mod:`msgwatch.lab.circumvention_run`).
"""

from __future__ import annotations

import ipaddress
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from msgwatch.catalogue import FUNCTIONS
from msgwatch.lab.mapping import LabMapping
from msgwatch.lab.plan import CIRCUMVENTION, CIRCUMVENTION_PREFIX, COLLECTOR, LAB_V4, LAB_V6
from msgwatch.session.schedule import parse_duration

ABROAD_INFRA = ("198.18.3.0/24", "2001:db8:3::/64")
DOMESTIC = ("198.19.0.0/24",)
ISPS = ("isp1", "isp2")
MAX_SCENARIO_BYTES = 256 * 1024
LAB_ENTRIES = {
    "tor": "tor", "tor-obfs4": "tor", "tor-reach": "tor",
    "openvpn-udp": "vpn", "openvpn-tcp": "vpn", "wireguard": "vpn",
    "shadowsocks": "proxies", "socks5": "proxies", "socks5-micro": "proxies",
    "http-connect": "proxies",
}  # fmt: skip
"""Every entry the lab's circumvention groups write (name → group): the verdict table's rows."""
ENTRY_TYPES = {
    "tor": "tor", "tor-obfs4": "obfs4", "tor-reach": "tor_reach",
    "openvpn-udp": "openvpn", "openvpn-tcp": "openvpn", "wireguard": "wireguard",
    "shadowsocks": "shadowsocks", "socks5": "socks5", "socks5-micro": "socks5",
    "http-connect": "http_connect",
}  # fmt: skip
"""Each lab entry's type (``msgwatch.circumvention.model.TYPES``): what ``budgets`` are keyed by."""
NO_UDP = ("tor", "tor-obfs4", "socks5-micro", "http-connect")
"""Lab entries whose tunnel carries no UDP (Tor, microsocks without UDP ASSOCIATE, HTTP CONNECT):
calls through them are ``not_measured`` (``tunnel.no_udp``) unless a scenario says otherwise."""
_TOR_RELAYS = ("tor-auth1", "tor-auth2", "tor-auth3", "tor-relay", "tor-exit")
CIRCUMVENTION_SELECTORS: dict[str, tuple[str, ...]] = {
    **{role: (role,) for role in CIRCUMVENTION},
    "tor-relays": _TOR_RELAYS,
    "tor": (*_TOR_RELAYS, "tor-bridge"),
    "vpn": ("openvpn", "wireguard"),
    "proxies": ("shadowsocks", "socks5", "http-proxy", "socks5-micro"),
}
"""``circumvention:<name>`` → the roles of :data:`msgwatch.lab.plan.CIRCUMVENTION` it stands for
(``tor-relays``: the directory authorities, the middle relay and the exit, all published in the
consensus; ``all``: the whole 198.18.4.0/24)."""


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    title: str
    url: str = Field(pattern=r"^https?://\S+$")


class RuleEntry(BaseModel):
    """One censor rule: ``isp`` and ``type`` here; the other fields go to the rule library."""

    model_config = ConfigDict(extra="allow", frozen=True)

    isp: Literal["isp1", "isp2", "all"]
    type: str

    def fields(self) -> dict[str, Any]:
        data = self.model_dump()
        data.pop("isp")
        return data


class Outage(_Strict):
    """Servers abroad down for everyone (not censorship): their traffic is dropped where they are."""

    to: list[str] = Field(min_length=1)
    proto: Literal["udp", "tcp", "any"] = "udp"


class Phase(_Strict):
    name: str
    description: str = ""
    rule: list[RuleEntry] = []
    outage: list[Outage] = []
    collector: Literal["up", "restart"] = "up"
    """With an observatory: ``restart`` kills the collector (SIGKILL) as the phase begins and
    starts it again, so the phase's submissions meet a collector that crashed."""
    episodes: list[bool] = Field(default=[], max_length=20)
    """With an observatory: one entry per scheduled run of this phase (replacing ``runs``), true
    when the phase's rules are in force during that run, false when no rule is: blocking that
    comes and goes. Empty: the rules hold for every run."""


class Observatory(_Strict):
    """The probes submit to a collector abroad on a schedule (``msgwatch run --every``)."""

    runs: int = Field(default=2, ge=1, le=20)
    """Scheduled runs of each probe in each phase."""
    every: float = Field(default=1.0, gt=0, le=60)
    """Seconds from one scheduled run to the next."""
    probes: int = Field(default=1, ge=1, le=4)
    """Probes on each ISP's network, each with its own state, spool and probe tag: more
    measurements in each bucket for the analysis."""


class IspNetwork(_Strict):
    """The network an ISP's probes are in (default: ``msgwatch.lab.plan.ISP_NETWORKS``)."""

    asn: int = Field(ge=1, le=4294967295)
    """Use documentation (64496-64511) or private-use (64512-65534) AS numbers."""
    cc: str = Field(pattern=r"^[A-Z]{2}$")
    name: str = Field(default="", max_length=200)


class Expect(_Strict):
    isp: Literal["isp1", "isp2", "all"]
    service: str
    function: str
    verdict: Literal["ok", "blocked", "inconclusive", "throttled", "degraded"]
    mechanism: str | None = None
    phase: str | None = None
    """The phase this expectation holds in (all phases when absent)."""
    why: str = ""

    @field_validator("function")
    @classmethod
    def _function(cls, value: str) -> str:
        if value not in FUNCTIONS:
            raise ValueError(f"unknown function {value!r}")
        return value


class ExpectCircumvention(_Strict):
    """The ground truth for one lab circumvention entry (``[[expect_circumvention]]``)."""

    isp: Literal["isp1", "isp2", "all"]
    entry: str
    function: str = "tunnel"
    """``tunnel`` (``reachability`` for a ``tor_reach`` entry) or ``<service>.<function>``."""
    verdict: Literal["ok", "blocked", "inconclusive", "throttled", "degraded", "not_measured"]
    mechanism: str | None = Field(default=None, max_length=200)
    """``<stage>.<kind>``; ``a|b`` accepts either (see the module's notes)."""
    phase: str | None = None
    why: str = ""

    @field_validator("entry")
    @classmethod
    def _entry(cls, value: str) -> str:
        if value not in LAB_ENTRIES:
            raise ValueError(f"unknown lab entry {value!r} (known: {', '.join(LAB_ENTRIES)})")
        return value

    @field_validator("function")
    @classmethod
    def _through(cls, value: str) -> str:
        service, dot, function = value.partition(".")
        if value in ("tunnel", "reachability") or (dot and service and function in FUNCTIONS):
            return value
        raise ValueError(f"function {value!r}: tunnel, reachability or <service>.<function>")

    @property
    def service(self) -> str:
        """The verdict table's ``service`` (the entry's name), for :mod:`msgwatch.lab.truth`."""
        return self.entry


class Circumvent(_Strict):
    """How a scenario's phases run ``msgwatch circumvent`` (``[circumvent]``)."""

    isps: list[Literal["isp1", "isp2"]] = Field(default=["isp1", "isp2"], min_length=1)
    """The ISPs whose probes test the entries, one ISP after the other (each runs all its
    entries at once)."""
    entries: list[str] = Field(default=[], max_length=len(LAB_ENTRIES))
    """The lab entries to test (empty: every entry of the scenario's groups)."""
    through: list[str] = Field(default=["whatsapp"], max_length=20)
    """Services whose text and calls go through each tunnel that comes up (``--services``)."""
    sustain: float = Field(default=2.0, ge=0.5, le=60)
    """Seconds of the ``sustain`` stage."""
    call_seconds: float = Field(default=1.0, ge=0.2, le=30)
    """Seconds of each call replay (original, control) through a tunnel."""
    budgets: dict[str, float] = {}
    """Seconds to bring a tunnel up, per entry type (``tor``: 40); unset: the probe's defaults."""
    direct: bool = True
    """Also run ``msgwatch run`` for the scenario's services (the direct path) in each phase."""

    @field_validator("entries")
    @classmethod
    def _entries(cls, value: list[str]) -> list[str]:
        unknown = [e for e in value if e not in LAB_ENTRIES]
        if unknown:
            raise ValueError(f"unknown lab entries {unknown} (known: {', '.join(LAB_ENTRIES)})")
        return value

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: dict[str, float]) -> dict[str, float]:
        for kind, seconds in value.items():
            if kind not in ENTRY_TYPES.values():
                raise ValueError(
                    f"budget {kind}: not an entry type ({sorted(set(ENTRY_TYPES.values()))})"
                )
            if not 0 < seconds <= 300:
                raise ValueError(f"budget {kind}: between 0 and 300 seconds")
        return value


class Analysis(_Strict):
    """After an observatory's phases, the analysis runs over the collector's data (``[analysis]``)."""

    bucket: str = "1h"
    """The aggregates' and events' bucket (``10s``, ``1h``): one run interval in the lab."""
    detector: Literal["default", "clean"] = "default"
    """The detector's knobs: its defaults, or ``clean`` (``DetectorParams.clean``: short, clean
    series of a few measurements a bucket and phases of a few buckets, as in the lab)."""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds < 1 or seconds != int(seconds):
            raise ValueError("the bucket is a whole number of seconds, at least 1")
        return value

    @property
    def bucket_seconds(self) -> int:
        return int(parse_duration(self.bucket))


class ExpectEvent(_Strict):
    """One event the analysis must find (``[[expect_event]]``): on one ISP's network, one
    (service, function), from the start of phase ``start`` to the end of phase ``end``."""

    isp: Literal["isp1", "isp2"]
    service: str
    function: str
    pattern: Literal["continuous", "episodic"]
    start: str
    end: str
    why: str = ""


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    description: str
    services: list[str] = Field(min_length=1)
    timeout: float = Field(default=4.0, gt=0, le=60)
    """The probe's deadline in this scenario's runs."""
    replay_seed: int | None = None
    """Seed of the probe's replays (sizes, payloads, order): fixed where the ground truth depends on
    exactly how many bytes a policer lets through."""
    replay_seconds: float = Field(default=0.0, ge=0, le=30)
    """Length of the probe's call-traffic replays in this scenario (0: no replays)."""
    probe_gap: str = ""
    """Why this version of the probe cannot reach the ground truth yet (empty when it can): the
    scenario still runs, and its test is an expected failure that turns into an error the day the
    probe starts matching it."""
    source: list[Source] = []
    phase: list[Phase] = Field(min_length=1)
    expect: list[Expect] = []
    networks: dict[Literal["isp1", "isp2"], IspNetwork] = {}
    """Each ISP's AS number and country (``[networks.isp1]``): what its probe finds in the lab's
    GeoIP database and records as ``probe_asn``/``probe_cc``."""
    observatory: Observatory | None = None
    """Probes submit their measurements to a collector abroad; the run checks that the collector
    ends with exactly the measurements made (none lost, none twice)."""
    analysis: Analysis | None = None
    """With an observatory: analyse the collector's data after the phases, and compare the events
    found with ``expect_event`` (exactly those, and no other)."""
    expect_event: list[ExpectEvent] = []
    circumvention: list[Literal["tor", "vpn", "proxies"]] = []
    """The lab's circumvention groups this scenario needs (their servers abroad, their entries
    tested in every phase)."""
    circumvent: Circumvent = Circumvent()
    expect_circumvention: list[ExpectCircumvention] = []

    @model_validator(mode="after")
    def _circumvention(self) -> Scenario:
        groups = set(self.circumvention)
        if (self.expect_circumvention or self.circumvent.entries) and not groups:
            raise ValueError("expect_circumvention and [circumvent] entries need `circumvention`")
        named = [e.entry for e in self.expect_circumvention] + self.circumvent.entries
        outside = sorted({n for n in named if LAB_ENTRIES[n] not in groups})
        if outside:
            raise ValueError(f"entries {outside} are not in the groups {sorted(groups)}")
        if groups and self.observatory is not None:
            raise ValueError("circumvention runs once per phase: no [observatory]")
        phases = {p.name for p in self.phase}
        for e in self.expect_circumvention:
            if e.phase is not None and e.phase not in phases:
                raise ValueError(f"expect_circumvention: no phase {e.phase!r}")
        return self

    def circumvention_entries(self) -> list[str]:
        """The lab entries each phase tests, in :data:`LAB_ENTRIES`'s order."""
        chosen = self.circumvent.entries or list(LAB_ENTRIES)
        return [n for n in LAB_ENTRIES if n in chosen and LAB_ENTRIES[n] in self.circumvention]

    def expected_circumvention(
        self, phase: str, isp: str, entry: str, function: str
    ) -> ExpectCircumvention:
        """The ground truth for one (phase, ISP, entry, function): listed, or ``ok``."""
        for e in self.expect_circumvention:
            if (
                e.entry == entry
                and e.function == function
                and e.isp in (isp, "all")
                and e.phase in (phase, None)
            ):
                return e
        if entry in NO_UDP and function.endswith((".voice", ".video")):
            return ExpectCircumvention(isp="all", entry=entry, function=function,
                                       verdict="not_measured", mechanism="tunnel.no_udp",
                                       why="the transport carries no UDP: no call through it")  # fmt: skip
        return ExpectCircumvention(isp="all", entry=entry, function=function, verdict="ok",
                                   why="not targeted by this scenario")  # fmt: skip

    @model_validator(mode="after")
    def _timeline(self) -> Scenario:
        names = [p.name for p in self.phase]
        for event in self.expect_event:
            if event.start not in names or event.end not in names:
                raise ValueError(f"expect_event: phases are {names}")
            if names.index(event.start) > names.index(event.end):
                raise ValueError("expect_event: the start phase comes after the end phase")
        timed = self.analysis is not None or any(p.episodes for p in self.phase)
        if timed and self.observatory is None:
            raise ValueError("[analysis] and episodes need an [observatory]")
        return self

    def expected(self, phase: str, isp: str, service: str, function: str) -> Expect:
        """The ground truth for one (phase, ISP, service, function): listed, or ``ok``."""
        for e in self.expect:
            if (
                e.service == service
                and e.function == function
                and e.isp in (isp, "all")
                and e.phase in (phase, None)
            ):
                return e
        return Expect(isp="all", service=service, function=function, verdict="ok",
                      why="not targeted by this scenario")  # fmt: skip

    def rules_for(self, phase: Phase, isp: str) -> list[RuleEntry]:
        return [r for r in phase.rule if r.isp in (isp, "all")]


def scenario_dir() -> Path:
    return Path(str(resources.files("msgwatch.lab") / "scenarios"))


def list_scenarios() -> list[Scenario]:
    return [load_scenario(p) for p in sorted(scenario_dir().glob("*.toml"))]


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = scenario_dir() / f"{name_or_path}.toml"
    try:
        if path.stat().st_size > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{path.name}: larger than {MAX_SCENARIO_BYTES} bytes")
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        return Scenario.model_validate(raw)
    except FileNotFoundError as exc:
        known = ", ".join(p.stem for p in sorted(scenario_dir().glob("*.toml")))
        raise ScenarioError(f"no scenario {str(name_or_path)!r} (shipped: {known})") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ScenarioError(f"{path.name}: {problems}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScenarioError(f"{path.name}: {exc}") from exc


def _lab_prefix(text: str) -> str:
    network = ipaddress.ip_network(text, strict=False)
    inside = network.subnet_of(LAB_V4) if network.version == 4 else network.subnet_of(LAB_V6)
    if not inside:
        raise ScenarioError(f"prefix {text} is outside the lab's ranges")
    return str(network)


def resolve_selector(selector: str, mapping: LabMapping) -> list[str]:
    """The prefixes a selector stands for in this lab (see the module's notes)."""
    if selector == "abroad":
        subnets = [n.prefix for s in mapping.catalogue.services for n in s.networks]
        return [*ABROAD_INFRA, *dict.fromkeys(subnets)]
    if selector == "domestic":
        return list(DOMESTIC)
    if selector == "collector":
        return [f"{COLLECTOR}/32"]
    kind, _, value = selector.partition(":")
    if kind == "circumvention":
        if value == "all":
            return [CIRCUMVENTION_PREFIX]
        if value not in CIRCUMVENTION_SELECTORS:
            known = ", ".join(["all", *CIRCUMVENTION_SELECTORS])
            raise ScenarioError(f"selector {selector!r}: no such circumvention role ({known})")
        return [f"{CIRCUMVENTION[role]}/32" for role in CIRCUMVENTION_SELECTORS[value]]
    if kind == "service":
        service = mapping.catalogue.service(value)
        if service is None:
            raise ScenarioError(f"selector {selector!r}: no such service in the lab")
        return [n.prefix for n in service.networks if not n.prefix.endswith(("/32", "/128"))]
    if kind == "host":
        if value not in mapping.hosts:
            raise ScenarioError(f"selector {selector!r}: no such host in the lab catalogue")
        return [f"{mapping.hosts[value]}/32"]
    try:
        return [_lab_prefix(selector)]
    except ValueError as exc:
        raise ScenarioError(f"selector {selector!r}: {exc}") from exc


def resolve_rule(rule: RuleEntry, mapping: LabMapping) -> dict[str, Any]:
    """The rule's fields with every ``to`` selector replaced by prefixes."""
    fields = rule.fields()
    targets = fields.get("to")
    if isinstance(targets, str):
        targets = [targets]
    if isinstance(targets, list):
        fields["to"] = list(
            dict.fromkeys(p for t in targets for p in resolve_selector(str(t), mapping))
        )
    return fields
