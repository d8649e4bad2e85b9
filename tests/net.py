"""Loopback helpers for tests that start servers."""

from __future__ import annotations

import socket
import threading
import time

from functions.common.net import free_port

__all__ = ["SlowLink", "free_port"]


class SlowLink:
    """A TCP relay on 127.0.0.1 that lets uploads through at ``bytes_per_s`` (all connections
    together): a slow network, so a test can kill a client part-way through a transfer."""

    def __init__(self, target_port: int, bytes_per_s: int):
        self._target_port = target_port
        self._seconds_per_byte = 1.0 / bytes_per_s
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._budget_lock = threading.Lock()
        self._next_send_at = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def __enter__(self) -> SlowLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._closed = True
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, throttled: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if throttled:
                    with self._budget_lock:
                        send_at = max(self._next_send_at, time.monotonic())
                        self._next_send_at = send_at + len(chunk) * self._seconds_per_byte
                    time.sleep(max(0.0, send_at - time.monotonic()))
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
