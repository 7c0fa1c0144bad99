"""The base of every censor rule, its typed fields, and the emitter rules compile through.

A rule is a pydantic model declared as data: a ``type`` tag, typed fields with ``extra="forbid"``
(a misspelt field in a scenario file is an error, not a silently ignored option), and one method,
:meth:`Rule.emit`, that writes what the rule needs through an :class:`Emitter`: nft rules for the
censor's forward chain, iptables string matches, tc commands, resolver lines or a helper process.

Every address a rule names must lie in the lab's networks (198.18.0.0/15, 2001:db8::/32): the censor
can never be configured to touch anything else.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator

from msgwatch.lab.censor.context import CHAIN, CensorContext, CensorProcess, in_lab

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _prefix(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an address or prefix: {value!r}") from exc
    if not in_lab(network):
        raise ValueError(f"{value} is outside the lab's networks (198.18.0.0/15, 2001:db8::/32)")
    return str(network)


def _address(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"not an address: {value!r}") from exc
    if not in_lab(ipaddress.ip_network(address)):
        raise ValueError(f"{value} is outside the lab's networks (198.18.0.0/15, 2001:db8::/32)")
    return str(address)


def _port(value: Any) -> str:
    """A port (``3478``) or an inclusive range (``"3478-3481"``), normalised to text."""
    text = (
        str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    )
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text)
    if not match:
        raise ValueError(f"not a port or port range: {value!r}")
    low = int(match[1])
    high = int(match[2]) if match[2] else low
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"port out of range 1-65535 (or empty range): {value!r}")
    return str(low) if low == high else f"{low}-{high}"


_KEYWORD = re.compile(r"[A-Za-z0-9._*-]{1,128}")
_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
)


def _keyword(value: str) -> str:
    """A host-name fragment matched as a substring of the packet (SNI or HTTP Host)."""
    if not _KEYWORD.fullmatch(value):
        raise ValueError(f"keyword must be 1-128 of A-Z a-z 0-9 . _ * -: {value!r}")
    return value


def _name(value: str) -> str:
    """A DNS name (it and every name under it are matched)."""
    name = value.strip().rstrip(".").lower()
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a DNS name: {value!r}")
    return name


def _hour(value: str) -> str:
    if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"hours are HH:MM (00:00-23:59): {value!r}")
    return value


Prefix = Annotated[str, AfterValidator(_prefix)]
Address = Annotated[str, AfterValidator(_address)]
Port = Annotated[str, BeforeValidator(_port)]
Keyword = Annotated[str, AfterValidator(_keyword)]
Name = Annotated[str, AfterValidator(_name)]
Hour = Annotated[str, AfterValidator(_hour)]


def _label(value: str) -> str:
    """Free text that goes into nft comments: no quotes, no newlines."""
    if not re.fullmatch(r"[A-Za-z0-9 _.:/+-]{1,64}", value):
        raise ValueError(f"label must be 1-64 of letters, digits, space and _.:/+-: {value!r}")
    return value


Label = Annotated[str, AfterValidator(_label)]


class Rule(BaseModel):
    """A censor behaviour. Subclasses set ``type`` and implement :meth:`emit`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    hours: tuple[Hour, Hour] | None = None
    """Active only between these local times (``["08:00", "10:00"]``; may wrap past midnight)."""
    label: Label | None = None
    """Free text carried into the ruleset's comments (e.g. the scenario's name for the rule)."""

    hours_supported: ClassVar[bool] = True
    """False for rules that live outside the packet path (resolver configuration, tc)."""

    @model_validator(mode="after")
    def _hours_allowed(self) -> Rule:
        if self.hours is not None and self.hours[0] == self.hours[1]:
            raise ValueError("hours: start and end must differ")
        if self.hours is not None and not self.hours_supported:
            raise ValueError(
                f"{self.type} cannot be limited to hours (it is not a packet-path rule); "
                "use a scenario phase instead"
            )
        return self

    def emit(self, out: Emitter) -> None:
        raise NotImplementedError


def split_families(prefixes: Sequence[str]) -> list[tuple[str, Sequence[str]]]:
    """(``ip``/``ip6``, prefixes of that family): nft and iptables need one rule per family."""
    v4 = [p for p in prefixes if ipaddress.ip_network(p).version == 4]
    v6 = [p for p in prefixes if ipaddress.ip_network(p).version == 6]
    return [(fam, nets) for fam, nets in (("ip", v4), ("ip6", v6)) if nets]


def nft_set(items: Sequence[str]) -> str:
    """An anonymous nft set (a single element needs no braces, but braces are always valid)."""
    return "{ " + ", ".join(items) + " }"


def flow_matches(
    to: Sequence[str], ports: Sequence[str], proto: str | None
) -> list[tuple[str, str]]:
    """nft matches for packets towards ``to``:``ports`` and for the packets coming back.

    One (towards, back) pair per address family named in ``to`` (or one pair without an address
    match when ``to`` is empty). ``proto`` is ``tcp``, ``udp`` or None (any protocol; with ports:
    TCP and UDP).
    """
    return [family_match(fam, nets, ports, proto) for fam, nets in split_families(to) or [("", [])]]


def family_match(
    fam: str, nets: Sequence[str], ports: Sequence[str], proto: str | None
) -> tuple[str, str]:
    """(towards, back) matches for one family (``ip``/``ip6``; ``""``: either) and its prefixes."""
    l4 = f"meta l4proto {proto}" if proto else "meta l4proto { tcp, udp }" if ports else ""
    dport = f"th dport {nft_set(ports)}" if ports else ""
    sport = f"th sport {nft_set(ports)}" if ports else ""
    dst = f"{fam} daddr {nft_set(nets)}" if nets else ""
    src = f"{fam} saddr {nft_set(nets)}" if nets else ""
    return _join(dst, l4, dport), _join(src, l4, sport)


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def local_to_utc(hhmm: str) -> str:
    """A local HH:MM as UTC HH:MM, with today's offset (as nft converts ``meta hour`` at load)."""
    offset = dt.timedelta(seconds=time.localtime().tm_gmtoff)
    hours, minutes = map(int, hhmm.split(":"))
    utc = dt.datetime(2000, 1, 2, hours, minutes) - offset
    return utc.strftime("%H:%M")


@dataclass
class Output:
    """What all rules of one censor emit, gathered by :func:`msgwatch.lab.censor.compile_rules`."""

    forward: list[str] = field(default_factory=list)
    nat: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    iptables: list[list[str]] = field(default_factory=list)
    tc: list[list[str]] = field(default_factory=list)
    resolver: list[str] = field(default_factory=list)
    processes: list[CensorProcess] = field(default_factory=list)
    marks_used: int = 0
    tc_classes: int = 0


MARK_BITS = 24
"""Conntrack mark bits the censor hands out (one per rule that marks flows)."""


@dataclass
class Emitter:
    """The compile-time interface one rule writes through; it knows the rule's index and window."""

    ctx: CensorContext
    index: int
    rule: Rule
    out: Output

    @property
    def name(self) -> str:
        """``r<i>``: prefix of this rule's sets, marks, processes and comments."""
        return f"r{self.index}"

    def _comment(self) -> str:
        text = f"{self.name} {self.rule.type}" + (f" {self.rule.label}" if self.rule.label else "")
        return f'comment "{text}"'

    def _window(self) -> str:
        if self.rule.hours is None:
            return ""
        start, end = self.rule.hours
        return f'meta hour "{start}"-"{end}" '

    def nft(self, statement: str) -> None:
        """A rule in the forward chain (``hours`` and a comment are added here)."""
        self.out.forward.append(f"{self._window()}{statement} {self._comment()}")

    def nat(self, statement: str) -> None:
        """A rule in the dstnat prerouting chain."""
        self.out.nat.append(f"{self._window()}{statement} {self._comment()}")

    def nft_set(self, suffix: str, declaration: str) -> str:
        """Declare a named set of this rule; returns its name (``r<i>_<suffix>``)."""
        name = f"{self.name}_{suffix}"
        self.out.sets.append(f"set {name} {{ {declaration} }}")
        return name

    def mark(self) -> int:
        """A conntrack mark bit of this rule's own (iptables marks a flow, nft acts on it)."""
        if self.out.marks_used >= MARK_BITS:
            raise ValueError(f"more than {MARK_BITS} rules mark flows; split the censor")
        bit = 1 << self.out.marks_used
        self.out.marks_used += 1
        return bit

    def iptables(self, family: str, table: str, matches: list[str], target: list[str]) -> None:
        """An iptables (``ip``) or ip6tables (``ip6``) rule appended to the censor's chain."""
        exe = "iptables" if family == "ip" else "ip6tables"
        window: list[str] = []
        if self.rule.hours is not None:  # xt_time compares UTC; hours are local like nft's
            start, end = (local_to_utc(h) for h in self.rule.hours)
            window = ["-m", "time", "--timestart", start, "--timestop", end]
        comment = ["-m", "comment", "--comment", f"{self.name} {self.rule.type}"]
        self.out.iptables.append(
            [exe, "-w", "-t", table, "-A", CHAIN, *matches, *window, *comment, *target]
        )

    def families(self, to: Sequence[str]) -> list[tuple[str, Sequence[str]]]:
        """Families to install iptables rules for: those of ``to``, else IPv4 (+ IPv6 if the ISP has it)."""
        if to:
            return split_families(to)
        none: Sequence[str] = ()
        return [("ip", none)] + ([("ip6", none)] if self.ctx.lan_prefix6 else [])

    def tc(self, argv: list[str]) -> None:
        self.out.tc.append(argv)

    def resolver(self, line: str) -> None:
        self.out.resolver.append(line)

    def ready_file(self, kind: str) -> Path:
        """Where this rule's helper of ``kind`` says it is ready."""
        return self.ctx.run_dir / f"censor-{self.name}-{kind}.ready"

    def process(self, kind: str, argv: list[str]) -> CensorProcess:
        """A helper process (``kind``: ``dns``, ``http``) run in the censor's namespace."""
        process = CensorProcess(f"{self.name}-{kind}", argv, self.ready_file(kind))
        self.out.processes.append(process)
        return process
