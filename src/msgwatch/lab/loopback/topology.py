"""The mini-Internet as data: the address plan, what each server does, and the ground truth.

Every address is on loopback. Each service owns a /24 (``127.0.<10·k>.0/24``) that stands for its
real networks and is written into the catalogue as the service's ``networks``; the censor's block-page
server (``127.0.66.6``) and the resolver (``127.0.53.53``) lie outside all of them.

Four tables say what answers where: ``DNS`` (name → address; ``None`` is NXDOMAIN), ``SITES``
(nginx servers), ``SILENT_TCP`` / ``SILENT_UDP`` (sockets the lab holds open and never serves) and
``TURN_IPS`` (coturn). ``SERVICES`` is the catalogue, with the vendor documents each endpoint
mirrors, and ``EXPECTED`` the verdicts a correct probe gives — checked against the tables by the tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

CHECKED = dt.date(2026, 11, 24)
"""When the vendor documents below were read."""

RESOLVER_IP = "127.0.53.53"
BLOCKPAGE_IP = "127.0.66.6"
BLOCKPAGE_CERT = "blocked.minilab.invalid"
INTERCEPT_CERT = "interception.minilab.invalid"
DEFAULT_CERT = "default.minilab.invalid"
BLOCKPAGE_HTML = (
    "<!DOCTYPE html><html><head><title>Access restricted</title></head><body>"
    "<h1>Access restricted</h1><p>Access to this resource has been blocked by order of the "
    "Ministry of Digital Development (msgwatch mini-Internet).</p></body></html>"
)

DNS: dict[str, str | None] = {
    "e1.whatsapp.net": "127.0.10.11",
    "e2.whatsapp.net": "127.0.10.12",
    "web.whatsapp.com": "127.0.10.20",
    "v.whatsapp.net": "127.0.10.21",
    "web.telegram.org": BLOCKPAGE_IP,  # forged: the block-page server, outside 127.0.20.0/24
    "chat.signal.org": "127.0.30.10",
    "cdn.signal.org": "127.0.30.20",
    "cdn2.signal.org": "127.0.30.21",
    "turn3.voip.signal.org": "127.0.30.34",
    "edge-mqtt.facebook.com": "127.0.40.10",
    "www.messenger.com": "127.0.40.20",
    "scontent.xx.fbcdn.net": None,  # NXDOMAIN
    "zoom.us": "127.0.50.10",
    "teams.microsoft.com": "127.0.60.10",
}


@dataclass(frozen=True)
class Site:
    """An nginx server block: ``names`` on ``address:port`` (no names: the default server)."""

    address: str
    port: int
    names: tuple[str, ...] = ()
    tls: bool = True
    cert_for: str | None = None
    """The name the presented certificate is for, when it is not ``names``."""
    blockpage: bool = False


SITES: tuple[Site, ...] = (
    Site("127.0.10.11", 443, ("e1.whatsapp.net",)),
    Site("127.0.10.11", 5222, ("e1.whatsapp.net",)),
    Site("127.0.10.12", 443, ("e2.whatsapp.net",)),
    Site("127.0.10.12", 5222, ("e2.whatsapp.net",)),
    Site("127.0.10.20", 443, ("web.whatsapp.com",)),
    Site("127.0.10.21", 443, ("v.whatsapp.net",)),
    Site("127.0.20.50", 443),
    Site("127.0.20.51", 443),
    Site("127.0.30.10", 443, ("chat.signal.org",)),
    Site("127.0.40.10", 443, ("edge-mqtt.facebook.com",)),
    Site("127.0.40.20", 443, ("www.messenger.com",), cert_for=INTERCEPT_CERT),
    Site("127.0.50.10", 443, ("zoom.us",)),
    Site("127.0.50.10", 80, ("zoom.us",), tls=False, blockpage=True),
    Site("127.0.60.10", 443, ("teams.microsoft.com",)),
    Site(BLOCKPAGE_IP, 80, tls=False, blockpage=True),
    Site(BLOCKPAGE_IP, 443, cert_for=BLOCKPAGE_CERT, blockpage=True),
)
SILENT_TCP: tuple[tuple[str, int], ...] = (("127.0.30.20", 443), ("127.0.30.21", 443))
SILENT_UDP: tuple[tuple[str, int], ...] = (("127.0.10.34", 3478), ("127.0.10.35", 3478))
TURN_IPS: tuple[str, ...] = ("127.0.30.34", "127.0.60.34")
TURN_PORT = 3478
REFUSING = ("127.0.20.100", 443)
"""Nothing listens here: the kernel answers a SYN with a reset."""


def source(id: str, title: str, url: str, kind: str = "vendor") -> dict[str, Any]:
    return {"id": id, "title": title, "url": url, "kind": kind, "checked": CHECKED}


def ep(id: str, source: str, protocol: str, **fields: Any) -> dict[str, Any]:
    """An endpoint as written in a service file (``host``/``hosts``/``address``, ``port``...)."""
    transport = "udp" if protocol in ("stun", "turn") else "tcp"
    return {"id": id, **fields, "transport": transport, "protocol": protocol,
            "source": source, "checked": CHECKED}  # fmt: skip


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    operator: str
    network: str
    stands_for: str
    sources: tuple[dict[str, Any], ...]
    functions: dict[str, dict[str, Any]] = field(default_factory=dict)


OONI = "https://github.com/ooni/spec/blob/master/nettests"
META = "https://developers.facebook.com/docs/whatsapp/guides/network-requirements"
SIGNAL_FW = (
    "https://support.signal.org/hc/en-us/articles/360007320291-Firewall-and-Internet-settings"
)
ZOOM_FW = "https://support.zoom.com/hc/en/article?id=zm_kb&sysparm_article=KB0060548"
MS365 = "https://learn.microsoft.com/en-us/microsoft-365/enterprise/urls-and-ip-address-ranges"
_WA_RELAYS = [
    ep("relay-1", "meta", "stun", address="127.0.10.34", port=3478),
    ep("relay-2", "meta", "stun", address="127.0.10.35", port=3478),
]
_TEAMS_MEDIA = [
    ep("relay-stun", "ms365", "stun", address="127.0.60.34", port=TURN_PORT),
    ep("relay-turn", "ms365", "turn", address="127.0.60.34", port=TURN_PORT),
]

SERVICES: tuple[Service, ...] = (
    Service("whatsapp", "WhatsApp", "Meta Platforms", "127.0.10.0/24", "157.240.0.0/16",
        (source("ooni-ts018", "OONI spec ts-018 WhatsApp", f"{OONI}/ts-018-whatsapp.md", "spec"),
         source("meta", "WhatsApp network requirements (Meta for Developers)", META)),
        {"text": {"mode": "any_of", "endpoints": [
            ep("chat", "ooni-ts018", "tcp", hosts=["e1.whatsapp.net", "e2.whatsapp.net"],
               ports=[443, 5222])]},
         "voice": {"mode": "any_of", "endpoints": _WA_RELAYS},
         "video": {"mode": "any_of", "endpoints": _WA_RELAYS},
         "web": {"endpoints": [ep("web", "ooni-ts018", "https", host="web.whatsapp.com", port=443)]},
         "registration": {"endpoints": [ep("register", "ooni-ts018", "https", host="v.whatsapp.net",
                                           port=443, path="/v2/register")]}}),
    Service("telegram", "Telegram", "Telegram Messenger", "127.0.20.0/24", "149.154.160.0/20",
        (source("ooni-ts020", "OONI spec ts-020 Telegram", f"{OONI}/ts-020-telegram.md", "spec"),
         source("tg-cidr", "Telegram's published address ranges",
                "https://core.telegram.org/resources/cidr.txt")),
        {"text": {"mode": "any_of", "note": "dc3 refuses: the pool is ok while one DC answers",
                  "endpoints": [ep(f"dc{i}", "ooni-ts020", "tcp", address=a, port=443)
                                for i, a in ((1, "127.0.20.50"), (2, "127.0.20.51"),
                                             (3, REFUSING[0]))]},
         "web": {"endpoints": [ep("web", "ooni-ts020", "https", host="web.telegram.org",
                                  port=443)]}}),
    Service("signal", "Signal", "Signal Technology Foundation", "127.0.30.0/24",
        "the addresses its hosts resolve to (no published ranges)",
        (source("signal-fw", "Signal Support: Firewall and Internet settings", SIGNAL_FW),),
        {"text": {"endpoints": [ep("chat", "signal-fw", "tls", host="chat.signal.org", port=443)]},
         "media": {"mode": "any_of", "endpoints": [
             ep("cdn", "signal-fw", "https", hosts=["cdn.signal.org", "cdn2.signal.org"],
                port=443)]},
         "voice": {"mode": "all_of", "endpoints": [
             ep("turn-stun", "signal-fw", "stun", host="turn3.voip.signal.org", port=TURN_PORT),
             ep("turn-allocate", "signal-fw", "turn", host="turn3.voip.signal.org",
                port=TURN_PORT)]}}),
    Service("facebook_messenger", "Facebook Messenger", "Meta Platforms", "127.0.40.0/24",
        "157.240.0.0/16",
        (source("ooni-ts019", "OONI spec ts-019 Facebook Messenger",
                f"{OONI}/ts-019-facebook-messenger.md", "spec"),),
        {"text": {"endpoints": [ep("mqtt", "ooni-ts019", "tls", host="edge-mqtt.facebook.com",
                                   port=443)]},
         "media": {"endpoints": [ep("cdn", "ooni-ts019", "https", host="scontent.xx.fbcdn.net",
                                    port=443)]},
         "web": {"endpoints": [ep("web", "ooni-ts019", "https", host="www.messenger.com",
                                  port=443)]}}),
    Service("zoom", "Zoom", "Zoom Communications", "127.0.50.0/24", "Zoom's published ranges",
        (source("zoom-fw", "Zoom network firewall or proxy server settings", ZOOM_FW),),
        {"web": {"endpoints": [ep("web", "zoom-fw", "http", host="zoom.us", port=80)]},
         "registration": {"endpoints": [ep("signin", "zoom-fw", "https", host="zoom.us", port=443,
                                           path="/signin")]}}),
    Service("teams", "Microsoft Teams", "Microsoft", "127.0.60.0/24", "52.112.0.0/14",
        (source("ms365", "Microsoft 365 URLs and IP address ranges", MS365),),
        {"web": {"endpoints": [ep("web", "ms365", "https", host="teams.microsoft.com", port=443)]},
         "voice": {"mode": "all_of", "endpoints": _TEAMS_MEDIA},
         "video": {"mode": "all_of", "endpoints": _TEAMS_MEDIA}}),
)  # fmt: skip


@dataclass(frozen=True)
class Expectation:
    """What a correct probe says about one (service, function) of the mini-Internet."""

    service: str
    function: str
    verdict: str
    mechanism: str | None
    why: str


_COTURN = "coturn answers the Binding request and challenges the Allocate with 401 + REALM + NONCE"
_SILENT_UDP = "both relays are bound UDP sockets that never answer (calls-only block, az-2017)"
EXPECTED: tuple[Expectation, ...] = (
    Expectation("whatsapp", "text", "ok", None, "nginx accepts TCP on e1/e2.whatsapp.net:443,5222"),
    Expectation("whatsapp", "voice", "blocked", "udp.timeout", _SILENT_UDP),
    Expectation("whatsapp", "video", "blocked", "udp.timeout", _SILENT_UDP),
    Expectation("whatsapp", "web", "ok", None, "HTTPS 200 with a certificate for the name"),
    Expectation("whatsapp", "registration", "ok", None, "HTTPS 200 with a certificate for the name"),
    Expectation("telegram", "text", "ok", None,
                "dc1 and dc2 accept TCP; dc3 refuses, but an any_of pool needs one"),
    Expectation("telegram", "web", "blocked", "dns.forged",
                "the resolver answers 127.0.66.6 (outside 127.0.20.0/24), where a block page is"),
    Expectation("signal", "text", "ok", None, "TLS with a certificate for chat.signal.org"),
    Expectation("signal", "media", "blocked", "tls.timeout",
                "cdn/cdn2: TCP completes (a socket that never accepts), no ServerHello ever"),
    Expectation("signal", "voice", "ok", None, _COTURN),
    Expectation("facebook_messenger", "text", "ok", None, "TLS with a certificate for the name"),
    Expectation("facebook_messenger", "media", "blocked", "dns.nxdomain",
                "the resolver answers NXDOMAIN for scontent.xx.fbcdn.net"),
    Expectation("facebook_messenger", "web", "blocked", "tls.cert_invalid",
                f"www.messenger.com presents a certificate for {INTERCEPT_CERT}"),
    Expectation("zoom", "web", "blocked", "http.blockpage",
                "plain HTTP to zoom.us is answered 403 with a block page"),
    Expectation("zoom", "registration", "ok", None, "the same host over HTTPS works (port 80 only)"),
    Expectation("teams", "web", "ok", None, "HTTPS 200 with a certificate for the name"),
    Expectation("teams", "voice", "ok", None, _COTURN),
    Expectation("teams", "video", "ok", None, _COTURN),
)  # fmt: skip
