"""The loopback proxy the partition tests use (tests/tcpproxy.py), against an echo server."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tcpproxy import TcpProxy  # noqa: E402

QUIET = 0.2  # how long "nothing arrives" is watched for


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    server = socket.create_server(("127.0.0.1", 0))
    clients: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            clients.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
            except OSError:
                break
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    with TcpProxy("127.0.0.1", server.getsockname()[1]) as p:
        yield p
    server.close()
    for c in clients:
        c.close()


_OPEN: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _dial(p: TcpProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    _OPEN.append(s)
    return s


def _connect(p: TcpProxy) -> socket.socket:
    s = _dial(p)
    s.sendall(b"hello")
    assert s.recv(100) == b"hello"
    return s


def _silent(s: socket.socket) -> bool:
    s.settimeout(QUIET)
    try:
        s.recv(100)
    except TimeoutError:
        return True
    finally:
        s.settimeout(5)
    return False


def test_rewrite_points_a_url_at_the_proxy(proxy: TcpProxy) -> None:
    url = proxy.rewrite("postgresql://me@10.0.0.1:5432/db?x=1")
    assert url == f"postgresql://me@127.0.0.1:{proxy.port}/db?x=1"


def test_partition_holds_bytes_and_heal_delivers_them_in_order(proxy: TcpProxy) -> None:
    s = _connect(proxy)
    proxy.partition()
    s.sendall(b"one ")
    s.sendall(b"two")
    assert _silent(s)  # nothing passes, nothing is closed
    fresh = _dial(proxy)
    fresh.sendall(b"x")
    assert _silent(fresh)  # a new connection gets no further than the handshake
    proxy.heal()
    got = b""
    while len(got) < 7:
        got += s.recv(100)
    assert got == b"one two"
    assert fresh.recv(100) == b"x"
    assert proxy.held_chunks >= 1  # the rest waited in the kernel's buffers


def test_heal_with_reset_resets_the_connections_that_were_cut(proxy: TcpProxy) -> None:
    s = _connect(proxy)
    proxy.partition()
    s.sendall(b"lost")
    proxy.heal("reset")
    with pytest.raises(ConnectionResetError):
        s.recv(100)
    _connect(proxy)  # new connections work


def test_heal_with_blackhole_keeps_old_connections_silent_forever(proxy: TcpProxy) -> None:
    s = _connect(proxy)
    proxy.partition()
    proxy.heal("blackhole")
    s.sendall(b"into the void")
    assert _silent(s)
    _connect(proxy)  # new connections work
    assert _silent(s)


def test_partition_when_cuts_just_before_the_chosen_chunk(proxy: TcpProxy) -> None:
    s = _connect(proxy)
    proxy.partition_when(lambda conn, chunk: b"COMMIT" in chunk)
    s.sendall(b"BEGIN")
    assert s.recv(100) == b"BEGIN"
    s.sendall(b"COMMIT")
    assert proxy.triggered.wait(5) and proxy.partitioned
    assert _silent(s)
    proxy.heal()
    assert s.recv(100) == b"COMMIT"
