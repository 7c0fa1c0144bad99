"""Readiness checks (``msgwatch.lab.procs.ready``) against in-process UDP servers on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from msgwatch.lab.procs.ready import dns_answers, stun_answers

Reply = Callable[[bytes], bytes | None]


@pytest.fixture
def udp_server() -> Iterator[Callable[[Reply], int]]:
    """Start a one-socket UDP server on 127.0.0.1 answering with ``reply(request)``; its port."""
    sockets: list[socket.socket] = []

    def start(reply: Reply) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)

        def serve() -> None:
            while True:
                try:
                    data, peer = sock.recvfrom(4096)
                except OSError:
                    return
                answer = reply(data)
                if answer is not None:
                    sock.sendto(answer, peer)

        threading.Thread(target=serve, daemon=True).start()
        return int(sock.getsockname()[1])

    yield start
    for sock in sockets:
        sock.close()


def test_dns_answers_when_the_query_id_comes_back(udp_server: Callable[[Reply], int]) -> None:
    echo = udp_server(lambda q: q[:2] + b"\x81\x83" + q[4:])  # any rcode counts: NXDOMAIN here
    assert dns_answers("127.0.0.1", "example.invalid", port=echo)
    silent = udp_server(lambda q: None)
    assert not dns_answers("127.0.0.1", "example.invalid", port=silent)


def test_stun_answers_only_a_binding_success(udp_server: Callable[[Reply], int]) -> None:
    ok = udp_server(lambda q: b"\x01\x01" + q[2:] if q[:2] == b"\x00\x01" else None)
    error = udp_server(lambda q: b"\x01\x11" + q[2:])
    assert stun_answers(["127.0.0.1"], ok)
    assert not stun_answers(["127.0.0.1"], error)
