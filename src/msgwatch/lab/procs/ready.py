"""Readiness checks shared by both lab back-ends: does a server answer yet?

Each check sends one small query and waits 0.1 s for the answer: a caller polls it
(:meth:`msgwatch.lab.procs.proc.Server.wait_ready`) until the server answers or its time is up. A
check never raises: no answer, a wrong one or a socket error is ``False``. The address decides the
family (``:`` is IPv6).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

import dns.message

from msgwatch.wire.packets import BINDING_REQUEST, stun_message

__all__ = ["dns_answers", "stun_answers"]

BINDING_SUCCESS = b"\x01\x01"
"""The first two bytes of a Binding success response (RFC 5389 §6: class bits 1 and 1)."""


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def dns_answers(address: str, name: str, port: int = 53) -> bool:
    """Whether the DNS server at ``address`` answers an A query for ``name`` (any rcode)."""
    query = dns.message.make_query(name, "A").to_wire()
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        try:
            sock.sendto(query, (address, port))
            return sock.recv(4096)[:2] == query[:2]
        except OSError:
            return False


def stun_answers(addresses: Sequence[str], port: int) -> bool:
    """Whether every one of ``addresses`` answers a STUN Binding request on UDP ``port``."""
    request = stun_message(BINDING_REQUEST, os.urandom(12), fingerprint=False)
    for address in addresses:
        with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.1)
            try:
                sock.sendto(request, (address, port))
                if sock.recv(2048)[:2] != BINDING_SUCCESS:
                    return False
            except OSError:
                return False
    return True
