"""The shipped catalogue and the schema's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from msgwatch.catalogue import CatalogueError, load_catalogue

REQUIRED = {
    "whatsapp", "skype", "teams", "telegram", "viber", "signal", "facebook_messenger", "facebook",
    "instagram", "youtube", "twitter", "vkontakte", "odnoklassniki", "tiktok", "zoom", "discord",
    "imo",
}  # fmt: skip


def test_every_required_service_is_there_with_sourced_endpoints() -> None:
    catalogue = load_catalogue()
    assert {s.id for s in catalogue.services} >= REQUIRED
    for service in catalogue.services:
        sources = {s.id for s in service.sources}
        assert service.functions, service.id
        for function in service.functions:
            for endpoint in function.endpoints:
                assert endpoint.source in sources and endpoint.checked, (service.id, endpoint.id)


def test_skype_is_retired_into_teams_and_signal_trusts_its_own_root() -> None:
    catalogue = load_catalogue()
    skype, signal = catalogue.service("skype"), catalogue.service("signal")
    assert skype is not None and skype.retired == "2025-05-05" and skype.successor == "teams"
    assert signal is not None and signal.trust_roots is not None
    assert Path(signal.trust_roots).name == "signal-roots.pem"


def test_groups_expand_to_one_endpoint_per_host_and_port() -> None:
    whatsapp = load_catalogue().service("whatsapp")
    assert whatsapp is not None
    text = whatsapp.function("text")
    assert text is not None and text.mode == "any_of"
    ids = [e.id for e in text.endpoints]
    assert len(ids) == len(set(ids)) and len(ids) >= 16


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "index.toml").write_text('schema = 1\nversion = "2026.11.24"\n')
    (tmp_path / "svc.toml").write_text(body)
    return tmp_path


BASE = """schema = 1
id = "svc"
name = "S"
{top}
[[sources]]
id = "doc"
title = "t"
url = "https://example.org/"
checked = 2026-11-24
[functions.web]
[[functions.web.endpoints]]
id = "site"
{endpoint}
source = "{source}"
checked = 2026-11-24
"""


@pytest.mark.parametrize(
    ("top", "endpoint", "source", "expected"),
    [
        ("", 'host = "a.example"\nport = 443\nprotocol = "https"', "nope",
         "svc.toml: functions.web.endpoints[site]: unknown source 'nope'"),
        ("", 'host = "a.example"\nport = 443\nprotocol = "stun"\ntransport = "tcp"\nextra = 1', "doc",
         "svc.toml: functions.web.endpoints[0] (site).extra: Extra inputs are not permitted"),
        ("", 'port = 443\nprotocol = "https"', "doc",
         "svc.toml: functions.web.endpoints[0] (site): an endpoint needs a host, hosts or an address"),
        ("", 'host = "bad host"\nport = 443\nprotocol = "https"', "doc",
         "svc.toml: functions.web.endpoints[0] (site).host: 'bad host' is not a host name"),
        ("", 'address = "999.1.1.1"\nport = 443\nprotocol = "tcp"', "doc",
         "svc.toml: functions.web.endpoints[0] (site).address"),
        ("", 'host = "a.example"\nport = 443\nprotocol = "https"\ntransport = "udp"', "doc",
         "protocol 'https' does not run over 'udp'"),
        ('trust_roots = "x.pem"\ntrust_roots_source = "doc"', 'host = "a.example"\nport = 443\nprotocol = "https"', "doc",
         "svc.toml: trust_roots: x.pem"),
    ],
)  # fmt: skip
def test_errors_name_file_entry_and_problem(
    tmp_path: Path, top: str, endpoint: str, source: str, expected: str
) -> None:
    root = _write(tmp_path, BASE.format(top=top, endpoint=endpoint, source=source))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(root)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_oversized_and_broken_files_are_reported_not_raised(tmp_path: Path) -> None:
    root = _write(tmp_path, "schema = [unclosed")
    (root / "big.toml").write_bytes(b"#" * (2 << 20))
    with pytest.raises(CatalogueError) as info:
        load_catalogue(root)
    problems = "\n".join(info.value.problems)
    assert "svc.toml:" in problems and "big.toml: larger than" in problems
