"""How the helper names clients in its logs: never by address in production mode.

A helper's log may be read by more people than its operator, and the addresses in it are those of
people measuring censorship from inside censoring networks. In production mode a client is logged
as ``c-`` and 8 hex digits of a keyed BLAKE2 hash of its address; the key is random per process,
so the same client has the same name within one run (its lines can be followed) and names cannot
be reversed by hashing candidate addresses, nor linked across restarts. In lab mode addresses are
logged as they are (they are lab addresses, and the lab's tests read the logs).
"""

from __future__ import annotations

import hashlib
import logging
import os

logger = logging.getLogger("msgwatch.helper")


class ClientNames:
    """``name(address)``: what the logs call a client."""

    def __init__(self, reveal: bool, key: bytes | None = None) -> None:
        self.reveal = reveal
        self._key = key if key is not None else os.urandom(16)

    def name(self, address: str) -> str:
        if self.reveal:
            return address
        digest = hashlib.blake2b(address.encode(), key=self._key, digest_size=4).hexdigest()
        return f"c-{digest}"
