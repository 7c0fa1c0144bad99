"""The catalogue's circumvention entries as :class:`~msgwatch.circumvention.model.Entry` objects.

:func:`entries` reads ``msgwatch/catalogue/data/circumvention.toml`` (validated by
:func:`msgwatch.catalogue.circumvention.load`) and gives, in this order:

- ``tor`` (type ``tor``): a vanilla bootstrap with tor's own built-in directory authorities (no
  params: no ``DirAuthority`` line is written, :mod:`.transports.tor`);
- ``tor-reach`` (type ``tor_reach``, OONI's ``tor`` test): one entry whose ``params.targets``
  list every directory authority twice, its OR port (``or_port_dirauth``: TCP, then TLS) and its
  directory port (``dir_port``: TCP, then the consensus), with its fingerprint;
- one ``obfs4`` entry per default bridge, ``params.bridge`` its bridge line (``obfs4 ip:port
  FINGERPRINT cert=... iat-mode=N``, the only param: the fingerprint is in the line).

Every entry passes its transport's ``check_params`` (the session checks them again,
:func:`msgwatch.circumvention.config.check`). Each entry's ``source`` is the URL it was read from
and the date. ``address``/``port`` of ``tor`` and ``tor-reach`` are the first authority's OR port,
for the record only: tor picks its own authorities, ``tor_reach`` tests its targets. The targets
carry no ``source`` of their own (the entry's says where they come from): they are public, not
private bridges to scrub. Real endpoints: no test connects to them (the fence refuses them).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from msgwatch.catalogue.circumvention import Authority, load
from msgwatch.circumvention.model import Entry

VANILLA = "tor"
REACH = "tor-reach"


def _entry_name(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]


def _source(items: list[Authority]) -> str:
    """The authorities' sources and dates, each once."""
    seen = dict.fromkeys(f"{a.source} read {a.read}" for a in items)
    return "; ".join(seen)[:4000]


def targets(authorities: list[Authority]) -> list[dict[str, Any]]:
    """``tor_reach`` targets: each authority's OR port and directory port."""
    out: list[dict[str, Any]] = []
    for a in authorities:
        for protocol, port in (("or_port_dirauth", a.or_port), ("dir_port", a.dir_port)):
            out.append({"name": a.name, "address": a.address, "port": port,
                        "protocol": protocol, "fingerprint": a.fingerprint})  # fmt: skip
    return out


def entries(path: Path | str | None = None) -> list[Entry]:
    """The catalogue's circumvention entries: ``tor``, ``tor-reach``, one ``obfs4`` per bridge."""
    data = load(path)
    first, source = data.authority[0], _source(data.authority)
    out = [
        Entry(name=VANILLA, type="tor", address=first.address, port=first.or_port, params={},
              source=source),
        Entry(name=REACH, type="tor_reach", address=first.address, port=first.or_port,
              params={"targets": targets(data.authority)}, source=source),
    ]  # fmt: skip
    out += [
        Entry(
            name=_entry_name(b.name),
            type="obfs4",
            address=b.address,
            port=b.port,
            params={"bridge": b.line()},
            source=f"{b.source} read {b.read}",
        )
        for b in data.bridge
    ]
    return out


@lru_cache(maxsize=1)
def shipped() -> tuple[Entry, ...]:
    """The shipped file's entries (loaded once)."""
    return tuple(entries())
