"""The catalogue's circumvention entries load, each with a source and the date it was read."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from msgwatch.catalogue import load_catalogue
from msgwatch.catalogue.circumvention import Authority, Bridge, CircumventionError, load
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
    assert {e.type for e in found} == {"tor_reach", "obfs4"}
    assert len({e.name for e in found}) == len(found)
    for entry in found:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", entry.name)
        assert " read 20" in entry.source and not entry.private
        assert entry.type in MODULES
    moria = next(e for e in found if e.name == "dirauth-moria1")
    assert (moria.address, moria.port, moria.params["dir_port"]) == ("128.31.0.39", 9101, 9131)
    bridge = next(e for e in found if e.type == "obfs4")
    assert bridge.params["bridge"].startswith(f"obfs4 {bridge.address}:{bridge.port} ")
    assert shipped() == tuple(found)


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
