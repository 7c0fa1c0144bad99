"""The collector client: the fence, exact failure strings, bounds, TLS with --collector-ca."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from msgwatch.spool.client import Client, ClientError, parse_url
from tests.spool import closed_port, fake_collector
from tests.unit.servers import PKI, server_tls

Handler = Callable[[socket.socket], object]


@contextmanager
def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A one-thread TCP server on 127.0.0.1 calling ``handler`` for each connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                handler(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join()
        listener.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
            while len(body) < length:
                body += conn.recv(65536)
    return data


def answer(raw: bytes) -> Handler:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(raw)

    return handle


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


def test_parse_url() -> None:
    url = parse_url("https://collector.example.org/msgwatch/")
    assert (url.scheme, url.host, url.port, url.base_path) == (
        "https",
        "collector.example.org",
        443,
        "/msgwatch",
    )
    assert str(url) == "https://collector.example.org/msgwatch"
    v6 = parse_url("http://[::1]:8080")
    assert (v6.host, v6.port, str(v6)) == ("::1", 8080, "http://[::1]:8080")
    for bad in ("ftp://x", "http://", "http://u:p@x", "http://x/?q=1", "http://x:99999", "x"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_request_and_headers() -> None:
    seen: list[bytes] = []

    def handle(conn: socket.socket) -> None:
        seen.append(read_request(conn))
        conn.sendall(OK)

    with raw_server(handle) as port:
        url = parse_url(f"http://127.0.0.1:{port}/base")
        response = Client().request("POST", url, "/api/v1/submit", body=b"{}",
                                    headers=[("Authorization", "Bearer t")])  # fmt: skip
    assert (response.status, response.body) == (200, b'{"ok":true}')
    assert response.header("content-type") == "application/json"
    request = seen[0]
    assert request.startswith(b"POST /base/api/v1/submit HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in request
    assert b"Authorization: Bearer t\r\n" in request and b"Content-Length: 2\r\n" in request
    assert request.endswith(b"\r\n\r\n{}")


def test_fence_refuses_before_any_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[object] = []
    real = socket.socket

    def spy(*args: object, **kwargs: object) -> socket.socket:
        created.append(args)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "socket", spy)
    monkeypatch.setenv("MSGWATCH_ALLOWED_NETWORKS", "127.0.0.0/8")
    client = Client()
    for url in ("http://192.0.2.1/", "http://[2001:db8::1]/", "https://collector.example.org/"):
        with pytest.raises(ClientError) as info:
            client.request("GET", parse_url(url), "/health")
        assert info.value.failure == "destination_not_allowed", url
    assert created == []


def test_connection_refused() -> None:
    url = parse_url(f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ClientError) as info:
        Client().request("GET", url, "/")
    assert info.value.failure == "connection_refused"


def test_localhost_tries_every_loopback_address() -> None:
    with raw_server(answer(OK)) as port:  # IPv4 only: ::1 is refused, 127.0.0.1 answers
        response = Client().request("GET", parse_url(f"http://localhost:{port}"), "/")
    assert response.status == 200


def test_lost_response_is_eof_error() -> None:
    # The server reads the request and closes without a word.
    with raw_server(read_request) as port, pytest.raises(ClientError) as info:
        Client().request("POST", parse_url(f"http://127.0.0.1:{port}"), "/", body=b"{}")
    assert info.value.failure == "eof_error"


def test_truncated_body_is_eof_error() -> None:
    cut = b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"results"'
    with raw_server(answer(cut)) as port, pytest.raises(ClientError) as info:
        Client().request("GET", parse_url(f"http://127.0.0.1:{port}"), "/")
    assert info.value.failure == "eof_error"


def test_not_http_is_invalid_response() -> None:
    ssh = answer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with raw_server(ssh) as port, pytest.raises(ClientError) as info:
        Client().request("GET", parse_url(f"http://127.0.0.1:{port}"), "/")
    assert info.value.failure == "http_invalid_response"


def test_response_size_is_bounded() -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000
    with raw_server(answer(big)) as port, pytest.raises(ClientError) as info:
        Client(max_response=50_000).request("GET", parse_url(f"http://127.0.0.1:{port}"), "/")
    assert info.value.failure == "response_too_large"


def test_endless_headers_are_bounded() -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):
            conn.sendall(b"X-Filler: " + b"y" * 1000 + b"\r\n")

    with raw_server(handle) as port, pytest.raises(ClientError) as info:
        Client().request("GET", parse_url(f"http://127.0.0.1:{port}"), "/")
    assert info.value.failure == "http_invalid_response"


def test_silent_server_times_out() -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        time.sleep(1.0)

    with raw_server(handle) as port:
        started = time.monotonic()
        with pytest.raises(ClientError) as info:
            Client(io_timeout=0.2).request("GET", parse_url(f"http://127.0.0.1:{port}"), "/")
        assert time.monotonic() - started < 0.9
    assert info.value.failure == "generic_timeout_error"


def test_drip_stops_at_the_request_deadline() -> None:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.05)

    with raw_server(handle) as port:
        started = time.monotonic()
        with pytest.raises(ClientError) as info:
            Client(io_timeout=1.0, request_timeout=0.4).request(
                "GET", parse_url(f"http://127.0.0.1:{port}"), "/"
            )
        assert time.monotonic() - started < 1.5
    assert info.value.failure == "generic_timeout_error"


def test_https_with_collector_ca(pki: PKI) -> None:
    loopback = lambda host, port: ["127.0.0.1"]  # noqa: E731  (chat.example.test is ours)
    with raw_server(answer(OK), tls=server_tls(pki.chat)) as port:
        url = parse_url(f"https://chat.example.test:{port}")
        trusted = Client(ca_file=str(pki.ca), resolver=loopback)
        assert trusted.request("GET", url, "/health").status == 200
        with pytest.raises(ClientError) as info:  # the system's trust store does not know it
            Client(resolver=loopback).request("GET", url, "/health")
        assert info.value.failure == "ssl_unknown_authority"
        wrong_name = parse_url(f"https://other.example.test:{port}")
        with pytest.raises(ClientError) as info:
            trusted.request("GET", wrong_name, "/health")
        assert info.value.failure == "ssl_invalid_hostname"
    with raw_server(answer(OK), tls=server_tls(pki.rogue)) as port:
        with pytest.raises(ClientError) as info:
            trusted.request("GET", parse_url(f"https://chat.example.test:{port}"), "/")
        assert info.value.failure == "ssl_unknown_authority"


def test_against_the_scripted_collector() -> None:
    with fake_collector() as fake:
        client = Client()
        body = b'{"measurements":[{"idempotency_key":"k1","measurement":{"a":1}}]}'
        response = client.request("POST", parse_url(fake.url), "/api/v1/submit", body=body)
    assert response.status == 200
    assert b'"stored"' in response.body and fake.stored["k1"]["measurement"] == {"a": 1}
