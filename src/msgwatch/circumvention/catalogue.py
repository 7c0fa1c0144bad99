"""The catalogue's circumvention entries as :class:`~msgwatch.circumvention.model.Entry` objects.

:func:`entries` reads ``msgwatch/catalogue/data/circumvention.toml`` (validated by
:func:`msgwatch.catalogue.circumvention.load`): one ``tor_reach`` entry per directory authority
(its OR port; the directory port and identities in ``params``, OONI's ``or_port_dirauth``) and one
``obfs4`` entry per default bridge (the bridge line in ``params``). Each entry's ``source`` is the
URL it was read from and the date. Real endpoints: no test connects to them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from msgwatch.catalogue.circumvention import load
from msgwatch.circumvention.model import Entry


def _entry_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]


def entries(path: Path | str | None = None) -> list[Entry]:
    """The catalogue's circumvention entries: ``tor_reach`` per authority, ``obfs4`` per bridge."""
    data = load(path)
    out = [
        Entry(
            name=f"dirauth-{_entry_name(a.name)}"[:40],
            type="tor_reach",
            address=a.address,
            port=a.or_port,
            params={
                "dir_port": a.dir_port,
                "v3ident": a.v3ident,
                "fingerprint": a.fingerprint,
                "protocol": "or_port_dirauth",
                "nickname": a.name,
            },
            source=f"{a.source} read {a.read}",
        )
        for a in data.authority
    ]
    out += [
        Entry(
            name=_entry_name(b.name),
            type="obfs4",
            address=b.address,
            port=b.port,
            params={"bridge": b.line(), "fingerprint": b.fingerprint},
            source=f"{b.source} read {b.read}",
        )
        for b in data.bridge
    ]
    return out


@lru_cache(maxsize=1)
def shipped() -> tuple[Entry, ...]:
    """The shipped file's entries (loaded once)."""
    return tuple(entries())
