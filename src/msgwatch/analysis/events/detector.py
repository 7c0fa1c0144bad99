"""The online detector of one series: counts in, events out, its whole memory a small JSON list.

One series is (probe_cc, probe_asn, service, function); it is fed bucket by bucket, in time order,
with the bucket's number (``floor(epoch / bucket_seconds)``), ``total`` measurements (ok + failing)
and ``failing`` ones. Theory of operation:

- **Background.** The series' own failure rate when nothing is blocked: a Beta posterior with
  forgetting (``forget`` per bucket), fed every bucket outside events. Buckets of an onset run
  wait (pending) until the run comes to nothing (both sums back at 0, or ``max_pending`` buckets),
  then join it; if the run opens an event they are dropped. Leaving them out for good would bias
  the estimate low (only failure-free buckets would count). Frozen while an event is open. The
  first ``warmup`` measurements of a series only teach the background (no onset is judged
  against a rate not yet known); the partial-blocking sum waits for ``warmup_partial`` (it weighs
  rates close to the background, so a young estimate's error passes for partial blocking, while
  nearly every measurement failing is blocking whatever the background was). The rate used is
  its mean plus ``margin_sd`` standard deviations (a young series is judged cautiously), clamped
  to [min_rate, max_rate].
- **Onset.** Two count CUSUMs of the Bernoulli log-likelihood ratio, background ``p0`` against
  ``p0 + shift·(1 - p0)`` for a small and a large shift. The small shift's sum above
  ``threshold``, or the large shift's above ``threshold_high``, opens an event (when both are
  above, the larger sum's); its start is where that sum's run began (the change-point estimate),
  ``start_after`` the last measured bucket before it.
- **End.** A reverse CUSUM, the event's own failing rate (the onset run's measurements, from where
  the firing sum left zero, and every bucket since) against the frozen background; above
  ``end_threshold`` over at least ``end_hold`` measured buckets it closes the event: ``end`` is where
  its run began, ``end_before`` the last measured bucket before that. No end = ongoing.
- **Pattern.** Inside an event, a working spell is the reverse CUSUM above ``low_llr`` (the
  service worked for a while) until it falls back to 0. Spells covering ``episodic_share`` of the
  event, or an onset within ``merge_gap`` of an end (which reopens that event), make it episodic.
  An episodic event followed by ``split_run`` buckets without a spell, failing at a clearly higher
  rate than before (two rates beat one by ``split_llr``), is closed where that run began and a
  continuous event opens there (the level changed).
- **Gaps.** Buckets without measurements carry no evidence; after ``gap_grace`` of them the onset
  sums decay (halving every ``gap_halflife``), so a stale half-run does not fire on return.

The detector never reads a clock; the same buckets give the same events however they are split
across passes (the state holds everything the next bucket needs).
"""

from __future__ import annotations

import math
from typing import Any

from msgwatch.analysis.events.params import DetectorParams

_LOG = math.log
_NONE = -1

# A closed event: [start, start_after, end, end_before, pattern, llr, mergeable, measurements, failing]
Closed = list[Any]


class Series:
    """One series' detector: :meth:`feed` it buckets in order; :meth:`dump` / :meth:`load` its state."""

    __slots__ = (
        "a",
        "b",
        "closed",
        "ev",
        "hi_f",
        "hi_n",
        "hi_prev",
        "hi_start",
        "last",
        "lo_f",
        "lo_n",
        "lo_prev",
        "lo_start",
        "pend_f",
        "pend_first",
        "pend_k",
        "pend_n",
        "pend_prev",
        "recent_fail",
        "recent_prev",
        "s_hi",
        "s_lo",
        "seen",
    )  # fmt: skip

    def __init__(self, params: DetectorParams) -> None:
        self.a = params.prior_rate * params.prior_weight
        self.b = (1.0 - params.prior_rate) * params.prior_weight
        self.last = _NONE  # last measured bucket
        self.s_lo = 0.0
        self.lo_start = _NONE
        self.lo_prev = _NONE
        self.s_hi = 0.0
        self.hi_start = _NONE
        self.hi_prev = _NONE
        self.lo_n = self.lo_f = 0  # each sum's run since it left zero: measurements, failing
        self.hi_n = self.hi_f = 0  # (before the bucket being fed)
        self.pend_n = 0  # measurements of the current onset run, not yet in the background
        self.pend_f = 0
        self.pend_k = 0  # their buckets
        self.pend_first = _NONE  # the run's first mostly failing bucket (and the bucket before it)
        self.pend_prev = _NONE
        self.recent_fail = _NONE  # the same, of the last run learned into the background
        self.recent_prev = _NONE
        self.seen = 0  # measurements learned into the background (for the warm-up)
        self.ev: list[Any] | None = None  # the open event, see _open()
        self.closed: list[Closed] = []

    # --- state ---------------------------------------------------------------------------------

    def dump(self) -> list[Any]:
        """The JSON-able state."""
        return [
            self.a, self.b, self.last, self.s_lo, self.lo_start, self.lo_prev,
            self.s_hi, self.hi_start, self.hi_prev, self.pend_n, self.pend_f, self.pend_k,
            self.seen, None if self.ev is None else list(self.ev),
            [list(c) for c in self.closed],
            [self.pend_first, self.pend_prev, self.recent_fail, self.recent_prev],
            [self.lo_n, self.lo_f, self.hi_n, self.hi_f],
        ]  # fmt: skip

    @classmethod
    def load(cls, params: DetectorParams, data: list[Any]) -> Series:
        """A detector from :meth:`dump`'s output (raises ValueError on a malformed state)."""
        if not isinstance(data, list) or len(data) != 17:
            raise ValueError("bad series state")
        s = cls(params)
        (s.a, s.b, s.last, s.s_lo, s.lo_start, s.lo_prev, s.s_hi, s.hi_start, s.hi_prev,
         s.pend_n, s.pend_f, s.pend_k, s.seen) = data[:13]  # fmt: skip
        s.ev = None if data[13] is None else list(data[13])
        s.closed = [list(c) for c in data[14]]
        s.pend_first, s.pend_prev, s.recent_fail, s.recent_prev = data[15]
        s.lo_n, s.lo_f, s.hi_n, s.hi_f = data[16]
        return s

    def background(self, params: DetectorParams) -> float:
        """The background failure rate used now (mean plus a margin, clamped)."""
        a, b = self.a, self.b
        m = a / (a + b)
        p = m + params.margin_sd * math.sqrt(m * (1.0 - m) / (a + b + 1.0))
        return min(max(p, params.min_rate), params.max_rate)

    # --- feeding -------------------------------------------------------------------------------

    def feed(self, params: DetectorParams, bucket: int, total: int, failing: int) -> None:
        """Take one bucket (``total`` > 0; empty buckets are simply not fed)."""
        last = self.last
        if last != _NONE and bucket - last - 1 > params.gap_grace:
            decay = 0.5 ** ((bucket - last - 1) / params.gap_halflife)
            self.s_lo *= decay
            self.s_hi *= decay
        ev = self.ev
        p0 = ev[_P0] if ev is not None else self.background(params)
        ok = total - failing
        lp0 = _LOG(p0)
        lq0 = _LOG(1.0 - p0)
        p1 = p0 + params.shift_low * (1.0 - p0)
        s_lo = self.s_lo + failing * (_LOG(p1) - lp0) + ok * (_LOG(1.0 - p1) - lq0)
        p2 = p0 + params.shift_high * (1.0 - p0)
        s_hi = self.s_hi + failing * (_LOG(p2) - lp0) + ok * (_LOG(1.0 - p2) - lq0)
        if s_lo <= 0.0:
            s_lo = 0.0
        elif self.s_lo == 0.0:
            self.lo_start, self.lo_prev = bucket, last
        if s_hi <= 0.0:
            s_hi = 0.0
        elif self.s_hi == 0.0:
            self.hi_start, self.hi_prev = bucket, last
        self.s_lo, self.s_hi = s_lo, s_hi
        if self.seen < params.warmup_partial:  # the background is not yet known well enough
            s_lo = self.s_lo = 0.0  # to judge partial blocking against it
        lo_fires = s_lo > params.threshold
        hi_fires = s_hi > params.threshold_high
        if ev is not None:
            self._inside(params, ev, bucket, total, failing)
        elif self.seen < params.warmup:
            self.s_lo = self.s_hi = 0.0
            self._pend(bucket, last, total, failing)
            self._learn(params)
        elif lo_fires or hi_fires:
            if hi_fires and (s_hi >= s_lo or not lo_fires):
                run = (0, 0) if self.hi_start == bucket else (self.hi_n, self.hi_f)
                self._onset(params, self.hi_start, self.hi_prev, s_hi, p0, run)
            else:
                run = (0, 0) if self.lo_start == bucket else (self.lo_n, self.lo_f)
                self._onset(params, self.lo_start, self.lo_prev, s_lo, p0, run)
            assert self.ev is not None
            self.pend_n = self.pend_f = self.pend_k = 0
            self.pend_first = self.recent_fail = _NONE
            self._inside(params, self.ev, bucket, total, failing)
        else:
            self._pend(bucket, last, total, failing)
            if (s_lo == 0.0 and s_hi == 0.0) or self.pend_k >= params.max_pending:
                self._learn(params)
        self._runs(bucket, total, failing)
        self.last = bucket

    def _runs(self, bucket: int, total: int, failing: int) -> None:
        """Count ``bucket`` into each onset sum's run (from where the sum left zero)."""
        if self.s_lo <= 0.0:
            self.lo_n = self.lo_f = 0
        elif self.lo_start == bucket:
            self.lo_n, self.lo_f = total, failing
        else:
            self.lo_n += total
            self.lo_f += failing
        if self.s_hi <= 0.0:
            self.hi_n = self.hi_f = 0
        elif self.hi_start == bucket:
            self.hi_n, self.hi_f = total, failing
        else:
            self.hi_n += total
            self.hi_f += failing

    def _pend(self, bucket: int, last: int, total: int, failing: int) -> None:
        """Hold one bucket back from the background while an onset run may be under way."""
        self.pend_n += total
        self.pend_f += failing
        self.pend_k += 1
        if failing and 2 * failing >= total and self.pend_first == _NONE:  # mostly failing
            self.pend_first, self.pend_prev = bucket, last

    def _learn(self, params: DetectorParams) -> None:
        """Move the pending buckets (a run that came to nothing) into the background."""
        if self.pend_first != _NONE:
            self.recent_fail, self.recent_prev = self.pend_first, self.pend_prev
        self.pend_first = _NONE
        f = params.forget**self.pend_k
        self.a = self.a * f + self.pend_f
        self.b = self.b * f + (self.pend_n - self.pend_f)
        self.seen += self.pend_n
        self.pend_n = self.pend_f = self.pend_k = 0

    def _onset(
        self,
        params: DetectorParams,
        start: int,
        prev: int,
        llr: float,
        p0: float,
        run: tuple[int, int],
    ) -> None:
        """Open an event (or reopen the last one when it ended less than ``merge_gap`` ago).

        With ``backfill``, a mostly failing bucket less than ``backfill`` buckets before ``start``
        (in the onset run still pending, or in the last run learned as background) moves the start
        back to it: an episodic onset (fail, work, fail) starts at its first failure, not its
        second."""
        if params.backfill:
            pending = self.pend_first != _NONE
            first = self.pend_first if pending else self.recent_fail
            before = self.pend_prev if pending else self.recent_prev
            if first != _NONE and 0 < start - first <= params.backfill:
                start, prev = first, before
        self.recent_fail = _NONE
        closed = self.closed
        if closed and closed[-1][6] and start - closed[-1][2] <= params.merge_gap:
            c = closed.pop()
            gap = start - c[2]
            self.ev = _open(c[0], c[1], max(llr, c[5]), p0)
            self.ev[_LOW_RUNS] = 1
            self.ev[_LOW_LONGEST] = gap
            self.ev[_REOPENED] = True
            self.ev[_N], self.ev[_F] = c[7] + run[0], c[8] + run[1]
        else:
            self.ev = _open(start, prev, llr, p0)
            self.ev[_N], self.ev[_F] = run  # the onset run's, before the bucket that fired

    def _inside(
        self, params: DetectorParams, ev: list[Any], bucket: int, total: int, failing: int
    ) -> None:
        """One bucket of an open event: rate, working runs, the reverse CUSUM, split and end."""
        ev[_LLR] = max(ev[_LLR], self.s_lo, self.s_hi)
        n = ev[_N] + total
        f = ev[_F] + failing
        ev[_N], ev[_F] = n, f
        ev[_MEASURED] += 1
        p0 = ev[_P0]
        q = (f + 0.5) / (n + 1.0)
        q = min(max(q, p0 + 0.1 * (1.0 - p0)), 0.999)
        c = failing * _LOG(p0 / q) + (total - failing) * _LOG((1.0 - p0) / (1.0 - q))
        rev = ev[_REV] + c
        if rev <= 0.0:
            rev = 0.0
            ev[_REV_COUNT] = 0
        else:
            if ev[_REV] == 0.0:
                ev[_REV_START], ev[_REV_PREV] = bucket, self.last
            ev[_REV_COUNT] += 1
        ev[_REV] = rev
        if rev > params.low_llr:  # a working spell
            if ev[_LOW_START] == _NONE:
                ev[_LOW_START] = ev[_REV_START]
            ev[_HIGH_START] = _NONE
        elif rev == 0.0:
            if ev[_LOW_START] != _NONE:  # the spell is over
                ev[_LOW_RUNS] += 1
                ev[_LOW_BUCKETS] += bucket - ev[_LOW_START]
                ev[_LOW_LONGEST] = max(ev[_LOW_LONGEST], bucket - ev[_LOW_START])
                ev[_LOW_START] = _NONE
            if ev[_HIGH_START] == _NONE:
                ev[_HIGH_START], ev[_HIGH_PREV] = bucket, self.last
                ev[_HIGH_N] = ev[_HIGH_F] = 0
        if ev[_HIGH_START] != _NONE:
            ev[_HIGH_N] += total
            ev[_HIGH_F] += failing
        episodic = _episodic(params, ev, bucket)
        if rev > params.end_threshold and ev[_REV_COUNT] >= params.end_hold:
            self._close(ev, ev[_REV_START], ev[_REV_PREV], episodic, True)
        elif (
            episodic
            and ev[_HIGH_START] != _NONE
            and bucket - ev[_HIGH_START] + 1 >= params.split_run
            and _level_change(ev) > params.split_llr
        ):
            start, prev = ev[_HIGH_START], ev[_HIGH_PREV]
            self._close(ev, start, prev, True, False)
            self.ev = _open(start, prev, ev[_LLR], p0)
            self.ev[_N], self.ev[_F] = ev[_HIGH_N], ev[_HIGH_F]

    def _close(
        self, ev: list[Any], end: int, end_before: int, episodic: bool, mergeable: bool
    ) -> None:
        """Close the open event and restart the onset sums."""
        pattern = "episodic" if episodic else "continuous"
        closed = [
            ev[_START],
            ev[_START_AFTER],
            end,
            end_before,
            pattern,
            ev[_LLR],
            mergeable,
            ev[_N],
            ev[_F],
        ]
        self.closed.append(closed)
        self.ev = None
        self.s_lo = self.s_hi = 0.0

    def needs_from(self, params: DetectorParams, horizon: int) -> int:
        """The earliest bucket an event of this series could start at once fed the buckets from
        ``horizon`` on: where an onset run under way began (a sum above 0), the open event's
        start, a pending or recent failing bucket a start may be moved back to (``backfill``), a
        closed event that may reopen (``merge_gap``); ``horizon`` when there is none before it."""
        first = horizon
        if self.s_lo > 0.0 and self.lo_start != _NONE:
            first = min(first, self.lo_start)
        if self.s_hi > 0.0 and self.hi_start != _NONE:
            first = min(first, self.hi_start)
        if self.ev is not None:
            first = min(first, self.ev[_START])
        for mark in (self.pend_first, self.recent_fail):
            if mark != _NONE and mark >= first - params.backfill:
                first = min(first, mark)
        reach = params.merge_gap + params.backfill + 1
        for closed in self.closed:
            if closed[2] + reach >= first:
                first = min(first, closed[0])
        return first

    def trim(self, params: DetectorParams) -> None:
        """Keep at most ``max_closed`` closed events (the newest)."""
        if len(self.closed) > params.max_closed:
            del self.closed[: len(self.closed) - params.max_closed]

    def events(self, params: DetectorParams) -> list[Closed]:
        """Closed events, then the open one (end None, end_before its last bucket)."""
        out = [list(c) for c in self.closed]
        ev = self.ev
        if ev is not None:
            pattern = "episodic" if _episodic(params, ev, self.last) else "continuous"
            out.append(
                [
                    ev[_START],
                    ev[_START_AFTER],
                    None,
                    self.last,
                    pattern,
                    ev[_LLR],
                    False,
                    ev[_N],
                    ev[_F],
                ]
            )
        return out


# The open event is a flat list (cheap to copy and to dump); these are its fields.
(_START, _START_AFTER, _LLR, _P0, _N, _F, _MEASURED, _REV, _REV_START, _REV_PREV, _REV_COUNT,
 _LOW_START, _LOW_RUNS, _LOW_BUCKETS, _LOW_LONGEST, _HIGH_START, _HIGH_PREV,
 _REOPENED, _HIGH_N, _HIGH_F) = range(20)  # fmt: skip


def _open(start: int, start_after: int, llr: float, p0: float) -> list[Any]:
    ev: list[Any] = [start, start_after, llr, p0, 0, 0, 0, 0.0, _NONE, _NONE, 0,
                     _NONE, 0, 0, 0, _NONE, _NONE, False, 0, 0]  # fmt: skip
    return ev


def _episodic(params: DetectorParams, ev: list[Any], bucket: int) -> bool:
    """Whether the open event works some of the time (reopened, or working spells)."""
    span = max(bucket - ev[_START] + 1, 1)
    return bool(ev[_REOPENED]) or (
        ev[_LOW_RUNS] >= 1 and ev[_LOW_BUCKETS] >= params.episodic_share * span
    )


def _ll(n: int, f: int) -> float:
    """The binomial log-likelihood of ``f`` of ``n`` at its own rate."""
    if n == 0 or f == 0 or f == n:
        return 0.0
    p = f / n
    return f * _LOG(p) + (n - f) * _LOG(1.0 - p)


def _level_change(ev: list[Any]) -> float:
    """How much likelier the latest run fails at a higher rate than the event before it (LLR)."""
    n2, f2 = ev[_HIGH_N], ev[_HIGH_F]
    n1, f1 = ev[_N] - n2, ev[_F] - f2
    if n1 == 0 or n2 == 0 or f2 * n1 <= f1 * n2:
        return 0.0
    return _ll(n1, f1) + _ll(n2, f2) - _ll(n1 + n2, f1 + f2)
