"""OONI's production event detector (ooni/data ``oonipipeline/analysis/detector.py``), the baseline.

Used only by ``benchmarks/event_detection.py`` to compare. Rewritten here, same algorithm and
defaults: a two-sided CUSUM (Basseville 1993, §2.2.5) on the hourly median of a 0/1 blocking
signal, with fixed means μ0 = 0 (OK) and μ1 = 0.7 (blocked), v = μ1 - μ0, threshold
h = edd · v / 2 with edd = 20 (h = 7), and:

- state "unk" at first: both sums run and the first crossing sets the state silently;
- in "ok" only ``s_pos = max(0, s_pos + (y - μ0) - v/2)`` runs; above h → a POS change (to "blk");
- in "blk" only ``s_neg = max(0, s_neg - (y - μ1) - v/2)`` runs; above h → a NEG change (to "ok");
- a change repeating the last one is not emitted (the sums reset);
- buckets with weight 0 are skipped; after more than 24 h of silence both sums decay by
  ``0.5 ** (gap_hours / 48)``.

The median of a bucket of 0/1 measurements is 1 when most failed, 0.5 on a tie, else 0.
"""

from __future__ import annotations

from dataclasses import dataclass

POS = 1
NEG = -1
NO = 0


def median_blocked(total: int, failing: int) -> float:
    """The median of ``total`` 0/1 values of which ``failing`` are 1."""
    if 2 * failing > total:
        return 1.0
    return 0.5 if 2 * failing == total else 0.0


@dataclass
class OoniCusum:
    """One series' detector; :meth:`step` returns POS, NEG or NO."""

    mu_0: float = 0.0
    mu_1: float = 0.7
    edd: int = 20
    gap_halflife: float = 48.0  # hours
    s_pos: float = 0.0
    s_neg: float = 0.0
    state: str = "unk"
    last_change: int = NO
    last_hours: float | None = None

    @property
    def h(self) -> float:
        """The threshold."""
        return self.edd * (self.mu_1 - self.mu_0) / 2.0

    def step(self, hours: float, y: float, weight: int) -> int:
        """Feed one bucket (its time in hours, median y, measurement count)."""
        if weight == 0:
            return NO
        if self.last_hours is not None:
            gap = hours - self.last_hours
            if gap > 24:
                decay = 0.5 ** (gap / self.gap_halflife)
                self.s_pos *= decay
                self.s_neg *= decay
        self.last_hours = hours
        v = self.mu_1 - self.mu_0
        h = self.h
        z_pos = y - self.mu_0
        z_neg = y - self.mu_1
        change = NO
        if self.state == "unk":
            self.s_pos = max(0.0, self.s_pos + z_pos - v / 2.0)
            self.s_neg = max(0.0, self.s_neg - z_neg - v / 2.0)
            if self.s_pos > h:
                self.state = "blk"
                self.s_pos = self.s_neg = 0.0
            elif self.s_neg > h:
                self.state = "ok"
                self.s_pos = self.s_neg = 0.0
            return NO
        if self.state == "ok":
            self.s_pos = max(0.0, self.s_pos + z_pos - v / 2.0)
            self.s_neg = 0.0
            if self.s_pos > h:
                if self.last_change != POS:
                    change = POS
                else:
                    self.s_pos = self.s_neg = 0.0
        else:
            self.s_neg = max(0.0, self.s_neg - z_neg - v / 2.0)
            self.s_pos = 0.0
            if self.s_neg > h:
                if self.last_change != NEG:
                    change = NEG
                else:
                    self.s_pos = self.s_neg = 0.0
        if change != NO:
            self.last_change = change
            self.state = "blk" if change == POS else "ok"
            self.s_pos = self.s_neg = 0.0
        return change
