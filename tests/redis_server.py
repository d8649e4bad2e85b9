"""A real ``redis-server`` on 127.0.0.1 for tests: started, restarted and stopped here."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.net import free_port


class RedisServer:
    """``appendonly``: every write goes to the AOF, so a restart keeps every key (the chaos
    test restarts it mid-traffic); off, the server keeps nothing on disk."""

    def __init__(self, workdir: Path, *, appendonly: bool = False):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `make test` installs it (Debian package redis-server)")
        self._binary = binary
        self._workdir = workdir
        self._appendonly = appendonly
        self.port = free_port()
        self._process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._process = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self._appendonly else "no", "--appendfsync", "always", "--dir", str(self._workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self._answers_ping():
            if time.monotonic() > deadline or self._process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM: Redis finishes its AOF and exits, as an orchestrator would stop it."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
