"""The catalogue's circumvention entries load, each with a source and the date it was read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msgwatch.catalogue import load_catalogue
from msgwatch.catalogue.circumvention import (
    Authority,
    Bridge,
    CircumventionError,
    default_path,
    load,
)
from msgwatch.circumvention import config, registry
from msgwatch.circumvention.catalogue import entries, shipped
from msgwatch.circumvention.registry import MODULES


def test_the_data_loads_with_sources_and_dates() -> None:
    data = load()
    assert len(data.authority) == 9 and len(data.bridge) >= 1
    items: list[Authority | Bridge] = [*data.authority, *data.bridge]
    for item in items:
        assert item.source.startswith("https://")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", item.read)


def test_entries_are_typed_and_unique() -> None:
    found = entries()
    assert [e.type for e in found[:2]] == ["tor", "tor_reach"]
    assert {e.type for e in found[2:]} == {"obfs4"}
    assert len({e.name for e in found}) == len(found)
    for entry in found:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", entry.name)
        assert " read 20" in entry.source and not entry.private
        assert entry.type in MODULES
    vanilla, reach = found[0], found[1]
    assert vanilla.name == "tor" and vanilla.params == {}  # tor's built-in authorities
    targets = reach.params["targets"]
    assert len(targets) == 2 * len(load().authority)
    moria = [t for t in targets if t["name"] == "moria1"]
    assert {(t["address"], t["port"], t["protocol"]) for t in moria} == {
        ("128.31.0.39", 9101, "or_port_dirauth"), ("128.31.0.39", 9131, "dir_port")}  # fmt: skip
    bridge = next(e for e in found if e.type == "obfs4")
    assert set(bridge.params) == {"bridge"}
    assert bridge.params["bridge"].startswith(f"obfs4 {bridge.address}:{bridge.port} ")
    assert shipped() == tuple(found)


def test_every_entry_passes_its_transport_check() -> None:
    """The checks a run makes (config.check with each type's real check_params): b19d735's
    entries failed every one ("unknown params: dir_port, ...", "targets: ..."), so the catalogue
    was never tested."""
    for entry in entries():
        assert registry.module(entry.type).check_params(entry) == [], entry.name
    assert config.check(entries()) == entries()


def test_a_bridge_tor_would_refuse_fails_the_check(tmp_path: Path) -> None:
    """A line the file's schema takes but tor's check does not (a 64-character cert) is a
    problem of that entry, named."""
    text = default_path().read_text()
    cert = load().bridge[0].cert
    path = tmp_path / "circumvention.toml"
    path.write_text(text.replace(cert, cert[:64], 1))
    with pytest.raises(config.ConfigError) as info:
        config.check(entries(path))
    assert "('default-obfs4-1'): params: bridge" in str(info.value)


def test_the_service_catalogue_ignores_the_file() -> None:
    assert "circumvention" not in {s.id for s in load_catalogue().services}


@pytest.mark.parametrize(
    "text",
    [
        "",
        'version = "2026-12-03"\n[[authority]]\nname = "x"\n',
        'version = "2026-12-03"\n[[authority]]\nname = "x"\naddress = "not-an-ip"\nor_port = 1\n'
        'dir_port = 2\nv3ident = "' + "A" * 40 + '"\nfingerprint = "' + "B" * 40 + '"\n'
        'source = "https://example.org/x"\nread = "2026-12-03"\n',
        "[[[ not toml",
        'version = "2026-12-03"\nextra = 1\n',
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path: Path, text: str) -> None:
    path = tmp_path / "circumvention.toml"
    path.write_text(text)
    with pytest.raises(CircumventionError) as info:
        load(path)
    assert "circumvention.toml" in str(info.value)
