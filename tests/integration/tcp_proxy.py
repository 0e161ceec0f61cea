"""A TCP proxy on a loopback port the test owns, in front of a real server.

Firewall rules go on the proxy's port (never on a server other tests share), and the
proxy knows the local ports of its upstream connections, so a test can pick out exactly
the server sessions that came through it (``pg_stat_activity.client_port``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

_CHUNK = 65536
#: Seconds a pump waits in select before looking at the stop flag again.
_TICK = 0.2


class TcpProxy:
    """Accepts on 127.0.0.1:``port`` and forwards each connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(_TICK)
        self.port = int(self._server.getsockname()[1])
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._upstream_ports: list[int] = []
        self._threads: list[threading.Thread] = []

    @property
    def upstream_ports(self) -> list[int]:
        """Local ports of every upstream connection made so far."""
        with self._lock:
            return list(self._upstream_ports)

    def start(self) -> None:
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._upstream_ports.append(int(up.getsockname()[1]))
            pump = threading.Thread(target=self._pump, args=(client, up), daemon=True)
            pump.start()
            self._threads.append(pump)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], _TICK)
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except OSError:
            return
        finally:
            for sock in peers:
                with contextlib.suppress(OSError):
                    sock.close()


@contextlib.contextmanager
def proxy(upstream: tuple[str, int]) -> Iterator[TcpProxy]:
    """A running proxy to ``upstream``, stopped (every connection closed) afterwards."""
    p = TcpProxy(upstream)
    p.start()
    try:
        yield p
    finally:
        p.stop()
