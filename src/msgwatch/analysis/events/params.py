"""The detector's parameters: one frozen object, every knob with its default (docs/method/events.md).

Rules:

- Buckets are counted in bucket numbers (``floor(epoch / bucket_seconds)``); every length below is in buckets.
- Thresholds are log-likelihood ratios (natural log) of counts, so they do not depend on the bucket size.
- Changing a default changes what the detector finds: bump ``DETECTOR_VERSION`` in ``detect.py`` with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorParams:
    """The detector's knobs (defaults tuned with ``benchmarks/event_detection.py``)."""

    bucket_seconds: int = 3600
    prior_rate: float = 0.05  # the background failure rate before a series has history
    prior_weight: float = 20.0  # how many measurements that prior is worth
    forget: float = (
        0.998  # per measured bucket: the background's memory (≈ 1 / (1 - forget) buckets)
    )
    warmup: int = 60  # measurements a series is only learned from before onsets are judged
    warmup_partial: int = (
        200  # measurements before the partial-blocking sum is judged (it needs a known rate)
    )
    max_pending: int = 48  # buckets of an onset run held back from the background at most
    margin_sd: float = 1.5  # the background used is its estimate plus this many standard deviations
    min_rate: float = 0.002  # floor of the background rate
    max_rate: float = 0.5  # ceiling of the background rate
    shift_low: float = 0.3  # alternative 1: background + this share of the working rest fails
    shift_high: float = 0.85  # alternative 2 (fast for full blocking)
    threshold: float = 14.0  # onset: the partial-blocking sum above this opens an event
    threshold_high: float = 16.5  # onset: the full-blocking sum above this (larger steps)
    end_threshold: float = 8.0  # end: the reverse CUSUM above this (and held) closes it
    end_hold: int = 1  # measured buckets the recovered run must span before the end is called
    low_llr: float = (
        2.0  # a bucket inside an event this much more likely background than event is "working"
    )
    merge_gap: int = 72  # a new onset this soon after an end reopens the event (episodic)
    split_run: int = (
        24  # buckets failing without a working one that turn an episodic event continuous
    )
    split_llr: float = 20.0  # how clearly the rate must rise for that split
    episodic_share: float = (
        0.15  # working buckets inside (share of measured) that make an event episodic
    )
    gap_grace: int = 24  # empty buckets tolerated before the CUSUM sums decay
    gap_halflife: float = 48.0  # empty buckets after which the sums halve
    start_tolerance: int = 3  # country events: network onsets this close cluster together
    max_closed: int = 1000  # closed events kept per series in the state (the oldest go first)
    evidence_inside: int = 20  # verdict references listed inside an event
    backfill: int = (
        0  # an onset takes the start of a mostly failing run learned this soon before (0: off)
    )

    @classmethod
    def clean(cls, bucket_seconds: int) -> DetectorParams:
        """Knobs for short, clean series (the lab: no background failures, 1–2 measurements a
        bucket, phases of a few buckets), where the defaults would wait for more evidence than a
        whole phase holds. The background's memory, margin and warm-up stay those of detector 1.3 (a
        phase is too short for 1.4's long memory to matter; the lab's behaviour is unchanged)."""
        return cls(
            bucket_seconds=bucket_seconds, prior_weight=4.0, forget=0.99, warmup=0,
            warmup_partial=0, margin_sd=1.0, threshold=3.0,
            threshold_high=3.0, end_threshold=2.5,
            low_llr=1.0, merge_gap=3, split_run=3, split_llr=1.0, backfill=8,
        )  # fmt: skip
