"""The loop guard: the helper never keeps answering a peer that is itself an echo.

The danger. The helper echoes any datagram to its source. Another echo — a second helper with
other ports, an RFC 862 echo service on a high port, anything that sends back what it gets — does
the same. One datagram with a forged source (the other echo's address and port) then bounces
between the two until a budget stops them: 10 forged datagrams made 62 MB in 10 s (issue 9).
The source-port guard (:mod:`msgwatch.helper.udp`, step 2: ports below 1024 and the helper's own)
only knows where echoes usually live; a second helper with a disjoint port list is not there.

The mechanism. What makes a loop is the helper's own reply coming back: an echo returns what it
was sent, so in a loop the helper receives, on a flow, the very bytes it sent to that flow a moment
ago, again and again. So the helper remembers, for a few seconds, a keyed digest of every reply it
sends (echo, STUN answer, downstream datagram) with the flow it went to (:class:`RecentReplies`),
and answers nothing that it already sent to that flow :data:`MAX_REPEATS` times in that time
(declined as ``own_reply``, counted on the flow). A forged datagram between two helpers then costs
at most ``2 × MAX_REPEATS`` datagrams, between a helper and any echo the same, whatever the ports.

Why this and not another way (the alternatives of issue 9, item 2):

- *Answer only datagrams that look like what a probe sends*: the probe's replays are call-shaped,
  but each original is paired with a **bit-inverted control** and the plain and neutral replays
  carry **random bytes**, on purpose (a control must carry no protocol); an echo returns the same
  bytes, so any content rule that passes the probe's datagrams passes their echoes too. It cannot
  break a loop.
- *Only flows opened by a probe's control connection*: every replay would need a control round
  trip first (a protocol change in the probe's replays and the lab), and a probe whose NAT maps UDP
  and TCP to different addresses (docs/helper.md, per-flow counters) would get no echoes at all:
  the guard would turn into false "blocked" verdicts, the worst error an observatory can make.
- *A handful of echoes per peer without a probe session*: the same session problem, and a replay
  is hundreds of datagrams on one flow.

The behaviour a loop has and a probe never has is sending the helper back its own reply. A probe's
replay never repeats a payload on a flow (every datagram of a schedule is distinct: RTP sequence
numbers, random bytes; ``tests/helper/test_loops.py`` checks every replay the probe builds), its
STUN retransmissions are requests (the helper's answers are responses), its pinholes are numbered.
The threshold is two and not one so that a flow that reuses a source port for a second replay of
the same schedule within the memory (the kernel picks the same ephemeral port about once in 28,000
binds) still gets every echo.

The cost, for other clients: a client that sends the **same bytes** on one flow more than
:data:`MAX_REPEATS` times within a few seconds gets the further copies declined (``own_reply``) —
a constant keep-alive, a flood of one payload. Vary the payload (a sequence number) to be echoed.

Not covered: a reflector that *transforms* what it answers (replies with new bytes to every
datagram, its own replies included). Those are bounded only by the budgets and, where they live on
well-known ports, by the source-port guard.

Bounds: the digests live in two generations of :attr:`RecentReplies.window` seconds each (a reply
is remembered for between one and two windows), each holding at most
:attr:`RecentReplies.max_entries` digests; a full generation starts the next one early (only above 32 768 replies a
second, near the helper's CPU limit of about 50 000, is a reply remembered for less than a
window: at 50 000 a second, 1.3 s, still far more than a round trip). A digest is Python's ``hash`` of the flow and the payload: 64 bits of SipHash over
the bytes, keyed at random per process (``PYTHONHASHSEED`` must stay unset in production), so a
client cannot aim a collision at another client's datagrams; it costs a fraction of a microsecond.
Time is passed in; nothing here reads a clock or a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from msgwatch.helper.flows import FlowKey

MAX_REPEATS = 2
"""A datagram the helper sent to a flow this many times recently is not answered again there."""
WINDOW = 2.0
"""Seconds of one generation of digests: replies are remembered for 2 to 4 s."""
MAX_ENTRIES = 65_536
"""Digests in one generation (about 5 MB); more start the next generation early."""


@dataclass
class RecentReplies:
    """What the helper sent recently, by flow and payload (see the module's notes)."""

    window: float = WINDOW
    max_entries: int = MAX_ENTRIES
    _current: dict[int, int] = field(default_factory=dict)
    _previous: dict[int, int] = field(default_factory=dict)
    _since: float | None = None

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def digest(self, key: FlowKey, payload: bytes) -> int:
        return hash((key, payload))

    def times_sent(self, digest: int, now: float) -> int:
        """How often the reply with ``digest`` went to its flow recently."""
        self._rotate(now)
        return self._current.get(digest, 0) + self._previous.get(digest, 0)

    def sent(self, digest: int, now: float) -> None:
        """Remember one reply (``digest`` from :meth:`digest`)."""
        self._rotate(now)
        self._current[digest] = self._current.get(digest, 0) + 1

    def _rotate(self, now: float) -> None:
        if self._since is None:
            self._since = now
        age = now - self._since
        if age >= 2 * self.window:
            self._previous, self._current, self._since = {}, {}, now
        elif age >= self.window or len(self._current) >= self.max_entries:
            self._previous, self._current, self._since = self._current, {}, now
