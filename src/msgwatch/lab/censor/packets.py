"""Just enough Ethernet/IPv4/IPv6/UDP/TCP to read a frame and write a spoofed one (no sockets).

The injector reads frames off the LAN interface with an AF_PACKET socket and answers with frames it
builds here: addresses, ports and MACs swapped, checksums computed. Parsing is defensive — every
frame is hostile input (the probe side can send anything): anything short, fragmented, with IPv6
extension headers or otherwise unexpected gives None, never an exception.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
UDP = 17
TCP = 6
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


@dataclass(frozen=True)
class Frame:
    """One parsed frame carrying UDP or TCP."""

    eth_dst: bytes
    eth_src: bytes
    version: int
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    payload: bytes
    ip_packet: bytes
    """The IP packet (header and all), as it arrived: what a re-injection sends."""
    seq: int = 0
    ack: int = 0
    flags: int = 0


def parse(frame: bytes) -> Frame | None:
    """The frame's addresses, ports and payload, or None for anything that is not plain UDP/TCP."""
    if len(frame) < 14:
        return None
    eth_dst, eth_src, ethertype = frame[:6], frame[6:12], int.from_bytes(frame[12:14], "big")
    packet = frame[14:]
    if ethertype == ETH_IPV4:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return None
        ihl = (packet[0] & 0x0F) * 4
        total = int.from_bytes(packet[2:4], "big")
        fragment = int.from_bytes(packet[6:8], "big") & 0x3FFF  # MF flag or an offset
        if ihl < 20 or total < ihl or total > len(packet) or fragment:
            return None
        packet = packet[:total]
        proto, header = packet[9], ihl
        src, dst = (
            str(ipaddress.IPv4Address(packet[12:16])),
            str(ipaddress.IPv4Address(packet[16:20])),
        )
        version = 4
    elif ethertype == ETH_IPV6:
        if len(packet) < 40 or packet[0] >> 4 != 6:
            return None
        total = 40 + int.from_bytes(packet[4:6], "big")
        if total > len(packet):
            return None
        packet = packet[:total]
        proto, header = packet[6], 40
        src, dst = (
            str(ipaddress.IPv6Address(packet[8:24])),
            str(ipaddress.IPv6Address(packet[24:40])),
        )
        version = 6
    else:
        return None
    l4 = packet[header:]
    if proto == UDP and len(l4) >= 8:
        length = int.from_bytes(l4[4:6], "big")
        if length < 8 or length > len(l4):
            return None
        sport, dport = struct.unpack("!HH", l4[:4])
        return Frame(eth_dst, eth_src, version, src, dst, UDP, sport, dport, l4[8:length], packet)
    if proto == TCP and len(l4) >= 20:
        sport, dport, seq, ack, offset_flags = struct.unpack("!HHIIH", l4[:14])
        offset = (offset_flags >> 12) * 4
        if offset < 20 or offset > len(l4):
            return None
        return Frame(eth_dst, eth_src, version, src, dst, TCP, sport, dport, l4[offset:], packet,
                     seq, ack, offset_flags & 0x3F)  # fmt: skip
    return None


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(src: str, dst: str, proto: int, l4: bytes, ttl: int) -> tuple[int, bytes]:
    """(ethertype, IP packet) around ``l4`` whose checksum field is still zero."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("source and destination of different families")
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, len(l4))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(l4), proto)
    csum = _checksum(pseudo + l4) or 0xFFFF
    at = 6 if proto == UDP else 16
    l4 = l4[:at] + struct.pack("!H", csum) + l4[at + 2 :]
    if s.version == 4:
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), int.from_bytes(os.urandom(2)),
                             0x4000, ttl, proto, 0, s.packed, d.packed)  # fmt: skip
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return ETH_IPV4, header + l4
    header = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, ttl, s.packed, d.packed)
    return ETH_IPV6, header + l4


def resend_packet(frame: Frame) -> bytes:
    """The frame's IP packet with its UDP/TCP checksum computed afresh, ready for a raw socket.

    A packet read off a veth often carries only a partial checksum (the sender left the rest to
    an "offload" that never happens between namespaces); sent again as it is, it would be dropped.
    """
    packet = frame.ip_packet
    header = (packet[0] & 0x0F) * 4 if frame.version == 4 else 40
    l4 = bytearray(packet[header:])
    at = 6 if frame.proto == UDP else 16
    l4[at : at + 2] = b"\0\0"
    s, d = ipaddress.ip_address(frame.src), ipaddress.ip_address(frame.dst)
    if frame.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, frame.proto, len(l4))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(l4), frame.proto)
    l4[at : at + 2] = struct.pack("!H", _checksum(pseudo + bytes(l4)) or 0xFFFF)
    return packet[:header] + bytes(l4)


def udp_frame(eth_src: bytes, eth_dst: bytes, src: str, dst: str, sport: int, dport: int,
              payload: bytes, ttl: int = 64) -> bytes:  # fmt: skip
    """An Ethernet frame with a UDP datagram from ``src``:``sport`` (any address: spoofing)."""
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ethertype, packet = _ip(src, dst, UDP, l4, ttl)
    return eth_dst + eth_src + struct.pack("!H", ethertype) + packet


def tcp_frame(eth_src: bytes, eth_dst: bytes, src: str, dst: str, sport: int, dport: int,
              seq: int, ack: int, flags: int, payload: bytes = b"", window: int = 65535,
              ttl: int = 64) -> bytes:  # fmt: skip
    """An Ethernet frame with one TCP segment (no options)."""
    l4 = struct.pack("!HHIIHHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                     (5 << 12) | flags, window, 0, 0) + payload  # fmt: skip
    ethertype, packet = _ip(src, dst, TCP, l4, ttl)
    return eth_dst + eth_src + struct.pack("!H", ethertype) + packet
