"""Bearer tokens: probe tokens (submissions) and the admin token (``/metrics``).

Tokens are never held or compared in the clear: each is kept as its SHA-256 digest, and a presented
token is hashed and looked up by digest, the final comparison made with ``hmac.compare_digest``.
The time a lookup takes depends on the digest of what was presented, which tells an attacker nothing
about any valid token; no comparison ever stops at the first differing character of a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from msgwatch.collector.models import Rejection


class TokenFileError(ValueError):
    """The probe tokens file cannot be read or holds no token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def read_tokens(path: Path) -> list[str]:
    """One token per line; blank lines and lines starting with ``#`` are ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"cannot read {path}: {exc}") from exc
    tokens = [line.strip() for line in text.splitlines()]
    tokens = [t for t in tokens if t and not t.startswith("#")]
    if not tokens:
        raise TokenFileError(f"{path} holds no token")
    return tokens


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, ``None`` without one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Tokens:
    """A set of tokens, asked "is this one of them?" in constant time per token."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._by_digest = {_digest(t): _digest(t) for t in tokens}

    def __len__(self) -> int:
        return len(self._by_digest)

    def identify(self, token: str | None) -> str | None:
        """A short stable id of a valid token (rate-limit key, never the token), else ``None``."""
        if token is None:
            return None
        digest = _digest(token)
        stored = self._by_digest.get(digest, b"\x00" * 32)
        if hmac.compare_digest(stored, digest):
            return "t:" + digest[:12].hex()
        return None


class Guard:
    """Who may submit and who may read ``/metrics``, as the doc says.

    - probe tokens configured: a submission needs one (401 ``unauthorized`` otherwise);
    - admin token configured: ``/metrics`` needs it — 401 without a valid token, 403 ``forbidden``
      for a probe token (a valid credential that is not the admin's).
    """

    def __init__(self, probe_tokens: Iterable[str] | None, admin_token: str | None) -> None:
        self.probes = Tokens(probe_tokens) if probe_tokens is not None else None
        self.admin = Tokens([admin_token]) if admin_token else None

    def submitter(self, authorization: str | None) -> str | None:
        """The rate-limit identity of a submitter (``None``: no tokens configured, use the
        address); raises 401 when tokens are configured and none valid is presented."""
        if self.probes is None:
            return None
        identity = self.probes.identify(bearer(authorization))
        if identity is None:
            raise Rejection("unauthorized", "submissions need Authorization: Bearer <probe token>")
        return identity

    def is_admin(self, authorization: str | None) -> bool:
        """Whether ``authorization`` carries the admin token (``False`` when none is configured:
        then nobody gets the operator's view of ``/health``)."""
        return self.admin is not None and self.admin.identify(bearer(authorization)) is not None

    def check_admin(self, authorization: str | None) -> None:
        if self.admin is None:
            return
        token = bearer(authorization)
        if self.admin.identify(token) is not None:
            return
        if self.probes is not None and self.probes.identify(token) is not None:
            raise Rejection("forbidden", "a probe token does not open /metrics")
        raise Rejection("unauthorized", "/metrics needs Authorization: Bearer <admin token>")
