"""The probe's network: its AS number and country, for the measurement's ``probe_asn``/``probe_cc``.

Rules (issue 9, item 16):

- Values the user gives (``--probe-asn``, ``--probe-cc``) win, each on its own.
- Otherwise they are looked up in local MaxMind-format databases (``--geoip-db``, repeatable, or
  ``$MSGWATCH_GEOIP_DB``, paths separated by ``:``) — a GeoLite2-ASN and a GeoLite2-Country file,
  DB-IP's equivalents, OONI's ``asn.mmdb``/``country.mmdb`` or one file that has both, as the lab
  writes (:mod:`msgwatch.lab.geoip`). They are read with ``maxminddb``, MaxMind's reader. Nothing is
  sent anywhere to find the network.
- The addresses looked up are the probe's own: those given (``--probe-ip``) first, then those the
  run learned — the addresses its STUN servers saw (the public address behind NAT) and its sockets'
  own — public ones first, IPv4 before IPv6. The first address a database knows decides. Private
  addresses are in no database, so a LAN address never decides.
- The address itself is never stored: the measurement's ``probe_ip`` stays ``127.0.0.1`` and the
  address is scrubbed from it like every address of the probe.
- What is not found is unknown: ``AS0`` and ``ZZ``, as OONI records it, and :class:`Network` says
  so (``source``), so that the table can say that the collector will not know the network.
- A database that cannot be opened is an error when the run starts (:func:`open_databases`), not a
  silent ``AS0``; a record of an unexpected shape is ignored.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

DB_VARIABLE = "MSGWATCH_GEOIP_DB"
MAX_DATABASE_BYTES = 512 * 1024 * 1024
"""A larger file is refused (the largest public city databases are well under it)."""


class GeoipError(ValueError):
    """A database that cannot be used: its path and the reason."""


@dataclass(frozen=True)
class Network:
    asn: str = "AS0"
    cc: str = "ZZ"
    name: str = ""
    asn_source: str = "unknown"
    """``given`` (--probe-asn), ``geoip`` (a database) or ``unknown``."""
    cc_source: str = "unknown"

    @property
    def known(self) -> bool:
        return self.asn_source != "unknown" and self.cc_source != "unknown"

    def describe(self) -> str:
        """One line for the terminal, saying what is unknown and how to fix it."""
        parts = []
        for label, value, source in (
            ("AS", self.asn, self.asn_source),
            ("country", self.cc, self.cc_source),
        ):
            how = {"given": "given", "geoip": "from the GeoIP database"}.get(source)
            parts.append(f"{value} ({how})" if how else f"{label} unknown ({value})")
        line = "Network: " + ", ".join(parts) + (f", {self.name}" if self.name else "")
        if not self.known:
            line += (
                "; the collector cannot tell this network from others: give --geoip-db "
                f"(or ${DB_VARIABLE}) or --probe-asn/--probe-cc"
            )
        return line

    def annotations(self) -> dict[str, str]:
        return {"probe_asn_source": self.asn_source, "probe_cc_source": self.cc_source}


def database_paths(given: Sequence[str], environ: dict[str, str] | None = None) -> list[str]:
    """The databases to use: the options' paths, else those of ``$MSGWATCH_GEOIP_DB``."""
    if given:
        return list(given)
    value = (os.environ if environ is None else environ).get(DB_VARIABLE, "")
    return [p for p in value.split(os.pathsep) if p.strip()]


def open_databases(paths: Sequence[str]) -> list[Any]:
    """Open every database (memory-mapped), or raise :class:`GeoipError` naming the one that fails."""
    import maxminddb

    readers = []
    try:
        for path in paths:
            try:
                size = os.stat(path).st_size
                if size > MAX_DATABASE_BYTES:
                    raise GeoipError(f"{path}: larger than {MAX_DATABASE_BYTES} bytes")
                readers.append(maxminddb.open_database(path, maxminddb.MODE_AUTO))
            except (OSError, ValueError) as exc:  # InvalidDatabaseError is a RuntimeError
                raise GeoipError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from exc
            except RuntimeError as exc:
                raise GeoipError(f"{path}: not a MaxMind DB file ({exc})") from exc
    except GeoipError:
        for reader in readers:
            reader.close()
        raise
    return readers


def check_databases(paths: Sequence[str]) -> None:
    """Raise :class:`GeoipError` unless every database opens."""
    for reader in open_databases(paths):
        reader.close()


def candidates(given: Iterable[str], learned: Iterable[str]) -> list[str]:
    """The addresses to look up, in order: given ones, then learned ones, public first, IPv4 first.
    Loopback, link-local, multicast and unspecified addresses are left out."""
    out: list[str] = []
    learned_ips = []
    for text in learned:
        try:
            learned_ips.append(ipaddress.ip_address(text.split("%", 1)[0]))
        except ValueError:
            continue
    ordered = sorted(set(learned_ips), key=lambda ip: (not ip.is_global, ip.version, int(ip)))
    for text in [*given, *(str(ip) for ip in ordered)]:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return out


def _asn(record: dict[str, Any]) -> int | None:
    """GeoLite2-ASN/DB-IP (``autonomous_system_number``) or ipinfo (``asn``: ``AS123``)."""
    value = record.get("autonomous_system_number", record.get("asn"))
    if isinstance(value, str) and value.upper().startswith("AS"):
        value = value[2:]
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 1 << 32:
        return value
    return None


def _cc(record: dict[str, Any]) -> str | None:
    """GeoLite2-Country/DB-IP (``country.iso_code``, else ``registered_country``) or a plain
    ``country_code``/``country`` string."""
    for key in ("country", "registered_country"):
        inner = record.get(key)
        if isinstance(inner, dict) and isinstance(inner.get("iso_code"), str):
            return str(inner["iso_code"])
    for key in ("country_code", "country"):
        if isinstance(record.get(key), str):
            return str(record[key])
    return None


def _name(record: dict[str, Any]) -> str:
    value = record.get("autonomous_system_organization", record.get("as_name", ""))
    return value[:200] if isinstance(value, str) else ""


def lookup(addresses: Sequence[str], readers: Sequence[Any]) -> tuple[int | None, str | None, str]:
    """(ASN, country, AS name) from the first address each is found for; None when not found."""
    asn: int | None = None
    cc: str | None = None
    name = ""
    for address in addresses:
        for reader in readers:
            try:
                found = reader.get(address)
            except (ValueError, RuntimeError):  # an IPv6 address in an IPv4 database, corruption
                continue
            if not isinstance(found, dict):
                continue
            if asn is None and (value := _asn(found)) is not None:
                asn, name = value, _name(found)
            if (
                cc is None
                and (code := _cc(found)) is not None
                and len(code) == 2
                and code.isalpha()
            ):
                cc = code.upper()
            if asn is not None and cc is not None:
                return asn, cc, name
    return asn, cc, name


def resolve(
    *,
    given_asn: str | None,
    given_cc: str | None,
    addresses: Sequence[str],
    databases: Sequence[str],
) -> Network:
    """The run's network (see the module's rules). Raises :class:`GeoipError` for a database that
    cannot be opened."""
    from msgwatch.measurement.envelope import normalise_asn, normalise_cc

    asn: int | None = None
    cc: str | None = None
    name = ""
    wanted = given_asn is None or given_cc is None
    if wanted and databases and addresses:
        readers = open_databases(databases)
        try:
            asn, cc, name = lookup(addresses, readers)
        finally:
            for reader in readers:
                reader.close()
    if given_asn is not None:
        asn_text, asn_source = normalise_asn(given_asn), "given"
    elif asn is not None:
        asn_text, asn_source = f"AS{asn}", "geoip"
    else:
        asn_text, asn_source = "AS0", "unknown"
    if given_cc is not None:
        cc_text, cc_source = normalise_cc(given_cc), "given"
    elif cc is not None:
        cc_text, cc_source = normalise_cc(cc), "geoip"
    else:
        cc_text, cc_source = "ZZ", "unknown"
    if asn_text == "AS0":
        asn_source = "unknown"
    if cc_text == "ZZ":
        cc_source = "unknown"
    return Network(asn_text, cc_text, name if asn_source == "geoip" else "", asn_source, cc_source)


def for_run(
    *,
    given_asn: str | None,
    given_cc: str | None,
    given_addresses: Iterable[str],
    learned: Iterable[str],
    databases: Sequence[str],
) -> Network:
    """The network of a finished run: :func:`resolve` over :func:`candidates`. A database that
    cannot be opened any more (the run checked it at its start) leaves the network unknown rather
    than losing the run's measurements."""
    addresses = candidates(given_addresses, learned)
    try:
        return resolve(
            given_asn=given_asn, given_cc=given_cc, addresses=addresses, databases=databases
        )
    except GeoipError:
        return resolve(given_asn=given_asn, given_cc=given_cc, addresses=addresses, databases=[])


def from_measurement(measurement: dict[str, Any]) -> Network:
    """The network a measurement records (its ``probe_asn``/``probe_cc`` and their sources)."""
    notes = measurement.get("annotations") or {}
    return Network(
        asn=str(measurement.get("probe_asn") or "AS0"),
        cc=str(measurement.get("probe_cc") or "ZZ"),
        name=str(measurement.get("probe_network_name") or ""),
        asn_source=str(notes.get("probe_asn_source") or "unknown"),
        cc_source=str(notes.get("probe_cc_source") or "unknown"),
    )
