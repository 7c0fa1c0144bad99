"""The probe's network from a local MaxMind-format database (issue 9, item 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import maxminddb
import pytest

from msgwatch.lab import geoip
from msgwatch.lab.plan import ISP_NETWORKS, isp_prefixes
from msgwatch.probe.network import GeoipError, candidates, check_databases, resolve

NETWORKS: list[tuple[str, dict[str, Any]]] = [
    ("198.51.100.0/24", {"autonomous_system_number": 64496,
                         "autonomous_system_organization": "Example ISP A",
                         "country": {"iso_code": "AZ"}}),
    ("203.0.113.0/25", {"autonomous_system_number": 64497}),
    ("2001:db8:5::/48", {"autonomous_system_number": 64498, "country": {"iso_code": "ge"}}),
]  # fmt: skip


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return geoip.write(tmp_path / "test.mmdb", NETWORKS, database_type="test",
                       description="msgwatch tests")  # fmt: skip


def test_written_database_reads_back_with_maxminds_reader(database: Path) -> None:
    for mode in (maxminddb.MODE_AUTO, maxminddb.MODE_FILE):
        with maxminddb.open_database(str(database), mode) as reader:
            assert reader.metadata().ip_version == 6
            assert reader.metadata().database_type == "test"
            assert reader.get("198.51.100.77") == NETWORKS[0][1]
            assert reader.get("203.0.113.127") == NETWORKS[1][1]
            assert reader.get("203.0.113.128") is None
            assert reader.get("2001:db8:5:1::9") == NETWORKS[2][1]
            assert reader.get("192.0.2.1") is None
            _record, prefix = reader.get_with_prefix_len("198.51.100.1")
            assert prefix == 24  # under 96 zero bits of the IPv6 tree, reported as an IPv4 /24


def test_network_from_the_database(database: Path) -> None:
    network = resolve(given_asn=None, given_cc=None, addresses=["198.51.100.9"],
                      databases=[str(database)])  # fmt: skip
    assert (network.asn, network.cc, network.name) == ("AS64496", "AZ", "Example ISP A")
    assert (network.asn_source, network.cc_source) == ("geoip", "geoip")
    assert network.known and "AS64496 (from the GeoIP database)" in network.describe()


def test_given_values_win_each_on_its_own(database: Path) -> None:
    network = resolve(given_asn="64510", given_cc=None, addresses=["198.51.100.9"],
                      databases=[str(database)])  # fmt: skip
    assert (network.asn, network.asn_source, network.cc, network.cc_source) == (
        "AS64510", "given", "AZ", "geoip")  # fmt: skip


def test_first_address_the_database_knows_decides_and_partial_records(database: Path) -> None:
    # 192.168.1.5 (a LAN address) is in no database; 203.0.113.5 has an ASN and no country.
    network = resolve(given_asn=None, given_cc=None,
                      addresses=["192.168.1.5", "203.0.113.5", "2001:db8:5::1"],
                      databases=[str(database)])  # fmt: skip
    assert (network.asn, network.cc) == ("AS64497", "GE")


def test_unknown_without_database_or_address(database: Path) -> None:
    for addresses, databases in (([], [str(database)]), (["192.0.2.1"], [str(database)]),
                                 (["198.51.100.9"], [])):  # fmt: skip
        network = resolve(given_asn=None, given_cc=None, addresses=addresses, databases=databases)
        assert (network.asn, network.cc, network.known) == ("AS0", "ZZ", False)
        assert "unknown" in network.describe() and "--geoip-db" in network.describe()


def test_unusable_database_is_an_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mmdb"
    garbage.write_bytes(b"\x00" * 4096)
    for path in (garbage, tmp_path / "missing.mmdb"):
        with pytest.raises(GeoipError, match=path.name):
            check_databases([str(path)])


def test_candidates_order() -> None:
    learned = ["10.0.0.2", "2001:db8::2", "8.8.4.4", "127.0.0.1", "fe80::1%eth0", "nonsense"]
    assert candidates(["198.51.100.1"], learned) == [
        "198.51.100.1", "8.8.4.4", "10.0.0.2", "2001:db8::2"]  # fmt: skip


def test_overlapping_networks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlaps"):
        geoip.build([("10.0.0.0/8", {"a": 1}), ("10.1.0.0/16", {"a": 2})], database_type="t",
                     description="t")  # fmt: skip


def test_lab_database_gives_each_isp_its_network(tmp_path: Path) -> None:
    path = geoip.lab_database(
        tmp_path / "lab.mmdb",
        {isp: isp_prefixes(isp) for isp in ("isp1", "isp2")},
        {isp: geoip.IspNetwork(*ISP_NETWORKS[isp]) for isp in ("isp1", "isp2")},
    )
    seen = {
        a: resolve(given_asn=None, given_cc=None, addresses=[a], databases=[str(path)])
        for a in ("198.18.1.2", "2001:db8:1::2", "198.18.2.2")
    }
    assert seen["198.18.1.2"].asn == seen["2001:db8:1::2"].asn == "AS64500"
    assert seen["198.18.2.2"].asn == "AS64501"
    assert json.dumps(sorted({n.cc for n in seen.values()})) == '["XA"]'


def _run(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, str, Path]:
    from click.testing import CliRunner

    from msgwatch.cli.main import cli
    from tests.unit.test_cli import _catalogue

    root = _catalogue(tmp_path)
    out = tmp_path / "m.jsonl"
    args = ["run", "--catalogue", str(root), "--timeout", "1", "--output", str(out), *extra]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200", **(env or {})})
    return result.exit_code, result.output, out


def test_run_records_the_network_of_its_address_and_never_the_address(
    tmp_path: Path, database: Path
) -> None:
    code, shown, out = _run(tmp_path, "--geoip-db", str(database), "--probe-ip", "198.51.100.9")
    assert code == 0, shown
    text = out.read_text()
    measurement = json.loads(text.splitlines()[0])
    assert (measurement["probe_asn"], measurement["probe_cc"]) == ("AS64496", "AZ")
    assert measurement["probe_network_name"] == "Example ISP A"
    assert measurement["annotations"]["probe_asn_source"] == "geoip"
    assert "_AZ_64496_" in measurement["report_id"]
    assert "198.51.100.9" not in text
    assert "Verdicts (AS64496, AZ)" in shown


def test_run_takes_the_database_from_the_environment(tmp_path: Path, database: Path) -> None:
    env = {"MSGWATCH_GEOIP_DB": str(database)}
    code, shown, out = _run(tmp_path, "--probe-ip", "2001:db8:5::7", env=env)
    assert code == 0, shown
    measurement = json.loads(out.read_text().splitlines()[0])
    assert (measurement["probe_asn"], measurement["probe_cc"]) == ("AS64498", "GE")


def test_run_says_when_the_network_is_unknown(tmp_path: Path) -> None:
    code, shown, out = _run(tmp_path)
    assert code == 0, shown
    measurement = json.loads(out.read_text().splitlines()[0])
    assert (measurement["probe_asn"], measurement["probe_cc"]) == ("AS0", "ZZ")
    assert "Verdicts (network unknown)" in shown
    assert "the collector cannot tell this network from others" in " ".join(shown.split())


def test_run_refuses_an_unusable_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"not a database")
    code, shown, _ = _run(tmp_path, "--geoip-db", str(bad))
    assert code == 2
    assert "bad.mmdb" in shown
