"""Real upstream servers for the core tests: a TCP echo server in a thread,
and Python's own HTTP file server in a subprocess."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.helpers import free_port, wait_port


class EchoServer:
    """Echoes every byte back, prefixed once per connection with a banner
    naming the server, so a test can tell two upstreams apart."""

    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            if self.banner:
                conn.sendall(self.banner)
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(data)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@contextlib.contextmanager
def echo_server(banner: bytes = b"") -> Iterator[EchoServer]:
    server = EchoServer(banner)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def http_file_server(root: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield port
    finally:
        proc.terminate()
        proc.wait()
