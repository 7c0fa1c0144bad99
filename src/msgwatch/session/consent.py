"""Informed consent for call tests.

Call tests send traffic that looks like a call (STUN to call ports, call-shaped packet streams) to a
test helper; on a network that watches for calls, that can draw attention to whoever runs the probe.
The first run that would send it explains this and asks; the answer is kept in the user's config
directory (``$XDG_CONFIG_HOME/msgwatch/consent.json``). Unattended runs pass ``--yes``.

Circumvention tests (``msgwatch circumvent``, ``msgwatch run --circumvention``) ask their own
question (:data:`CIRCUMVENTION`): starting Tor, a VPN or a proxy can be visible to the network.

:func:`ensure_consent` is the session's check: the question itself is the caller's (an ``Ask``
callback shows :data:`EXPLANATION` and answers yes or no); without one (no terminal), a run that
needs consent it does not have stops with an ``ENVIRONMENT`` error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msgwatch.session.errors import ENVIRONMENT, SessionError

Ask = Callable[[str], bool]
"""``ask(explanation) -> consented?``: shows the explanation and asks (a terminal's prompt)."""

EXPLANATION = """\
msgwatch is about to test calls. It will send traffic that looks like voice and video calls (STUN
requests and call-shaped packet streams on the ports messengers use for calls) to a test helper
outside this network. Anyone who watches this network - your provider, an employer, the state - can
see that this machine sent it, and may read it as someone trying to place calls with those apps.
Where making such calls is itself risky, do not go on."""


@dataclass(frozen=True)
class Consent:
    """One kind of test that needs consent: its key in the consent file, its explanation and
    how the error names it."""

    key: str
    text: str
    what: str


CIRCUMVENTION = Consent(
    key="circumvention_tests",
    text="""\
msgwatch is about to test circumvention tools: it will start Tor, obfs4 bridges, VPN clients
(OpenVPN, WireGuard), Shadowsocks and proxies, and connect to their servers. By default that
includes the public Tor directory authorities and the default obfs4 bridges of msgwatch's
catalogue, besides the endpoints of your own file (`msgwatch circumvent --no-catalogue-entries`
leaves them out). These tests can be visible to the network: anyone who watches it - your
provider, an employer, the state - may see that this machine contacted Tor relays or bridges, or
used a VPN or a proxy, and censors fingerprint exactly that. Host names (of your endpoints, and
of the services tried through the tunnels) may be looked up outside the tunnels, with this
network's resolver, where they can be seen too. Where using such tools is itself risky, do not
go on.""",
    what="circumvention tests",
)


def consent_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "msgwatch" / "consent.json"


def _read(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def has_consent(path: Path | None = None, key: str = "call_tests") -> bool:
    return _read(path or consent_file()).get(key) is True


def record_consent(path: Path | None = None, key: str = "call_tests") -> None:
    """Record a yes for ``key`` (the other kinds' answers are kept)."""
    target = path or consent_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    data = {**_read(target), key: True, "given": now}
    target.write_text(json.dumps(data) + "\n", encoding="utf-8")


def ensure_consent(
    ask: Ask | None,
    path: Path | None = None,
    *,
    key: str = "call_tests",
    explanation: str = EXPLANATION,
    what: str = "call tests (--helper)",
) -> None:
    """Return when the tests (call tests by default; ``key``/``explanation``/``what`` name
    another kind, e.g. :data:`CIRCUMVENTION`) have consent, asking (and recording a yes) if
    need be; else raise a :class:`SessionError` (``ENVIRONMENT``)."""
    if has_consent(path, key):
        return
    if ask is None:
        raise SessionError(
            f"{what} need consent: run once on a terminal and answer, or pass --yes",
            ENVIRONMENT,
        )
    if not ask(explanation):
        raise SessionError(f"{what.split(' (')[0]} not run: no consent", ENVIRONMENT)
    record_consent(path, key)
