"""Submission: the spool's pending measurements to the collectors, batch by batch.

How it works:

1. Under ``submit.lock``, :meth:`Spool.recover` finishes any interrupted acknowledgement (and
   rotates the ledger when it is due: docs/spool.md, "The ledger"), then the pending files are taken oldest first, read (bounded; a corrupt one goes to ``rejected/``) and put
   in batches of at most ``batch_items`` measurements and ``batch_bytes`` bytes for
   ``POST /api/v1/submit``, each item with its idempotency key (the file's name).
2. A batch goes to the first collector that is not down. A connection failure, a timeout, a 5xx or
   a 429 is retried on the same collector after an exponential backoff with jitter (``Retry-After``
   honoured when the collector sends one, unless it asks for longer than ``max_retry_after``: then
   that collector is given up for this submission). When its tries are spent, or on an answer that
   retrying cannot change (401, 403, 404, a certificate problem, a 200 that is not the collector's
   answer — a captive portal), the collector is marked down and the next one gets the batch. When
   every collector is down, the submission stops: what is left stays pending for the next one.
3. The collector answers item by item. ``stored`` and ``duplicate`` (a retry of something the
   collector already has — the idempotency key makes the retry after a lost response harmless) are
   written to the ledger, ``fsync``ed, and only then unlinked. ``rejected`` moves the file to
   ``rejected/`` with the collector's reason, except for reasons that say "later", not "never"
   (``storage_unavailable``, ``rate_limited``). An item the answer does not mention stays pending.
4. A batch the collector finds too large (``batch_too_large``, ``body_too_large``, 413) is split in
   halves and sent again; a single measurement it finds too large is rejected.

Time is injected: ``sleep(seconds) -> stop?`` waits (and returns True when the caller wants to stop,
e.g. on SIGTERM), ``rng`` draws the jitter, ``now`` stamps the records. Tests pass fakes.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from msgwatch.durable import flocked
from msgwatch.fence import NOT_ALLOWED
from msgwatch.spool.client import DNS_LOOKUP_ERROR, URL, Client, ClientError, parse_url
from msgwatch.spool.spool import Ack, Invalid, PendingItem, Spool, utc_now

SUBMIT_PATH = "/api/v1/submit"
MAX_BATCH_ITEMS = 500
"""The collector's limit per batch."""
MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Well under the collector's 32 MiB, so that one batch is not minutes of upload on a slow link."""
LATER = frozenset({"storage_unavailable", "rate_limited"})
"""Item rejections that mean "try again later"; the item stays pending."""
TOO_LARGE = frozenset({"batch_too_large", "body_too_large"})
NO_RETRY_FAILURES = frozenset({NOT_ALLOWED, DNS_LOOKUP_ERROR})

Sleep = Callable[[float], bool]
"""Wait this many seconds; True means "stop now" (a signal arrived)."""


COLLECTORS_ENV = "MSGWATCH_COLLECTORS"
MAX_TOKEN_BYTES = 4096


def collector_urls(given: Sequence[str], environ: Mapping[str, str] | None = None) -> list[URL]:
    """``--collector`` values in order, else ``$MSGWATCH_COLLECTORS`` (comma-separated); raises
    ``ValueError`` for a URL that is not ``http[s]://host[:port][/base]``."""
    env = os.environ if environ is None else environ
    values = list(given) or env.get(COLLECTORS_ENV, "").split(",")
    urls: list[URL] = []
    for value in values:
        if value.strip():
            url = parse_url(value)
            if url not in urls:
                urls.append(url)
    return urls


def read_token(path: str | os.PathLike[str]) -> str:
    """A bearer token from a file (its first line); raises ``ValueError`` with the reason.

    Like ssh with a private key, a file that anyone but its owner may read or write is refused
    (mode ``& 0o077``): the token would already be everyone's. systemd's ``LoadCredential=``
    gives the service an owner-only copy."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        mode = os.fstat(handle.fileno()).st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            raise ValueError(
                f"{path} is accessible to others (mode {stat.S_IMODE(mode):04o}): a bearer "
                f"token must be private; run chmod 600 {path}"
            )
        data = handle.read(MAX_TOKEN_BYTES + 1)
    if len(data) > MAX_TOKEN_BYTES:
        raise ValueError(f"{path}: larger than a token")
    lines = data.decode("utf-8", "replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(f"{path}: no token on the first line")
    return token


def plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


@dataclass(frozen=True)
class Backoff:
    """Retries of one batch on one collector."""

    base: float = 1.0
    """Seconds before the first retry (before jitter)."""
    factor: float = 2.0
    cap: float = 60.0
    """No wait is longer than this (before ``Retry-After``)."""
    tries: int = 4
    """Requests per collector per batch, the first one included."""
    max_retry_after: float = 300.0
    """A ``Retry-After`` longer than this gives the collector up for this submission."""

    def delay(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number ``retry`` (0-based): "equal jitter", between half and all of
        ``min(cap, base * factor**retry)``, so probes that failed together do not retry together."""
        ceiling = min(self.cap, self.base * self.factor**retry)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None when absent or
    unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass
class CollectorLog:
    url: str
    requests: int = 0
    acknowledged: int = 0
    rejected: int = 0
    state: str = "unused"
    """``unused`` (never needed), ``ok`` (answered), or ``down`` (given up for this submission)."""
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "requests": self.requests,
            "acknowledged": self.acknowledged,
            "rejected": self.rejected,
            "last_error": self.last_error,
        }


@dataclass
class Summary:
    pending: int = 0
    """Pending measurements when the submission started."""
    stored: int = 0
    duplicate: int = 0
    """Acknowledged as already stored (a retry after a lost answer)."""
    rejected: int = 0
    """Refused by a collector, moved to ``rejected/``."""
    invalid: int = 0
    """Unreadable pending files moved to ``rejected/`` before sending."""
    remaining: int = 0
    """Still pending (collectors unreachable, or stopped)."""
    stopped: bool = False
    collectors: list[CollectorLog] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.remaining == 0

    @property
    def error(self) -> str | None:
        if self.ok:
            return None
        if self.stopped:
            return "stopped"
        errors = [f"{c.url}: {c.last_error}" for c in self.collectors if c.last_error]
        return "; ".join(errors) or "no collector answered"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "pending": self.pending,
            "stored": self.stored,
            "duplicate": self.duplicate,
            "rejected": self.rejected,
            "invalid": self.invalid,
            "remaining": self.remaining,
            "stopped": self.stopped,
            "error": self.error,
            "collectors": [c.to_json() for c in self.collectors],
        }


class _Result(Enum):
    DELIVERED = "delivered"
    TOO_LARGE = "too_large"
    FAILED = "failed"


Batch = list[tuple[PendingItem, bytes]]


def _error_code(body: bytes, status: int) -> tuple[str, str]:
    """``(reason, detail)`` from the contract's error body, else ``http_<status>``."""
    try:
        value = json.loads(body)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("error"), str):
        return value["error"][:64], str(value.get("detail") or "")[:300]
    return f"http_{status}", ""


def _results(body: bytes) -> list[dict[str, Any]] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("results"), list):
        return None
    return [r for r in value["results"] if isinstance(r, dict)]


def _body(batch: Batch) -> bytes:
    """The batch request, with each measurement's bytes as spooled (already checked to be JSON)."""
    parts = [
        b'{"idempotency_key":' + json.dumps(item.key).encode() + b',"measurement":' + data + b"}"
        for item, data in batch
    ]
    return b'{"measurements":[' + b",".join(parts) + b"]}"


class _Submitter:
    def __init__(
        self,
        spool: Spool,
        collectors: Sequence[URL],
        client: Client,
        token: str | None,
        backoff: Backoff,
        batch_items: int,
        batch_bytes: int,
        sleep: Sleep,
        rng: random.Random,
        now: Callable[[], float],
    ) -> None:
        self.spool = spool
        self.urls = list(collectors)
        self.client = client
        self.headers = [("Content-Type", "application/json")]
        if token:
            self.headers.append(("Authorization", f"Bearer {token}"))
        self.backoff = backoff
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.sleep = sleep
        self.rng = rng
        self.now = now
        self.summary = Summary(collectors=[CollectorLog(str(u)) for u in self.urls])
        self.state: dict[str, Any] = {}

    def run(self) -> Summary:
        self.spool.recover(self.now())
        self.state = self.spool.read_attempts()
        items = self.spool.pending()
        self.summary.pending = len(items)
        queue = deque(items)
        limit = self.batch_items
        try:
            while queue and not self.summary.stopped:
                batch = self._take(queue, limit)
                if not batch:
                    continue
                result = self._deliver(batch)
                if result is _Result.TOO_LARGE:
                    if len(batch) == 1:
                        item = batch[0][0]
                        self.summary.rejected += self.spool.reject(
                            item.key, "body_too_large", "a collector refused it as too large",
                            self._last_url(), self.now(),
                        )  # fmt: skip
                    else:
                        limit = max(1, len(batch) // 2)
                        queue.extendleft(item for item, _ in reversed(batch))
                elif result is _Result.FAILED:
                    break
                self._save_state()
        finally:
            self.summary.remaining = sum(1 for i in items if i.path.exists())
            self.state["last_submission"] = {
                "time": utc_now(self.now()),
                **{k: v for k, v in self.summary.to_json().items() if k != "collectors"},
            }
            self._save_state()
        return self.summary

    def _take(self, queue: deque[PendingItem], limit: int) -> Batch:
        batch: Batch = []
        size = 0
        while queue and len(batch) < limit:
            item = queue[0]
            if batch and size + item.size > self.batch_bytes:
                break
            queue.popleft()
            data = self.spool.load(item)
            if isinstance(data, Invalid):
                self.summary.invalid += 1
            elif data is not None:
                batch.append((item, data))
                size += len(data)
        return batch

    def _last_url(self) -> str | None:
        used = [c for c in self.summary.collectors if c.requests]
        return used[-1].url if used else None

    def _deliver(self, batch: Batch) -> _Result:
        for url, log in zip(self.urls, self.summary.collectors, strict=True):
            if log.state == "down":
                continue
            result = self._try(url, log, batch)
            if result is not _Result.FAILED:
                log.state = "ok"
                return result
            if self.summary.stopped:
                break
            log.state = "down"
        return _Result.FAILED

    def _try(self, url: URL, log: CollectorLog, batch: Batch) -> _Result:
        body = _body(batch)
        for attempt in range(self.backoff.tries):
            log.requests += 1
            wait: float | None = None
            try:
                response = self.client.request(
                    "POST", url, SUBMIT_PATH, body=body, headers=self.headers
                )
            except ClientError as exc:
                error = exc.failure
                retry = error not in NO_RETRY_FAILURES and not error.startswith("ssl_")
            else:
                if response.status == 200:
                    results = _results(response.body)
                    if results is not None:
                        self._apply(log, batch, results)
                        return _Result.DELIVERED
                    error, retry = "bad_response", False
                else:
                    error, _detail = _error_code(response.body, response.status)
                    if response.status == 429 or response.status >= 500:
                        retry = True
                        wait = retry_after(response.header("Retry-After"), self.now())
                    elif error in TOO_LARGE or response.status == 413:
                        return _Result.TOO_LARGE
                    else:
                        retry = False
            log.last_error = error
            self._note([item for item, _ in batch], f"{error} ({log.url})")
            if not retry or attempt + 1 >= self.backoff.tries:
                break
            delay = self.backoff.delay(attempt, self.rng)
            if wait is not None:
                if wait > self.backoff.max_retry_after:
                    break
                delay = max(delay, wait)
            self._save_state()
            if self.sleep(delay):
                self.summary.stopped = True
                break
        return _Result.FAILED

    def _apply(self, log: CollectorLog, batch: Batch, results: list[dict[str, Any]]) -> None:
        by_key = {r.get("idempotency_key"): r for r in results}
        acks: list[Ack] = []
        for item, _ in batch:
            answer = by_key.get(item.key)
            status = answer.get("status") if answer else None
            uid = answer.get("measurement_uid") if answer else None
            if status in ("stored", "duplicate") and isinstance(uid, str):
                acks.append(Ack(item.key, uid, status, log.url))
            elif answer is not None and status == "rejected":
                error = str(answer.get("error") or "rejected")[:64]
                if error in LATER:
                    self._note([item], f"{error} ({log.url})")
                elif self.spool.reject(
                    item.key, error, str(answer.get("detail") or "")[:300], log.url, self.now()
                ):
                    self.summary.rejected += 1
                    log.rejected += 1
            else:
                self._note([item], f"{'bad_result' if answer else 'no_result'} ({log.url})")
        self.spool.acknowledge(acks, self.now())
        log.acknowledged += len(acks)
        self.summary.stored += sum(1 for a in acks if a.status == "stored")
        self.summary.duplicate += sum(1 for a in acks if a.status == "duplicate")
        self._note([item for item, _ in batch], None)

    def _note(self, items: list[PendingItem], error: str | None) -> None:
        """Count an attempt (``error`` given) or forget acknowledged items (``error`` None)."""
        records: dict[str, Any] = self.state.setdefault("items", {})
        when = utc_now(self.now())
        for item in items:
            if error is None:
                if not item.path.exists():
                    records.pop(item.key, None)
                continue
            record = records.setdefault(item.key, {"attempts": 0})
            record["attempts"] = int(record.get("attempts") or 0) + 1
            record["last_error"] = error
            record["last_attempt"] = when

    def _save_state(self) -> None:
        self.spool.write_attempts(self.state)


def submit(
    spool: Spool,
    collectors: Sequence[URL | str],
    *,
    client: Client | None = None,
    token: str | None = None,
    backoff: Backoff | None = None,
    batch_items: int = MAX_BATCH_ITEMS,
    batch_bytes: int = MAX_BATCH_BYTES,
    sleep: Sleep = plain_sleep,
    rng: random.Random | None = None,
    now: Callable[[], float] = time.time,
) -> Summary:
    """Send every pending measurement to the first collector that takes it; see the module
    docstring. Raises ``OSError`` only when the spool itself cannot be read or written."""
    urls = [parse_url(c) if isinstance(c, str) else c for c in collectors]
    spool.create()
    with flocked(spool.submit_lock_path, wait=True):
        submitter = _Submitter(
            spool,
            urls,
            client or Client(),
            token,
            backoff or Backoff(),
            max(1, min(batch_items, MAX_BATCH_ITEMS)),
            batch_bytes,
            sleep,
            rng or random.Random(),
            now,
        )
        return submitter.run()
