"""The ``--circumvention FILE``: which tunnels, bridges and proxies a run tests.

The file is TOML or JSON (by its suffix: ``.json`` is JSON, anything else TOML) and holds one
list, ``transport``, of tables with the keys of :class:`~msgwatch.circumvention.model.Entry`::

    [[transport]]
    name = "my-vpn"                  # [a-z0-9][a-z0-9-]{0,39}, unique: the verdict table's row
    type = "wireguard"               # one of model.TYPES
    address = "198.18.4.20"          # an IP literal or a host name
    port = 51820
    protocol = "udp"                 # tcp (default) or udp
    params = { ... }                 # the type's own; checked by its transport module
    source = "user"                  # where the endpoint comes from (default: "user")
    private = true                   # scrub address and params from the measurement

Rules:

- **Bounded.** A file over :data:`MAX_FILE_BYTES`, more than :data:`MAX_ENTRIES` entries, a
  string over :data:`MAX_STRING` characters or params nested deeper than :data:`MAX_DEPTH` (or
  with more than :data:`MAX_PARAM_ITEMS` values) is refused, never read whole into something
  larger.
- **Every problem at once.** :class:`ConfigError` lists every problem found, each naming the
  entry by its index and name (``transport[2] (my-vpn): port: ...``).
- **Params lazily.** An entry's params are checked by its type's module
  (:func:`msgwatch.circumvention.registry.module` ``.check_params``), imported only when an entry
  of that type is present. A module that cannot be imported (not written yet, or broken) is a
  problem of the entries of that type, never of the others'.
- **The catalogue's entries come first**, then the user's; a user's entry with the name of a
  catalogue entry replaces it (:func:`merge`). The catalogue's entries are read by the caller
  (:mod:`msgwatch.circumvention.catalogue`) and held to the same rules here (:func:`check`), so
  this module does not depend on the catalogue's package.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from msgwatch.circumvention import registry
from msgwatch.circumvention.model import TYPES, Entry

MAX_FILE_BYTES = 1_000_000
MAX_ENTRIES = 200
MAX_STRING = 4096
"""Characters in any string of an entry (a bridge line, a path, a key)."""
MAX_DEPTH = 4
"""Nesting of params (tables in tables)."""
MAX_PARAM_ITEMS = 256
"""Values in one entry's params, all levels counted."""
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
HOST = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$")  # fmt: skip
KEYS = frozenset({"name", "type", "address", "port", "protocol", "params", "source", "private"})
REQUIRED = ("name", "type", "address", "port")

CheckParams = Callable[[Entry], list[str]]
"""``check_params(entry) -> problems``: a transport module's own check."""


class ConfigError(Exception):
    """The circumvention file (or the catalogue's entries) cannot be used; ``problems`` lists
    every reason, each naming its entry."""

    def __init__(self, problems: list[str], origin: str = "") -> None:
        self.problems = problems
        self.origin = origin
        head = f"{origin}: " if origin else ""
        super().__init__(head + "; ".join(problems[:20]))


def read_file(path: str | Path) -> list[Any]:
    """The raw ``transport`` list of the file at ``path`` (bounded; TOML or JSON by suffix)."""
    where = str(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"cannot read it: {exc.strerror or exc}"], where) from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError([f"larger than {MAX_FILE_BYTES} bytes"], where)
    try:
        text = data.decode("utf-8")
        parsed: Any = json.loads(text) if where.endswith(".json") else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        kind = "JSON" if where.endswith(".json") else "TOML"
        raise ConfigError([f"not valid {kind}: {str(exc)[:200]}"], where) from exc
    if not isinstance(parsed, dict) or set(parsed) - {"transport"}:
        raise ConfigError(['expected one key, "transport": a list of entries'], where)
    raw = parsed.get("transport", [])
    if not isinstance(raw, list):
        raise ConfigError(['"transport" must be a list of entries'], where)
    return raw


def load(
    path: str | Path, *, check_params: Callable[[str], CheckParams] | None = None
) -> list[Entry]:
    """The entries of the file at ``path``, validated (:func:`parse`)."""
    return parse(read_file(path), origin=str(path), check_params=check_params)


def parse(
    raw: Sequence[Any],
    *,
    origin: str = "",
    default_source: str = "user",
    check_params: Callable[[str], CheckParams] | None = None,
) -> list[Entry]:
    """Validate raw entries (dicts) into :class:`Entry` objects; a :class:`ConfigError` lists
    every problem. ``check_params(type)`` gives a type's params check (default: its transport
    module's, imported lazily; an import failure is a problem of that entry)."""
    if len(raw) > MAX_ENTRIES:
        raise ConfigError([f"{len(raw)} entries, at most {MAX_ENTRIES}"], origin)
    checks = _Checks(check_params)
    problems: list[str] = []
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        label = _label(index, item)
        entry, found = _entry(item, default_source)
        if entry is not None:
            if entry.name in seen:
                found.append(f"name: {entry.name!r} already used by transport[{seen[entry.name]}]")
            else:
                seen[entry.name] = index
            if not found:
                found += checks.problems(entry)
        problems += [f"{label}: {p}" for p in found]
        if entry is not None and not found:
            entries.append(entry)
    if problems:
        raise ConfigError(problems, origin)
    return entries


def check(
    entries: Iterable[Entry],
    *,
    origin: str = "catalogue",
    check_params: Callable[[str], CheckParams] | None = None,
) -> list[Entry]:
    """Entries made elsewhere (the catalogue's) held to the file's rules (:func:`parse`: names,
    addresses, ports, bounds, unique names, each type's ``check_params``); a
    :class:`ConfigError` lists every problem."""
    raw = [dataclasses.asdict(e) for e in entries]
    return parse(raw, origin=origin, default_source=origin, check_params=check_params)


def merge(catalogue: Iterable[Entry], user: Iterable[Entry]) -> list[Entry]:
    """The catalogue's entries then the user's; a user's entry replaces the catalogue's entry of
    the same name (in the catalogue's position)."""
    mine = {e.name: e for e in user}
    out = [mine.pop(e.name, e) for e in catalogue]
    return out + list(mine.values())


def _label(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    if isinstance(name, str) and name:
        return f"transport[{index}] ({name[:40]!r})"
    return f"transport[{index}]"


def _entry(item: Any, default_source: str) -> tuple[Entry | None, list[str]]:
    """The entry made of ``item`` and the problems found (params aside)."""
    if not isinstance(item, dict):
        return None, ["an entry must be a table (an object)"]
    problems = [f"unknown key {k!r}" for k in sorted(map(str, item)) if k not in KEYS][:10]
    problems += [f"{k}: missing" for k in REQUIRED if k not in item]
    if problems:
        return None, problems
    name, kind, address = item["name"], item["type"], item["address"]
    port, protocol = item["port"], item.get("protocol", "tcp")
    source, private = item.get("source", default_source), item.get("private", False)
    params = item.get("params", {})
    if not isinstance(name, str) or not NAME.match(name):
        problems.append("name: must match [a-z0-9][a-z0-9-]{0,39}")
    if not isinstance(kind, str) or kind not in TYPES:
        problems.append(f"type: {str(kind)[:40]!r} is not one of {', '.join(TYPES)}")
    if not isinstance(address, str) or not _address_ok(address):
        problems.append("address: must be an IP address or a host name")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        problems.append("port: must be an integer in 1..65535")
    if protocol not in ("tcp", "udp"):
        problems.append('protocol: must be "tcp" or "udp"')
    if not isinstance(source, str) or len(source) > MAX_STRING:
        problems.append(f"source: must be a string of at most {MAX_STRING} characters")
    if not isinstance(private, bool):
        problems.append("private: must be true or false")
    if not isinstance(params, dict):
        problems.append("params: must be a table (an object)")
    else:
        problems += [f"params: {p}" for p in _bounded(params)]
    if problems:
        return None, problems
    entry = Entry(name=name, type=kind, address=address, port=port, protocol=protocol,
                  params=params, source=source, private=private)  # fmt: skip
    return entry, []


def _address_ok(text: str) -> bool:
    if len(text) > 253:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(HOST.match(text)) and not text.replace(".", "").isdigit()
    return True


def _bounded(params: Mapping[str, Any]) -> list[str]:
    """Problems with the shape of ``params``: too deep, too many values, strings too long, a
    value that is not a JSON/TOML scalar, list or table."""
    count = 0
    problems: list[str] = []

    def walk(value: Any, depth: int, where: str) -> None:
        nonlocal count
        count += 1
        if count > MAX_PARAM_ITEMS or len(problems) >= 5:
            return
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                problems.append(f"{where}: nested deeper than {MAX_DEPTH}")
                return
            for key, item in value.items():
                if len(str(key)) > 100:
                    problems.append(f"{where}: a key longer than 100 characters")
                    return
                walk(item, depth + 1, f"{where}.{key}" if where else str(key))
        elif isinstance(value, list):
            if depth >= MAX_DEPTH:
                problems.append(f"{where}: nested deeper than {MAX_DEPTH}")
                return
            for i, item in enumerate(value):
                walk(item, depth + 1, f"{where}[{i}]")
        elif isinstance(value, str):
            if len(value) > MAX_STRING:
                problems.append(f"{where}: longer than {MAX_STRING} characters")
        elif value is not None and not isinstance(value, bool | int | float):
            problems.append(f"{where}: a {type(value).__name__} is not allowed")

    walk(dict(params), 0, "")
    if count > MAX_PARAM_ITEMS:
        problems.append(f"more than {MAX_PARAM_ITEMS} values")
    return problems


class _Checks:
    """Each type's params check, looked up once per type; a lookup that fails becomes the
    problem of every entry of that type."""

    def __init__(self, lookup: Callable[[str], CheckParams] | None) -> None:
        self._lookup = lookup or _module_check
        self._found: dict[str, CheckParams | str] = {}

    def problems(self, entry: Entry) -> list[str]:
        check = self._found.get(entry.type)
        if check is None:
            try:
                check = self._lookup(entry.type)
            except Exception as exc:  # a module missing or broken: this type's problem only
                check = f"type {entry.type!r} cannot be tested: {type(exc).__name__}: {exc}"[:300]
            self._found[entry.type] = check
        if isinstance(check, str):
            return [check]
        try:
            found = check(entry)
        except Exception as exc:  # a check that crashes on hostile params is a problem too
            return [f"params: could not be checked ({type(exc).__name__})"]
        return [f"params: {p}"[:300] for p in list(found)[:10]]


def _module_check(kind: str) -> CheckParams:
    return registry.module(kind).check_params
