"""The collector's HTTP transport under hostile clients (issue 9, items 3, 4, 6 and 15).

A real ``msgwatch collector serve`` on loopback, spoken to over real sockets, its limits made small
by its options so that a handful of connections stands for a thousand; and, for the forwarded
address, the same collector behind a real nginx. Each client binds its own 127.0.0.x source
address, so the per-client bounds of one test do not touch another's.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgwatch.collector.transport import Proxies, client_key, parse_networks
from msgwatch.lab.procs.proc import Server, which
from tests.collector.liveserver import REPORT_ID, Client, ProcessServer, envelope, free_port

PER_CLIENT = 4
TOTAL = 12
HEADER_TIMEOUT = 1.0
OPTIONS = (
    *("--max-connections", str(TOTAL)),
    *("--max-connections-per-client", str(PER_CLIENT)),
    *("--header-timeout", str(HEADER_TIMEOUT)),
)
ADD = f"/report/{REPORT_ID}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessServer]:
    base = tmp_path_factory.mktemp("transport")
    server = ProcessServer(base / "data", base / "serve.log", *OPTIONS).start()
    yield server
    server.terminate()


def connect(port: int, source: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (or the socket's timeout)."""
    parts = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (it sends nothing on it)."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def metric(port: int, name: str) -> float:
    text = Client(port, source="127.0.0.99").get("/metrics").body.decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def add_body(**changes: object) -> bytes:
    return json.dumps({"format": "json", "content": envelope(**changes)}).encode()


def submit(port: int, source: str, **changes: object) -> int:
    client = Client(port, source=source)
    try:
        return client.post(ADD, raw=add_body(**changes)).status
    finally:
        client.close()


# --- item 3: the request head is bounded -------------------------------------------------------


def test_a_huge_head_is_answered_431_and_costs_no_memory(served: ProcessServer) -> None:
    """Four heads of 32 MB each: 431 to each, and the collector's memory does not follow them."""
    assert served.process is not None
    rss = Path(f"/proc/{served.process.pid}/status")

    def resident() -> int:
        line = next(x for x in rss.read_text().splitlines() if x.startswith("VmRSS"))
        return int(line.split()[1]) * 1024

    before = resident()
    answers: list[bytes] = []

    def huge_head(source: str) -> None:
        with connect(served.port, source, timeout=30) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: c\r\nX-Big: ")
                for _ in range(32):
                    sock.sendall(b"a" * (1 << 20))
                sock.sendall(b"\r\n\r\n")
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            answers.append(read_all(sock))

    threads = [threading.Thread(target=huge_head, args=(f"127.0.1.{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 4
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"error": "headers_too_large"' in answer
    assert resident() - before < 32 << 20
    assert metric(
        served.port, 'msgwatch_collector_connections_cut_total{reason="headers_too_large"}'
    )


def test_too_many_header_fields_are_answered_431(served: ProcessServer) -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(150))
    with connect(served.port, "127.0.2.1") as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: c\r\n" + fields + b"\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"too_many_headers" in answer
    # a hundred fields are still a request
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(90))
    with connect(served.port, "127.0.2.1") as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: c\r\nConnection: close\r\n" + fields + b"\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200 ")


# --- item 4: slow clients, connections in all and per client ----------------------------------


def test_a_head_that_trickles_is_cut_at_the_header_timeout(served: ProcessServer) -> None:
    with connect(served.port, "127.0.3.1") as sock:
        sock.sendall(b"POST /api/v1/submit HTTP/1.1\r\nHost: c\r\n")
        started, closed = time.monotonic(), False
        while time.monotonic() - started < 10 * HEADER_TIMEOUT and not closed:
            try:
                sock.sendall(b"X")  # a byte now and then: still no complete head
            except OSError:
                closed = True
                break
            closed = closed_within(sock, 0.2)
        assert closed, "the collector still held a head that never ended"
    assert metric(served.port, 'msgwatch_collector_connections_cut_total{reason="header_timeout"}')
    assert "request head not complete within 1 s" in served.log.read_text()


def test_connections_per_client_are_bounded(served: ProcessServer) -> None:
    held = [connect(served.port, "127.0.4.1") for _ in range(PER_CLIENT)]
    try:
        for sock in held:  # each admitted: half a head, still waiting
            sock.sendall(b"GET /health HTTP/1.1\r\n")
        with connect(served.port, "127.0.4.1") as extra:
            assert closed_within(extra, 5.0), "one connection over the per-client bound was held"
        assert submit(served.port, "127.0.4.2") == 200  # another client is not affected
        reason = 'reason="max_connections_per_client"'
        assert metric(served.port, f"msgwatch_collector_connections_refused_total{{{reason}}}")
    finally:
        for sock in held:
            sock.close()
    assert "over the per-client limit (--max-connections-per-client 4)" in served.log.read_text()


def test_a_full_table_makes_room_for_a_request(served: ProcessServer) -> None:
    """Slow heads from many addresses fill every slot; a submission still gets through, by closing
    the connection that has waited longest for its head."""
    slow = [
        connect(served.port, f"127.0.5.{1 + i // PER_CLIENT}") for i in range(TOTAL + PER_CLIENT)
    ]
    try:
        for sock in slow:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /health HTTP/1.1\r\n")
        for attempt in range(3):
            assert submit(served.port, f"127.0.5.{100 + attempt}") == 200
        assert closed_within(slow[0], 5.0), "the oldest slow head was not the one closed"
        evicted = metric(served.port, 'msgwatch_collector_connections_cut_total{reason="evicted"}')
        assert evicted >= 3
        assert metric(served.port, "msgwatch_collector_connections_peak") <= TOTAL
    finally:
        for sock in slow:
            sock.close()


# --- item 15: an early answer reaches its client ------------------------------------------------


def test_an_oversized_body_gets_its_413_not_a_reset(served: ProcessServer) -> None:
    """A client that sends its whole body before reading (msgwatch's own, ``Connection: close``)
    reads the 413: the collector reads and throws away the rest instead of resetting."""
    body = b'{"format": "json", "content": {"x": "' + b"a" * (6 << 20) + b'"}}'
    head = (
        f"POST {ADD} HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with connect(served.port, "127.0.6.1") as sock:
        sock.sendall(head + body)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b"body_too_large" in answer


def test_an_early_answer_on_a_keep_alive_connection_closes_it(served: ProcessServer) -> None:
    """The 413 comes while the body still arrives: it says ``Connection: close``; the client may
    finish sending; then the connection closes cleanly."""
    with connect(served.port, "127.0.6.2") as sock:
        sock.sendall(
            f"POST {ADD} HTTP/1.1\r\nHost: c\r\nContent-Length: {6 << 20}\r\n\r\n".encode()
            + b"{" * 1000
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, "closed before an answer"
            head += chunk
        assert head.startswith(b"HTTP/1.1 413 ")
        assert b"connection: close" in head.lower()
        sock.sendall(b" " * (1 << 20))  # the rest may still come, and is read
        sock.shutdown(socket.SHUT_WR)
        read_all(sock)


# --- item 6: the forwarded address ----------------------------------------------------------------


def stored_text(port: int, uid: str) -> str:
    return Client(port, source="127.0.0.99").get(f"/api/v1/measurements/{uid}").body.decode()


def test_a_forwarded_header_from_a_client_is_ignored(served: ProcessServer) -> None:
    """No ``--forwarded-allow-ips``: the client is the socket's peer, whatever it writes."""
    client = Client(served.port, source="127.0.7.1")
    answer = client.post(
        ADD,
        raw=add_body(test_keys={"seen": ["127.0.7.1", "203.0.113.7"]}),
        X_Forwarded_For="203.0.113.7",
    )
    assert answer.status == 200
    text = stored_text(served.port, answer.json()["measurement_uid"])
    assert "127.0.7.1" not in text
    assert "203.0.113.7" in text


NGINX_CONF = """daemon off;
master_process off;
pid {run}/nginx.pid;
lock_file {run}/nginx.lock;
error_log {run}/nginx.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {run}/body; proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi; uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
    client_max_body_size 40m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """(nginx's port, the collector's port): the collector trusts 127.0.0.1, nginx's address, and
    allows one submission every 2 s per client (a burst of one)."""
    base = tmp_path_factory.mktemp("proxied")
    collector = ProcessServer(
        base / "data",
        base / "serve.log",
        *("--forwarded-allow-ips", "127.0.0.1", "--rate-limit", "0.5"),
    ).start()
    port = free_port()
    conf = base / "nginx.conf"
    conf.write_text(NGINX_CONF.format(run=base, port=port, upstream=collector.port))
    nginx = Server(
        "nginx",
        [which("nginx"), "-e", str(base / "nginx.log"), "-p", str(base), "-c", str(conf)],
        base / "nginx.log",
        {("tcp", "127.0.0.1", port)},
    )
    nginx.start(base)
    try:
        nginx.wait_ready(10)
        yield port, collector.port
    finally:
        nginx.stop()
        collector.terminate()


def test_behind_nginx_each_client_has_its_own_rate_limit(behind_nginx: tuple[int, int]) -> None:
    proxy, _ = behind_nginx
    assert submit(proxy, "127.0.8.1", test_name="a1") == 200
    assert submit(proxy, "127.0.8.1", test_name="a2") == 429
    # a client that names another in X-Forwarded-For is still itself: nginx appends its address
    forged = Client(proxy, source="127.0.8.1")
    answer = forged.post(ADD, raw=add_body(test_name="a3"), X_Forwarded_For="203.0.113.9")
    assert answer.status == 429
    # another client behind the same proxy has its own bucket
    assert submit(proxy, "127.0.8.2", test_name="b1") == 200


def test_behind_nginx_the_real_client_address_is_scrubbed(behind_nginx: tuple[int, int]) -> None:
    proxy, direct = behind_nginx
    client = Client(proxy, source="127.0.9.1")
    answer = client.post(ADD, raw=add_body(test_keys={"seen": "ip 127.0.9.1 and 203.0.113.8"}))
    assert answer.status == 200
    text = stored_text(direct, answer.json()["measurement_uid"])
    assert "127.0.9.1" not in text
    assert "203.0.113.8" in text


def test_a_direct_client_cannot_forge_its_address(behind_nginx: tuple[int, int]) -> None:
    """Only the proxy's address is trusted: a client that reaches the collector directly and
    names 127.0.9.2 in X-Forwarded-For is still 127.0.10.1 (scrubbed as such)."""
    _, direct = behind_nginx
    client = Client(direct, source="127.0.10.1")
    answer = client.post(
        ADD,
        raw=add_body(test_keys={"seen": "127.0.10.1 127.0.9.2"}),
        X_Forwarded_For="127.0.9.2",
    )
    assert answer.status == 200
    text = stored_text(direct, answer.json()["measurement_uid"])
    assert "127.0.10.1" not in text
    assert "127.0.9.2" in text


def test_a_bad_forwarded_allow_ips_stops_the_start(tmp_path: Path) -> None:
    server = ProcessServer(
        tmp_path / "data", tmp_path / "serve.log", "--forwarded-allow-ips", "nginx"
    )
    with pytest.raises(RuntimeError, match="is not an IP address or network"):
        server.start(timeout=30)


# --- the pure parts -------------------------------------------------------------------------------


def test_the_client_is_the_rightmost_untrusted_forwarded_entry() -> None:
    proxies = Proxies(parse_networks(["127.0.0.1, 10.0.0.0/8"]))
    assert "127.0.0.1" in proxies and "10.1.2.3" in proxies and "127.0.0.2" not in proxies
    assert proxies.client("203.0.113.9, 198.51.100.4") == "198.51.100.4"
    assert proxies.client("203.0.113.9, 198.51.100.4, 10.0.0.7") == "198.51.100.4"
    assert proxies.client("198.51.100.4:5555") == "198.51.100.4"
    assert proxies.client("[2001:db8::1]:443") == "2001:db8::1"
    assert proxies.client("evil, not-an-address") is None
    assert proxies.client("not-an-address, 198.51.100.4") == "198.51.100.4"
    with pytest.raises(ValueError, match="'nginx' is not an IP address"):
        parse_networks(["127.0.0.1,nginx"])


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("::ffff:127.0.0.5") == "127.0.0.5"
