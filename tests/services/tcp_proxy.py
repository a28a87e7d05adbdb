"""A TCP forwarder standing in for a load balancer in front of service replicas.

Connections go to the current backend; ``switch`` points new connections at another
replica and cuts the open ones, as a Service does when a pod goes away.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from e2e_helpers import free_port


class TcpProxy:
    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            host, port = self.backend.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def switch(self, backend: str) -> None:
        """New connections go to ``backend``; open ones are cut."""
        self.backend = backend
        with self._lock:
            cut, self._open = self._open, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.switch(self.backend)
