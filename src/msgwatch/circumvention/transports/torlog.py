"""Reading a tor client's log: bootstrap progress, the SOCKS port it opened, its version, and the
lines kept for the measurement — pure code, bytes in, state out, every buffer bounded.

tor reports bootstrap progress as notice lines::

    Bootstrapped 10% (conn_done): Connected to a relay

and, when a step keeps failing, a warning naming the reason (``Problem bootstrapping. Stuck at 5%
(conn): Connecting to a relay. (Connection refused; CONNECTREFUSED; count 3; ...)``). The stages
of :mod:`msgwatch.circumvention.model` follow the progress (:func:`stage_of`): ``connect`` is done
at 10 % (``conn_done``: TCP to the first hop), ``handshake`` at 15 % (``handshake_done``: the link
handshake with the first hop), ``tunnel`` at 100 % (``done``). Through an obfs4 bridge tor says
``conn_done`` only after the pluggable transport's handshake, so there the transport measures
``connect`` itself (a plain TCP connect) and tor's progress up to 15 % is the ``handshake``.

Everything from the log is hostile: a line is cut at :data:`MAX_LINE` characters, a partial line
at :data:`MAX_LINE` bytes, the kept lines (the ``Bootstrapped`` lines and warnings/errors, as
OONI's ``tor_logs``) at :data:`MAX_KEPT`; numbers are range-checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from msgwatch import failures as F

MAX_LINE = 1024
"""Characters kept of one log line (a longer one is cut)."""
MAX_KEPT = 200
"""Log lines kept for the measurement (``tor_logs``)."""
CONNECTED, HANDSHAKE_DONE, DONE = 10, 15, 100
"""Progress at which the ``connect``, ``handshake`` and ``tunnel`` stages are done."""

_BOOTSTRAP = re.compile(
    r"\bBootstrapped (\d{1,3})%(?: \(([a-z_]{1,40})\))?: ?([^\x00-\x1f]{0,200})"
)
_STUCK = re.compile(
    r"Problem bootstrapping\. Stuck at \d{1,3}%.*?\(([^;()]{0,120}); ([A-Z_]{1,30});"
)
_SOCKS = re.compile(r"Opened Socks listener connection \(ready\) on 127\.0\.0\.1:(\d{1,5})\b")
_VERSION = re.compile(r"\bTor (\d{1,3}\.\d{1,3}\.\d{1,3}(?:\.\d{1,3})?(?:-[A-Za-z0-9.]{1,20})?)"
                      r" (?:running on|opening)")  # fmt: skip
_KEEP = re.compile(r"\[(?:warn|err)\]|\bBootstrapped \d")
REASONS = {
    "CONNECTREFUSED": F.CONNECTION_REFUSED,
    "CONNECTRESET": F.CONNECTION_RESET,
    "TIMEOUT": F.TIMEOUT,
    "NOROUTE": F.HOST_UNREACHABLE,
}
"""tor's OR-connection failure reasons (control-spec ``ORCONN`` ``REASON``) → failure strings."""


def clean(line: str) -> str:
    """One log line as kept: control characters replaced, cut at :data:`MAX_LINE`."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "?", line[:MAX_LINE]).rstrip()


class LineSplitter:
    """Bytes of a stream in, complete lines out; a partial line never grows past ``max_line``
    bytes (the rest of an over-long line is dropped up to its newline)."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        *complete, rest = data.split(b"\n")
        lines = [self._finish(piece) for piece in complete]
        self._append(rest)
        return lines

    def _append(self, piece: bytes) -> None:
        if self._skipping:
            return
        room = self.max_line - len(self._partial)
        self._partial += piece[: max(room, 0)]
        if len(piece) > room:
            self._skipping = True

    def _finish(self, piece: bytes) -> str:
        self._append(piece)
        line = bytes(self._partial).decode("utf-8", errors="replace")
        self._partial.clear()
        self._skipping = False
        return clean(line)

    def flush(self) -> list[str]:
        """The last line when the stream ended without a newline."""
        if not self._partial:
            return []
        return [self._finish(b"")]


@dataclass
class TorLog:
    """What a tor client's log has said so far (feed it lines with :meth:`feed`)."""

    progress: int = 0
    tag: str = ""
    summary: str = ""
    socks_port: int | None = None
    version: str | None = None
    stuck_reason: str | None = None
    """tor's reason (``CONNECTREFUSED``...) from its last "Problem bootstrapping" warning."""
    kept: list[str] = field(default_factory=list)
    dropped: int = 0
    errors: list[str] = field(default_factory=list)
    """The last ``[err]`` lines (at most 5): why a tor that exited did."""

    def feed(self, line: str) -> None:
        line = clean(line)
        if _KEEP.search(line):
            if len(self.kept) < MAX_KEPT:
                self.kept.append(line)
            else:
                self.dropped += 1
        if "[err]" in line:
            self.errors = [*self.errors[-4:], line]
        found = _BOOTSTRAP.search(line)
        if found:
            percent = int(found.group(1))
            if 0 <= percent <= DONE and percent >= self.progress:
                self.progress, self.tag = percent, found.group(2) or ""
                self.summary = found.group(3).strip()
            return
        stuck = _STUCK.search(line)
        if stuck:
            self.stuck_reason = stuck.group(2)
            return
        socks = _SOCKS.search(line)
        if socks and self.socks_port is None and 0 < int(socks.group(1)) < 65536:
            self.socks_port = int(socks.group(1))
            return
        version = _VERSION.search(line)
        if version and self.version is None:
            self.version = version.group(1)

    @property
    def done(self) -> bool:
        return self.progress >= DONE

    def failure(self) -> str:
        """The failure string for a bootstrap that stopped here (the budget ran out)."""
        if self.stuck_reason in REASONS:
            return REASONS[self.stuck_reason]
        return F.TIMEOUT


def stage_of(progress: int) -> str:
    """The stage a bootstrap stopped at ``progress`` failed in."""
    if progress < CONNECTED:
        return "connect"
    if progress < HANDSHAKE_DONE:
        return "handshake"
    return "tunnel"
