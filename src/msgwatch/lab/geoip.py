"""A small MaxMind DB (MMDB) writer, and the lab's own GeoIP database.

The lab gives each ISP its own network (AS number, country, name: ``msgwatch.lab.plan.ISP_NETWORKS``,
or the scenario's ``[networks.<isp>]``), writes them into an MMDB file for the ISPs' address ranges, and
hands that file to each ISP's probe (``msgwatch run --geoip-db``): the probe finds its network the
way it does outside the lab, from a local database and its own addresses.

The writer follows the MaxMind DB format, version 2.0 (https://maxmind.github.io/MaxMind-DB/):

- a binary search tree over the 128 bits of an IPv6 address (IPv4 networks at ``::a.b.c.d``, i.e.
  96 zero bits first, as readers look IPv4 up in an IPv6 tree), 32-bit records, a record being a
  node number, ``node_count`` (no data) or ``node_count + 16 + offset`` into the data section;
- 16 zero bytes, then the data section: each record's map, encoded with the format's types (maps,
  UTF-8 strings, unsigned integers, arrays, booleans);
- the metadata marker ``\\xab\\xcd\\xefMaxMind.com`` and the metadata map, its fields in the types
  the format prescribes (strict readers such as libmaxminddb check them).

It writes what the lab and the tests need (a few networks, no overlaps, no pointers, no
de-duplication of equal records beyond identical maps) and refuses anything else.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
RECORD_BITS = 32


class U16(int):
    """An integer written as the format's uint16."""


class U64(int):
    """An integer written as the format's uint64 (other integers are written as uint32)."""


@dataclass(frozen=True)
class IspNetwork:
    asn: int
    cc: str
    name: str


# -- the data section's encoding ------------------------------------------------------------------


def _control(kind: int, size: int) -> bytes:
    """The control byte (type and size), an extended type's byte, and the size's extra bytes."""
    first, extended = (kind << 5, b"") if kind <= 7 else (0, bytes([kind - 7]))
    if size < 29:
        return bytes([first | size]) + extended
    if size < 29 + 256:
        return bytes([first | 29]) + extended + bytes([size - 29])
    if size < 285 + 65536:
        return bytes([first | 30]) + extended + (size - 285).to_bytes(2, "big")
    if size < 65821 + (1 << 24):
        return bytes([first | 31]) + extended + (size - 65821).to_bytes(3, "big")
    raise ValueError("value too large for the MaxMind DB format")


def _uint(kind: int, value: int, limit_bits: int) -> bytes:
    if not 0 <= value < 1 << limit_bits:
        raise ValueError(f"{value} does not fit a uint{limit_bits}")
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _control(kind, len(payload)) + payload


def encode(value: Any) -> bytes:
    """One value in the data section's encoding."""
    if isinstance(value, bool):
        return _control(14, int(value))
    if isinstance(value, U16):
        return _uint(5, value, 16)
    if isinstance(value, U64):
        return _uint(9, value, 64)
    if isinstance(value, int):
        return _uint(6, value, 32)
    if isinstance(value, str):
        data = value.encode("utf-8")
        return _control(2, len(data)) + data
    if isinstance(value, Mapping):
        body = b"".join(encode(str(k)) + encode(v) for k, v in value.items())
        return _control(7, len(value)) + body
    if isinstance(value, list | tuple):
        return _control(11, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot write {type(value).__name__} to a MaxMind DB")


# -- the search tree -------------------------------------------------------------------------------


def _bits(network: str) -> list[int]:
    """The network's prefix as bits of the IPv6 tree (IPv4 under 96 zero bits)."""
    net = ipaddress.ip_network(network, strict=True)
    if net.version == 4:
        value, length = int(net.network_address), 96 + net.prefixlen
    else:
        value, length = int(net.network_address), net.prefixlen
    if length == 0:
        raise ValueError("a network of length 0 is not supported")
    return [(value >> (127 - i)) & 1 for i in range(length)]


def build(networks: Sequence[tuple[str, Mapping[str, Any]]], *, database_type: str,
          description: str, build_epoch: int | None = None) -> bytes:  # fmt: skip
    """The bytes of a database mapping each network to its record."""
    nodes: list[list[int | tuple[str, int] | None]] = [[None, None]]
    data = b""
    offsets: dict[bytes, int] = {}
    for network, record in networks:
        encoded = encode(record)
        if encoded not in offsets:
            offsets[encoded] = len(data)
            data += encoded
        bits = _bits(network)
        node = 0
        for depth, bit in enumerate(bits):
            slot = nodes[node][bit]
            if depth == len(bits) - 1:
                if slot is not None:
                    raise ValueError(f"{network} overlaps another network")
                nodes[node][bit] = ("data", offsets[encoded])
            elif slot is None:
                nodes.append([None, None])
                nodes[node][bit] = len(nodes) - 1
                node = len(nodes) - 1
            elif isinstance(slot, tuple):
                raise ValueError(f"{network} overlaps another network")
            else:
                node = slot
    count = len(nodes)

    def value(slot: int | tuple[str, int] | None) -> int:
        if slot is None:
            return count
        if isinstance(slot, tuple):
            return count + 16 + slot[1]
        return slot

    tree = b"".join(
        value(left).to_bytes(4, "big") + value(right).to_bytes(4, "big") for left, right in nodes
    )
    metadata = {
        "binary_format_major_version": U16(2),
        "binary_format_minor_version": U16(0),
        "build_epoch": U64(int(time.time()) if build_epoch is None else build_epoch),
        "database_type": database_type,
        "description": {"en": description},
        "ip_version": U16(6),
        "languages": ["en"],
        "node_count": count,
        "record_size": U16(RECORD_BITS),
    }
    return tree + bytes(16) + data + METADATA_MARKER + encode(metadata)


def write(path: Path, networks: Sequence[tuple[str, Mapping[str, Any]]], **options: Any) -> Path:
    """Write a database atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(build(networks, **options))
    os.replace(tmp, path)
    return path


# -- the lab's database ----------------------------------------------------------------------------


def record(network: IspNetwork) -> dict[str, Any]:
    """One ISP's record, with the keys of GeoLite2-ASN and GeoLite2-Country in one map."""
    return {
        "autonomous_system_number": network.asn,
        "autonomous_system_organization": network.name,
        "country": {"iso_code": network.cc},
    }


def lab_database(path: Path, prefixes: Mapping[str, Sequence[str]],
                 networks: Mapping[str, IspNetwork]) -> Path:  # fmt: skip
    """The lab's GeoIP database: each ISP's address prefixes (``prefixes[isp]``) → its network."""
    rows = [(prefix, record(networks[isp])) for isp, ps in prefixes.items() for prefix in ps]
    return write(path, rows, database_type="msgwatch-lab-ASN-Country",
                 description="msgwatch lab: the emulated ISPs' networks")  # fmt: skip
