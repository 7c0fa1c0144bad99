"""Loading and validating a catalogue directory.

Errors name the file, the entry and the problem, e.g.::

    whatsapp.toml: functions.voice.endpoints[2] (relay-3478): port: must be at most 65535

A catalogue is loaded whole or not at all: :func:`load_catalogue` raises :class:`CatalogueError`
listing every problem found in every file, so that one run of ``msgwatch catalogue validate`` shows
them all.
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from msgwatch.catalogue.schema import FUNCTIONS, Endpoint, Index, Network, ServiceFile, Source

MAX_FILE_BYTES = 1 << 20
"""A service file larger than this is refused (a catalogue file is hostile input too)."""


class CatalogueError(Exception):
    """One or more catalogue files are invalid. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class FunctionTargets:
    function: str
    mode: str
    endpoints: tuple[Endpoint, ...]
    note: str = ""
    coverage: str = "full"
    call_ports: tuple[int, ...] = ()
    call_ports_source: str | None = None


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    path: str
    operator: str
    note: str
    successor: str | None
    retired: str | None
    sources: tuple[Source, ...]
    networks: tuple[Network, ...]
    functions: tuple[FunctionTargets, ...]
    trust_roots: str | None = None
    """Absolute path of the service's extra root CAs (PEM), if it has its own."""

    def function(self, name: str) -> FunctionTargets | None:
        return next((f for f in self.functions if f.function == name), None)


@dataclass(frozen=True)
class Catalogue:
    version: str
    path: str
    services: tuple[Service, ...] = field(default=())

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)

    def select(self, ids: list[str] | None) -> list[Service]:
        """The services named in ``ids`` (all when None); unknown ids raise ``KeyError``."""
        if not ids:
            return list(self.services)
        unknown = [i for i in ids if self.service(i) is None]
        if unknown:
            raise KeyError(", ".join(unknown))
        return [s for s in self.services if s.id in ids]


def default_catalogue_path() -> Path:
    return Path(str(resources.files("msgwatch.catalogue") / "data"))


def _locate(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """Turn a pydantic error location into ``functions.voice.endpoints[2] (relay-3478): port``."""
    parts: list[str] = []
    node: Any = raw
    for item in error["loc"]:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("id"), str):
                    label += f" ({node['id']})"
            else:
                node = None
            if parts:
                parts[-1] += label
            else:
                parts.append(label)
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def _format_errors(name: str, exc: ValidationError, raw: dict[str, Any]) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        where = _locate(dict(error), raw)
        yield f"{name}: {where}: {message}" if where else f"{name}: {message}"


def _read_toml(path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _service(path: Path, parsed: ServiceFile) -> Service:
    functions = tuple(
        FunctionTargets(
            name,
            spec.mode,
            tuple(spec.expand()),
            spec.note,
            spec.coverage,
            tuple(spec.call_ports),
            spec.call_ports_source,
        )
        for name in FUNCTIONS
        if (spec := parsed.functions.get(name)) is not None  # type: ignore[call-overload]
    )
    return Service(
        id=parsed.id,
        name=parsed.name,
        path=str(path),
        operator=parsed.operator,
        note=parsed.note,
        successor=parsed.successor,
        retired=parsed.retired.isoformat() if parsed.retired else None,
        sources=tuple(parsed.sources),
        networks=tuple(parsed.networks),
        functions=functions,
        trust_roots=str(path.parent / parsed.trust_roots) if parsed.trust_roots else None,
    )


def _check_roots(path: str) -> str | None:
    """Why the PEM file at ``path`` cannot serve as trust roots, or None."""
    try:
        ssl.create_default_context(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        return f"trust_roots: {Path(path).name}: {exc}"
    return None


NOT_SERVICES = frozenset({"index.toml", "circumvention.toml"})
"""Files of the catalogue's directory that are not services (``circumvention.toml``:
:mod:`msgwatch.catalogue.circumvention`)."""


def load_catalogue(path: Path | str | None = None) -> Catalogue:
    """Load and validate the catalogue in ``path`` (the shipped one when None)."""
    root = Path(path) if path is not None else default_catalogue_path()
    if not root.is_dir():
        raise CatalogueError([f"{root}: not a catalogue directory"])
    problems: list[str] = []
    index: Index | None = None
    index_path = root / "index.toml"
    raw_index: dict[str, Any] = {}
    try:
        raw_index = _read_toml(index_path)
        index = Index.model_validate(raw_index)
    except FileNotFoundError:
        problems.append("index.toml: missing (it gives the catalogue's version)")
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            problems.extend(_format_errors("index.toml", exc, raw_index))
        else:
            problems.append(f"index.toml: {exc}")
    services: list[Service] = []
    seen: dict[str, str] = {}
    for file in sorted(root.glob("*.toml")):
        if file.name in NOT_SERVICES:
            continue
        raw: dict[str, Any] = {}
        try:
            raw = _read_toml(file)
            parsed = ServiceFile.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_format_errors(file.name, exc, raw))
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{file.name}: {exc}")
            continue
        if parsed.id != file.stem:
            problems.append(f"{file.name}: id: {parsed.id!r} does not match the file name")
            continue
        if parsed.id in seen:
            problems.append(f"{file.name}: id: {parsed.id!r} already defined in {seen[parsed.id]}")
            continue
        seen[parsed.id] = file.name
        service = _service(file, parsed)
        if service.trust_roots and (problem := _check_roots(service.trust_roots)):
            problems.append(f"{file.name}: {problem}")
            continue
        services.append(service)
    for service in services:
        if service.successor is not None and service.successor not in seen:
            problems.append(
                f"{Path(service.path).name}: successor: unknown service {service.successor!r}"
            )
    if not services and not problems:
        problems.append(f"{root}: no service files")
    if problems or index is None:
        raise CatalogueError(problems)
    return Catalogue(version=index.version, path=str(root), services=tuple(services))
