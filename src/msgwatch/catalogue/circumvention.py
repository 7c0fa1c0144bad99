"""The catalogue's circumvention entries: Tor's directory authorities and Tor Browser's default
obfs4 bridges (``data/circumvention.toml``), each with its source and the date it was read.

:func:`load` validates the file (pydantic, unknown keys refused);
:func:`msgwatch.circumvention.catalogue.entries` turns it into
:class:`~msgwatch.circumvention.model.Entry` objects (there, not here: the catalogue is below the
probe side and imports nothing of it): a vanilla ``tor`` bootstrap (tor's built-in authorities),
one ``tor_reach`` entry whose targets are every authority's OR and directory ports, and one
``obfs4`` entry per bridge (its bridge line). These are real endpoints used by people in the
field: no test connects to them, and the probe's fence refuses them outside a real run. User-supplied VPN and
proxy endpoints never come from here (``--circumvention FILE``).
"""

from __future__ import annotations

import ipaddress
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

_FINGERPRINT = r"^[0-9A-F]{40}$"
_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


IP = Annotated[str, AfterValidator(_ip)]
Port = Annotated[int, Field(ge=1, le=65535)]
Fingerprint = Annotated[str, Field(pattern=_FINGERPRINT)]
Source = Annotated[str, Field(min_length=8, max_length=400, pattern=r"^https://")]
Read = Annotated[str, Field(pattern=_DATE)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,39}$")]


class Authority(BaseModel):
    """A directory authority, as tor's ``auth_dirs.inc`` lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    address: IP
    or_port: Port
    dir_port: Port
    v3ident: Fingerprint
    fingerprint: Fingerprint
    source: Source
    read: Read


class Bridge(BaseModel):
    """A default obfs4 bridge, as Tor Browser's ``pt_config.json`` lists it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    address: IP
    port: Port
    fingerprint: Fingerprint
    cert: Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{60,80}={0,2}$")]
    iat_mode: Annotated[int, Field(ge=0, le=2)]
    source: Source
    read: Read

    def line(self) -> str:
        """The bridge line tor takes (``Bridge obfs4 ...`` without ``Bridge``)."""
        return (
            f"obfs4 {self.address}:{self.port} {self.fingerprint} cert={self.cert} "
            f"iat-mode={self.iat_mode}"
        )


class CircumventionFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Read
    authority: list[Authority] = Field(min_length=1, max_length=64)
    bridge: list[Bridge] = Field(default_factory=list, max_length=256)


class CircumventionError(ValueError):
    """The file does not load (its problems, one per line)."""


def default_path() -> Path:
    return Path(str(resources.files("msgwatch.catalogue") / "data" / "circumvention.toml"))


def load(path: Path | str | None = None) -> CircumventionFile:
    """The validated file (the shipped one when None); raises :class:`CircumventionError`."""
    file = Path(path) if path is not None else default_path()
    try:
        if file.stat().st_size > 1024 * 1024:
            raise CircumventionError(f"{file.name}: larger than 1 MiB")
        raw: dict[str, Any] = tomllib.loads(file.read_text(encoding="utf-8"))
        parsed = CircumventionFile.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{file.name}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:20]
        ]
        raise CircumventionError("\n".join(problems)) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CircumventionError(f"{file.name}: {exc}") from None
    names = [a.name.lower() for a in parsed.authority] + [b.name.lower() for b in parsed.bridge]
    if len(set(names)) != len(names):
        raise CircumventionError(f"{file.name}: names are not unique")
    return parsed
