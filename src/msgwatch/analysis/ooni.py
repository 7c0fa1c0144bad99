"""OONI's messenger tests as verdict facts: OONI's own keys, read the way msgwatch names things.

OONI's ``whatsapp``, ``telegram``, ``signal`` and ``facebook_messenger`` tests judge for themselves;
this module reads their ``test_keys`` into msgwatch's (service, function, verdict, mechanism), the
service named as the catalogue names it (the test's name). It is pure: no I/O, and it never raises
on odd input. Rules:

- A status key ``"ok"`` is ``ok`` and ``"blocked"`` is ``blocked``; a boolean ``*_blocking`` key is
  ``blocked`` when one is true and ``ok`` when none is true and one is false. Anything else
  (``null``, a key missing: the test could not tell) gives no fact for that function.
- The mechanism is OONI's failure string for the function when it has one
  (``ssl_invalid_hostname``), else the name of OONI's key that said "blocked"
  (``telegram_tcp_blocking``), else ``None``.

======================  ============  ==============================================================
test                    function      OONI keys
======================  ============  ==============================================================
``whatsapp``            text          ``whatsapp_endpoints_status``
``whatsapp``            web           ``whatsapp_web_status``, ``whatsapp_web_failure``
``whatsapp``            registration  ``registration_server_status``, ``registration_server_failure``
``telegram``            text          ``telegram_tcp_blocking``, ``telegram_http_blocking``
``telegram``            web           ``telegram_web_status``, ``telegram_web_failure``
``signal``              text          ``signal_backend_status``, ``signal_backend_failure``
``facebook_messenger``  text          ``facebook_tcp_blocking``, ``facebook_dns_blocking``
======================  ============  ==============================================================

The table is :data:`TESTS`; :func:`functions` is the functions a test covers, whatever it found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Check:
    """How one function is read from an OONI test's keys: a status key (with its failure key), or
    boolean ``*_blocking`` flags."""

    function: str
    status: str | None = None
    failure: str | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Fact:
    """One function's verdict as an OONI test gave it."""

    service: str
    function: str
    verdict: Literal["ok", "blocked"]
    mechanism: str | None


TESTS: dict[str, tuple[Check, ...]] = {
    "whatsapp": (
        Check("text", status="whatsapp_endpoints_status"),
        Check("web", status="whatsapp_web_status", failure="whatsapp_web_failure"),
        Check(
            "registration",
            status="registration_server_status",
            failure="registration_server_failure",
        ),
    ),
    "telegram": (
        Check("text", flags=("telegram_tcp_blocking", "telegram_http_blocking")),
        Check("web", status="telegram_web_status", failure="telegram_web_failure"),
    ),
    "signal": (Check("text", status="signal_backend_status", failure="signal_backend_failure"),),
    "facebook_messenger": (
        Check("text", flags=("facebook_tcp_blocking", "facebook_dns_blocking")),
    ),
}
"""OONI's messenger tests (the test's name is the service's catalogue id) and how each function is
read."""


def functions(test_name: object) -> tuple[str, ...]:
    """The functions an OONI messenger test covers (``()`` for any other test)."""
    checks = TESTS.get(test_name) if isinstance(test_name, str) else None
    return tuple(c.function for c in checks or ())


def facts(measurement: Mapping[str, Any]) -> list[Fact]:
    """The verdict facts of an OONI messenger test, in the table's order; ``[]`` for any other."""
    test_name = measurement.get("test_name")
    keys = measurement.get("test_keys")
    if not isinstance(test_name, str) or test_name not in TESTS or not isinstance(keys, Mapping):
        return []
    found = (_read(test_name, check, keys) for check in TESTS[test_name])
    return [fact for fact in found if fact is not None]


def _read(service: str, check: Check, keys: Mapping[str, Any]) -> Fact | None:
    if check.status is not None:
        status = keys.get(check.status)
        if status == "ok":
            return Fact(service, check.function, "ok", None)
        if status == "blocked":
            failure = keys.get(check.failure) if check.failure else None
            mechanism = failure if isinstance(failure, str) and failure else None
            return Fact(service, check.function, "blocked", mechanism)
        return None
    values = [(name, keys.get(name)) for name in check.flags]
    for name, value in values:
        if value is True:
            return Fact(service, check.function, "blocked", name)
    if any(value is False for _, value in values):
        return Fact(service, check.function, "ok", None)
    return None
