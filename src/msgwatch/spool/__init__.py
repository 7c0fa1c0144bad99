"""The probe's side of submission: an on-disk spool, a collector client, scheduled runs.

- :mod:`msgwatch.spool.spool`: the state directory, ``pending/``, ``rejected/``; every write
  durable before it is relied on. Its parts: :mod:`msgwatch.spool.identity` (the probe id, random
  idempotency keys) and :mod:`msgwatch.spool.ledger` (the bounded ledger of acknowledgements).
- :mod:`msgwatch.spool.client`: HTTP/1.1 (h11) over one blocking socket, behind the network fence.
- :mod:`msgwatch.spool.submit`: batches to ``POST /api/v1/submit``, collectors in order, backoff.
- :mod:`msgwatch.session.schedule`: ``--every`` with jitter, ``run.lock``, a clean stop on signals.

Contract: docs/design/002-collector.md ("Wire protocol", "Spool and scheduled runs"); operator's
guide: docs/spool.md.
"""

from msgwatch.spool.spool import Spool, default_state_dir, resolve_state_dir

__all__ = ["Spool", "default_state_dir", "resolve_state_dir"]
