"""One sentence per event, built from its rows: what, where, since when, what still works, how.

Rules: every word comes from the event (services, functions, networks, times, mechanism, pattern,
controls); names come from the small tables below, an unknown one is shown as it is. Example:
"WhatsApp and Skype voice and video calls blocked on AS28787 and AS29049 since 2017-05-22 10:00 UTC;
text works; the same worked on AS39232 at the same time; by inspecting call traffic (DPI); came and
went until 2017-05-23 18:00 UTC." (The same working on another network of the country, a control,
is what tells a block from a failure.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

SERVICE_NAMES = {
    "whatsapp": "WhatsApp", "telegram": "Telegram", "signal": "Signal", "skype": "Skype",
    "facebook_messenger": "Facebook Messenger", "viber": "Viber", "wechat": "WeChat", "line": "LINE",
    "imo": "imo", "tor": "Tor", "vanilla_tor": "Tor", "torsf": "Tor Snowflake", "psiphon": "Psiphon",
    "openvpn": "OpenVPN", "riseupvpn": "RiseupVPN", "stun": "STUN",
}  # fmt: skip
FUNCTION_WORDS = {
    "text": "text", "voice": "voice calls", "video": "video calls", "media": "media",
    "web": "website", "registration": "registration", "bootstrap": "bootstrap",
    "reachability": "reachability", "tunnel": "tunnel",
}  # fmt: skip
MECHANISMS = {
    "udp.dpi_call": "by inspecting call traffic (DPI)",
    "udp.dpi_service": "by inspecting the service's traffic (DPI)",
    "udp.drop_relays": "by dropping traffic to the call relays",
    "udp.drop_ports": "by dropping UDP on the service's ports",
    "udp.drop_all": "by dropping all UDP",
    "http.blockpage": "with a block page",
    "throttle": "by throttling",
    "dns": "by DNS tampering",
    "tcp": "by blocking TCP connections",
    "ip": "by blocking IP addresses",
    "tls": "by interfering with TLS (SNI filtering)",
    "http": "by interfering with HTTP",
    "udp": "by interfering with UDP",
    "app": "by interfering with the application protocol",
    "stun": "by blocking STUN",
    "relay": "by blocking the relays",
    # a circumvention test's stages (docs/spec/ts-msgwatch-circumvention.md)
    "transfer.cut": "by cutting the flow after some bytes",
    "sustain.cut": "by cutting the flow after some bytes",
    "resolve": "by DNS tampering",
    "connect": "by blocking connections to the server",
    "handshake": "by blocking the handshake (fingerprinting)",
    "tunnel": "by stopping the tunnel from coming up",
    "transfer": "by stopping traffic through the tunnel",
    "sustain": "by stopping traffic through the tunnel",
}
TIME = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class StoryFacts:
    """What a sentence says."""

    services: Sequence[str]
    functions: Sequence[str]
    networks: Sequence[str]
    verdict: str
    mechanism: str
    pattern: str
    start: str  # row text
    end: str | None
    works: Sequence[str]  # other functions of the services that kept working
    elsewhere: Sequence[str] = ()  # other networks of the country where the same worked meanwhile


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def function_words(function: str) -> str:
    """A function in words; a function through a tunnel (``whatsapp.voice``, a circumvention
    test's row) as "WhatsApp voice calls through it"."""
    service, dot, inner = function.partition(".")
    if dot and inner:
        name = SERVICE_NAMES.get(service, service)
        return f"{name} {FUNCTION_WORDS.get(inner, inner)} through it"
    return FUNCTION_WORDS.get(function, function)


def _functions(functions: Sequence[str]) -> str:
    words = [function_words(f) for f in functions]
    if "voice calls" in words and "video calls" in words:
        words = [w for w in words if w != "video calls"]
        words[words.index("voice calls")] = "voice and video calls"
    return _join(words)


def _networks(networks: Sequence[str], most: int = 3) -> str:
    """Networks in words, the first ``most`` named and the rest counted."""
    if len(networks) <= most:
        return _join(list(networks))
    rest = len(networks) - most
    return _join([*networks[:most], f"{rest} other network{'s' if rest > 1 else ''}"])


def mechanism_phrase(mechanism: str) -> str:
    """How, in words (the exact mechanism, else its family, else itself)."""
    if not mechanism:
        return "by an unknown mechanism"
    return MECHANISMS.get(mechanism) or MECHANISMS.get(mechanism.split(".")[0]) or f"by {mechanism}"


def sentence(facts: StoryFacts) -> str:
    """The story of one event."""
    services = _join([SERVICE_NAMES.get(s, s) for s in facts.services])
    parts = [
        f"{services} {_functions(facts.functions)} {facts.verdict} on {_join(list(facts.networks))}"
        f" since {facts.start[:16]} UTC"
    ]
    if facts.works:
        works = _functions(facts.works)
        parts.append(f"{works} {'works' if len(facts.works) == 1 else 'work'}")
    if facts.elsewhere:
        parts.append(f"the same worked on {_networks(facts.elsewhere)} at the same time")
    parts.append(mechanism_phrase(facts.mechanism))
    tail = "came and went" if facts.pattern == "episodic" else ""
    if facts.end is None:
        tail = f"{tail}, ongoing" if tail else "ongoing"
    else:
        tail = f"{tail} until {facts.end[:16]} UTC" if tail else f"until {facts.end[:16]} UTC"
    parts.append(tail)
    return "; ".join(parts) + "."
