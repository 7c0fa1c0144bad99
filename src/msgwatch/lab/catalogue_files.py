"""The lab catalogue as files: the real service files with every address mapped into the lab range.

The probe loads the lab catalogue exactly as it loads the shipped one (``msgwatch run --catalogue
DIR``); only addresses differ. Each service file is read as TOML, and rewritten:

- every literal ``address`` of an endpoint becomes its lab address (``msgwatch.lab.mapping``);
  host names stay (the lab's DNS answers them with lab addresses);
- ``networks`` become the service's lab prefixes;
- any other IP address written in a text (a source's title, a note) becomes ``[address]``;
- a ``trust_roots`` PEM file is copied beside it;
- a ``successor`` that is not in the lab catalogue (a subset of the services) is left out.

Comments are not carried over (they cite real addresses). Groups (``hosts = [...]``, ``ports =
[...]``), endpoint ids and sources are kept, so measurements in the lab name the same endpoints as in
the field. :func:`write_catalogue` then loads what it wrote and checks it against the mapping: the
same endpoints, and no address outside the lab's networks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

from msgwatch.catalogue import Catalogue, load_catalogue
from msgwatch.lab.mapping import LabMapping
from msgwatch.lab.netns import LabError
from msgwatch.lab.plan import LAB_V4, LAB_V6

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_IP_LIKE = re.compile(
    r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w])"  # IPv4
    r"|(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:.])"  # IPv6 candidates
)


def _in_lab(text: str) -> bool:
    address = ipaddress.ip_address(text)
    return address in (LAB_V4 if address.version == 4 else LAB_V6)


def scrub_addresses(text: str) -> str:
    """``text`` with every IP address outside the lab's networks replaced by ``[address]``."""

    def replace(match: re.Match[str]) -> str:
        try:
            return match[0] if _in_lab(match[0]) else "[address]"
        except ValueError:  # not an address after all (a time of day, a version)
            return match[0]

    return _IP_LIKE.sub(replace, text)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    # A JSON string is a TOML basic string, but for DEL, which TOML wants escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_tables(value):
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        name = ".".join(_key(k) for k in [*path, key])
        if isinstance(value, dict):
            lines += ["", f"[{name}]"]
            _emit(lines, [*path, key], value)
        elif _is_tables(value):
            for item in value:
                lines += ["", f"[[{name}]]"]
                _emit(lines, [*path, key], item)


def dumps(data: dict[str, Any]) -> str:
    """TOML for ``data`` (tables, arrays of tables, strings, numbers, booleans, dates, lists)."""
    lines: list[str] = []
    _emit(lines, [], data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_addresses(value)
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def _service_file(path: Path, mapping: LabMapping, service_id: str, out: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        raw: dict[str, Any] = tomllib.load(handle)
    mapped = mapping.catalogue.service(service_id)
    assert mapped is not None
    if mapping.catalogue.service(str(raw.get("successor"))) is None:
        raw.pop("successor", None)  # a successor left out of the lab would not load
    for function in raw.get("functions", {}).values():
        for spec in function.get("endpoints", []):
            if "address" in spec:
                spec["address"] = mapping.addresses[str(ipaddress.ip_address(spec["address"]))]
    raw = _scrub(raw)
    if mapped.successor is None:
        raw.pop("successor", None)  # the successor is not in this (partial) lab catalogue
    raw["networks"] = [
        {"prefix": n.prefix, "source": n.source, "checked": n.checked, "note": n.note}
        for n in mapped.networks
    ]
    if raw.get("trust_roots"):
        shutil.copyfile(path.parent / raw["trust_roots"], out / raw["trust_roots"])
    return raw


def _fingerprint(catalogue: Catalogue) -> list[tuple[str, ...]]:
    # Not the endpoint ids: a group's expanded ids name the address (the mapping's, the real one).
    return sorted(
        (s.id, f.function, e.host or "", e.address or "", str(e.port), e.protocol, e.transport)
        for s in catalogue.services
        for f in s.functions
        for e in f.endpoints
    )


def write_catalogue(mapping: LabMapping, directory: Path) -> Path:
    """Write the lab catalogue of ``mapping`` into ``directory`` and check it; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    catalogue = mapping.catalogue
    index = {"schema": 1, "version": catalogue.version,
             "note": "msgwatch lab catalogue: lab addresses only (198.18.0.0/15, 2001:db8::/32)"}  # fmt: skip
    (directory / "index.toml").write_text(dumps(index))
    for service in catalogue.services:
        source = Path(service.path)
        if not source.is_file():
            raise LabError(f"service {service.id}: its catalogue file {source} is not readable")
        data = _service_file(source, mapping, service.id, directory)
        header = "# Generated by msgwatch.lab: the catalogue mapped into the lab's addresses.\n"
        (directory / f"{service.id}.toml").write_text(header + dumps(data))
    written = load_catalogue(directory)
    if _fingerprint(written) != _fingerprint(catalogue):
        raise LabError(f"the lab catalogue in {directory} does not match the lab mapping")
    outside = sorted(
        {e.address for s in written.services for f in s.functions for e in f.endpoints
         if e.address is not None and not _in_lab(e.address)}
        | {n.prefix for s in written.services for n in s.networks
           if not _in_lab(str(ipaddress.ip_network(n.prefix).network_address))}
    )  # fmt: skip
    if outside:
        raise LabError(f"the lab catalogue names addresses outside the lab: {', '.join(outside)}")
    return directory
