"""The installation's identity: a random probe id that is never sent, and the keys made from it.

Rules (the spool's rule 4; docs/spool.md):

- The probe id (``STATE/probe-id``) is 32 random hex digits made once, derived from nothing about
  the person or the machine; it is never sent and never written into a measurement. A damaged
  file is replaced by a new id; two first runs at once agree on one (the first link wins).
- An idempotency key is ``<network tag>.<32 random hex>`` (:meth:`ProbeIdentity.new_key`): the
  tag is the first 16 hex digits of HMAC-SHA256(probe id, ``"<probe_cc>/<probe_asn>"``) of the
  measurement, the same for every measurement this installation makes on one network and
  unrelated across networks. So a collector can tell one busy probe on a network from many probes
  there, but cannot link an installation across the networks it is carried to, nor recover the
  probe id. (Versions before this one sent ``<probe-id>.<uuid4 hex>``, linkable everywhere; their
  pending files keep their names and are sent as they are.)
- Every key, old or new, matches :data:`KEY_RE`, the collector's rule (``check_idempotency_key``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from msgwatch.durable import fsync_dir, read_bounded, temporary_name, write_new

KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""The collector's rule for an idempotency key (``check_idempotency_key``)."""
PROBE_ID_RE = re.compile(r"[0-9a-f]{32}")


class ProbeIdentity:
    """The probe id of one state directory, and the network tags and keys derived from it."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "probe-id"

    def probe_id(self) -> str:
        """The installation's id, made on first use (a damaged file is replaced by a new id)."""
        current = self.read()
        if current is not None:
            return current
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = secrets.token_hex(16)
        tmp = temporary_name(self.path)
        write_new(tmp, (fresh + "\n").encode("ascii"))  # removed again if it fails
        try:
            if self.path.exists():  # damaged: replace it
                os.replace(tmp, self.path)
            else:
                with contextlib.suppress(FileExistsError):  # two first runs: one id wins
                    os.link(tmp, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(self.state_dir)
        winner = self.read()
        return winner if winner is not None else fresh

    def read(self) -> str | None:
        """The probe id when there is a valid one; never makes one."""
        try:
            data = read_bounded(self.path, 256)
        except OSError:
            return None
        text = (data or b"").decode("ascii", "replace").strip()
        return text if PROBE_ID_RE.fullmatch(text) else None

    def network_tag(self, measurement: Mapping[str, Any]) -> str:
        """16 hex digits naming (this installation, the measurement's network)."""
        cc, asn = measurement.get("probe_cc"), measurement.get("probe_asn")
        network = f"{cc if isinstance(cc, str) else 'ZZ'}/{asn if isinstance(asn, str) else 'AS0'}"
        mac = hmac.new(bytes.fromhex(self.probe_id()), network.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()[:16]

    def new_key(self, measurement: Mapping[str, Any]) -> str:
        """A fresh idempotency key: the network tag, then 32 random hex digits."""
        return f"{self.network_tag(measurement)}.{secrets.token_hex(16)}"
