"""A TCP proxy on loopback that can cut the network between its clients and their server.

Standard library only, one thread per direction of each connection::

    proxy = TcpProxy("127.0.0.1", 5432).start()
    url = proxy.rewrite("postgresql://user@127.0.0.1:5432/db")  # the same URL, through the proxy
    proxy.partition()        # nothing passes in either direction; no socket is closed
    proxy.heal()             # what was held is delivered, in order, and traffic flows again
    proxy.close()

A partition behaves like a network that silently drops packets: both ends keep their sockets
open and see nothing, so a client waiting for a reply waits (as long as it is willing to); a
client that connects meanwhile gets its TCP handshake (the listener is ours) but never an answer.
Bytes are not lost, only held: in a real network TCP retransmits them, so when a partition heals
before either end gives up, everything sent is delivered late and in order. ``heal`` takes how
the connections that lived through the partition come out of it:

* ``"deliver"`` (the default): the partition was shorter than TCP's retransmission timeout; the
  held bytes arrive late, in order, and the connections carry on.
* ``"reset"``: the connections died meanwhile (a peer's TCP gave up); both ends get a reset (RST)
  and the held bytes are dropped. New connections work.
* ``"blackhole"``: the path for those connections is gone for good and nobody is told (a NAT or
  firewall forgot the flows, a failover moved the address): they never carry another byte and
  are never closed. New connections work.

``partition_when(predicate)`` cuts the network at an exact point of a conversation: the first
client-to-server chunk for which ``predicate(conn, chunk)`` is true is held, and the partition
starts before it is forwarded. ``conn.notes`` is a dict the predicate may keep state in.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ProxyConn", "TcpProxy"]

_CHUNK = 65536


@dataclass(eq=False)
class ProxyConn:
    """One client connection through the proxy."""

    ident: int
    client: socket.socket
    upstream: socket.socket | None = None
    # The partition generation this connection belongs to: a heal decides its fate.
    generation: int = 0
    fate: str = "live"  # live | blackhole | reset | closed
    notes: dict[str, Any] = field(default_factory=dict)
    sent_up: int = 0
    sent_down: int = 0


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``target``; cut and restore the path on request."""

    def __init__(
        self, target_host: str, target_port: int, *, listen_host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = 0
        self._cv = threading.Condition()
        self._partitioned = False
        self._generation = 0  # bumped at every partition
        self._closing = False
        self._conns: list[ProxyConn] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._trigger: Callable[[ProxyConn, bytes], bool] | None = None
        self.partitions = 0  # how many times the network was cut
        self.held_chunks = 0  # chunks that waited for a heal (or were dropped by one)
        self.triggered = threading.Event()  # set when partition_when's predicate fired

    # ------------------------------------------------------------------ public

    def start(self) -> TcpProxy:
        lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((self.listen_host, 0))
        lst.listen(128)
        self._listener = lst
        self.port = lst.getsockname()[1]
        self._spawn(self._accept_loop, "tcpproxy-accept")
        return self

    def rewrite(self, url: str) -> str:
        """``url`` (scheme://user@host:port/path?query) pointed at the proxy instead."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}{self.listen_host}:{self.port}"))

    @property
    def partitioned(self) -> bool:
        with self._cv:
            return self._partitioned

    def partition(self) -> None:
        """Stop forwarding in both directions; every connection open now waits for a heal."""
        with self._cv:
            self._cut()

    def partition_when(self, predicate: Callable[[ProxyConn, bytes], bool]) -> None:
        """Cut the network just before the first client chunk that ``predicate`` accepts."""
        with self._cv:
            self._trigger = predicate
            self.triggered.clear()

    def heal(self, mode: str = "deliver") -> None:
        """Restore the network; ``mode`` says what became of the connections it cut off."""
        if mode not in ("deliver", "reset", "blackhole"):
            raise ValueError(f"unknown heal mode {mode!r}")
        with self._cv:
            if not self._partitioned:
                return
            cut = [c for c in self._conns if c.generation == self._generation and c.fate == "live"]
            for c in cut:
                if mode != "deliver":
                    c.fate = mode
            self._partitioned = False
            self._trigger = None
            self._cv.notify_all()
        if mode == "reset":
            for c in cut:
                self._close(c)

    def connections(self) -> list[ProxyConn]:
        with self._cv:
            return list(self._conns)

    def close(self) -> None:
        """Stop listening and close every connection (an ordinary close, not a reset)."""
        with self._cv:
            self._closing = True
            self._partitioned = False
            self._cv.notify_all()
            conns = list(self._conns)
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
            with contextlib.suppress(OSError):
                self._listener.close()
        for c in conns:
            self._close(c)
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internal

    def _cut(self) -> None:
        if self._partitioned:
            return
        self._partitioned = True
        self._generation += 1
        self.partitions += 1
        for c in self._conns:
            if c.fate == "live":
                c.generation = self._generation

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()]
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        ident = 0
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            ident += 1
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = ProxyConn(ident=ident, client=client)
            with self._cv:
                if self._closing:
                    client.close()
                    return
                conn.generation = self._generation if self._partitioned else 0
                self._conns.append(conn)
            self._spawn(self._open, f"tcpproxy-{ident}", conn)

    def _open(self, conn: ProxyConn) -> None:
        # A connection made during a partition gets no further than the handshake with us.
        if not self._gate(conn, None):
            self._close(conn)
            return
        try:
            up = socket.create_connection(self.target, timeout=10)
        except OSError:
            self._close(conn)
            return
        up.settimeout(None)
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._cv:
            conn.upstream = up
            closed = conn.fate == "closed"
        if closed:
            self._close(conn)
            return
        self._spawn(self._pump, f"tcpproxy-{conn.ident}-down", conn, up, conn.client, False)
        self._pump(conn, conn.client, up, True)

    def _gate(self, conn: ProxyConn, chunk: bytes | None, *, upward: bool = False) -> bool:
        """Wait while ``conn`` is cut off. -> whether ``chunk`` may be forwarded now."""
        with self._cv:
            if upward and chunk is not None and self._trigger is not None and not self._partitioned:
                fire = False
                try:
                    fire = bool(self._trigger(conn, chunk))
                finally:
                    if fire:
                        self._trigger = None
                        self._cut()
                        self.triggered.set()
            held = False
            while True:
                if self._closing or conn.fate in ("reset", "closed"):
                    return False
                if conn.fate == "blackhole":
                    # The flow is gone for good: swallow this, and everything after it.
                    if chunk is not None:
                        self.held_chunks += 1
                    return False
                if not (self._partitioned and conn.generation == self._generation):
                    return True
                if not held and chunk is not None:
                    held = True
                    self.held_chunks += 1
                self._cv.wait()

    def _pump(self, conn: ProxyConn, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        while True:
            try:
                data = src.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                # EOF or error: passed on once the path is open (a FIN is held like data).
                self._gate(conn, None)
                self._close(conn)
                return
            if not self._gate(conn, data, upward=upward):
                if conn.fate == "blackhole":
                    continue  # keep reading and dropping; never close
                self._close(conn)
                return
            try:
                dst.sendall(data)
            except OSError:
                self._close(conn)
                return
            if upward:
                conn.sent_up += len(data)
            else:
                conn.sent_down += len(data)

    def _close(self, conn: ProxyConn) -> None:
        """Close both ends: a FIN each, or an RST each for a connection the heal reset."""
        with self._cv:
            if conn.fate == "blackhole" and not self._closing:
                return  # a blackholed flow is never closed: nobody would tell its ends
            reset = conn.fate == "reset"
            conn.fate = "reset" if reset else "closed"
            self._cv.notify_all()
        for s in (conn.client, conn.upstream):
            if s is None:
                continue
            with contextlib.suppress(OSError):
                if reset:  # SO_LINGER 0: close() sends an RST; SHUT_RD wakes a blocked recv
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.shutdown(socket.SHUT_RD)
                else:
                    s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
