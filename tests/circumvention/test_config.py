"""Loading ``--circumvention FILE``: bounded, validated, every problem named by its entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from msgwatch.circumvention import config
from msgwatch.circumvention.model import Entry


def ok_check(kind: str) -> config.CheckParams:
    return lambda entry: []


def good(**over: Any) -> dict[str, Any]:
    return {"name": "my-vpn", "type": "wireguard", "address": "198.18.4.20", "port": 51820,
            "protocol": "udp", "params": {"key": "x"}, **over}  # fmt: skip


def test_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[[transport]]\nname = "p"\ntype = "socks5"\naddress = "proxy.example"\n'
                    "port = 1080\nprivate = true\n")  # fmt: skip
    (entry,) = config.load(toml, check_params=ok_check)
    assert entry == Entry("p", "socks5", "proxy.example", 1080, "tcp", {}, "user", True)
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"transport": [good()]}))
    (entry,) = config.load(js, check_params=ok_check)
    assert entry.protocol == "udp" and entry.params == {"key": "x"}


def test_every_problem_named_by_entry() -> None:
    raw = [good(), good(), good(name="Bad Name", port=0, type="ipsec", protocol="sctp"),
           "nope", {"name": "x"}, good(name="y", extra=1)]  # fmt: skip
    with pytest.raises(config.ConfigError) as caught:
        config.parse(raw, check_params=ok_check)
    problems = caught.value.problems
    assert "transport[1] ('my-vpn'): name: 'my-vpn' already used by transport[0]" in problems
    assert any(p.startswith("transport[2] ('Bad Name'): name:") for p in problems)
    assert any("port: must be an integer" in p for p in problems)
    assert any("type: 'ipsec' is not one of" in p for p in problems)
    assert any('protocol: must be "tcp" or "udp"' in p for p in problems)
    assert "transport[3]: an entry must be a table (an object)" in problems
    assert "transport[4] ('x'): type: missing" in problems
    assert "transport[5] ('y'): unknown key 'extra'" in problems


def test_bounds(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (config.MAX_FILE_BYTES + 1))
    with pytest.raises(config.ConfigError, match="larger than"):
        config.load(big)
    with pytest.raises(config.ConfigError, match="at most 200"):
        config.parse([good(name=f"e{i}") for i in range(201)], check_params=ok_check)
    deep: dict[str, Any] = {"a": {"b": {"c": {"d": {"e": 1}}}}}
    long = "x" * (config.MAX_STRING + 1)
    many = {"k": list(range(config.MAX_PARAM_ITEMS + 1))}
    for params, words in ((deep, "nested deeper"), ({"s": long}, "longer than"),
                          (many, "more than")):  # fmt: skip
        with pytest.raises(config.ConfigError, match=words):
            config.parse([good(params=params)], check_params=ok_check)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[transport]\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.toml")


def test_missing_module_is_only_its_entries_problem() -> None:
    def lookup(kind: str) -> config.CheckParams:
        if kind == "openvpn":
            raise ModuleNotFoundError("No module named 'msgwatch.circumvention.transports.openvpn'")
        return lambda entry: ["needs a key"] if not entry.params else []

    raw = [good(name="a", type="openvpn"), good(name="b", type="socks5", params={}),
           good(name="c", type="socks5")]  # fmt: skip
    with pytest.raises(config.ConfigError) as caught:
        config.parse(raw, check_params=lookup)
    problems = caught.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("transport[0] ('a'): type 'openvpn' cannot be tested")
    assert problems[1] == "transport[1] ('b'): params: needs a key"


def test_merge_user_replaces_catalogue_by_name() -> None:
    a, b = Entry("tor", "tor", "198.18.4.1", 9001), Entry("x", "socks5", "198.18.4.2", 1080)
    mine = Entry("tor", "tor", "198.18.4.9", 9001, source="user")
    assert config.merge([a, b], [mine, Entry("y", "socks5", "198.18.4.3", 1)])[0] == mine
    assert [e.name for e in config.merge([a, b], [])] == ["tor", "x"]


def test_check_holds_made_entries_to_the_files_rules() -> None:
    """config.check: entries made elsewhere (the catalogue's) get parse()'s checks, each type's
    check_params included."""

    def refuse(kind: str) -> config.CheckParams:
        return lambda entry: (
            ["unknown params: fingerprint"] if "fingerprint" in entry.params else []
        )

    fine = Entry("a", "obfs4", "198.18.4.40", 443, params={"bridge": "x"}, source="s")
    assert config.check([fine], check_params=refuse) == [fine]
    bad = Entry("b", "obfs4", "198.18.4.41", 443, params={"fingerprint": "F"}, source="s")
    twin = Entry("a", "tor", "198.18.4.42", 0)
    with pytest.raises(config.ConfigError) as caught:
        config.check([fine, bad, twin], check_params=refuse)
    text = str(caught.value)
    assert text.startswith("catalogue: ")
    assert "transport[1] ('b'): params: unknown params: fingerprint" in text
    assert "transport[2] ('a'): port: must be an integer in 1..65535" in text
