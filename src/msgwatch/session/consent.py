"""Informed consent for call tests.

Call tests send traffic that looks like a call (STUN to call ports, call-shaped packet streams) to a
test helper; on a network that watches for calls, that can draw attention to whoever runs the probe.
The first run that would send it explains this and asks; the answer is kept in the user's config
directory (``$XDG_CONFIG_HOME/msgwatch/consent.json``). Unattended runs pass ``--yes``.

:func:`ensure_consent` is the session's check: the question itself is the caller's (an ``Ask``
callback shows :data:`EXPLANATION` and answers yes or no); without one (no terminal), a run that
needs consent it does not have stops with an ``ENVIRONMENT`` error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
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


def consent_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "msgwatch" / "consent.json"


def has_consent(path: Path | None = None) -> bool:
    try:
        data = json.loads((path or consent_file()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("call_tests") is True


def record_consent(path: Path | None = None) -> None:
    target = path or consent_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    target.write_text(json.dumps({"call_tests": True, "given": now}) + "\n", encoding="utf-8")


def ensure_consent(ask: Ask | None, path: Path | None = None) -> None:
    """Return when call tests have consent, asking (and recording a yes) if need be; else raise
    a :class:`SessionError` (``ENVIRONMENT``)."""
    if has_consent(path):
        return
    if ask is None:
        raise SessionError(
            "call tests (--helper) need consent: run once on a terminal and answer, or pass --yes",
            ENVIRONMENT,
        )
    if not ask(EXPLANATION):
        raise SessionError("call tests not run: no consent", ENVIRONMENT)
    record_consent(path)
