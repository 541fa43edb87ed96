"""Helpers for tests that run the real daemon: free ports, waiting for a
listener, running ``hoopd`` as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

HOOPD = [sys.executable, "-m", "hoopd"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition not met in time")


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def hoopd(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run the ``hoopd`` CLI in a separate process, as a user would."""
    return subprocess.run([*HOOPD, *args], capture_output=True, text=True, timeout=120, **kw)


class Daemon:
    """``hoopd serve`` in a subprocess with a config written from a dict."""

    def __init__(
        self, workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.config_path = workdir / "hoopd.yaml"
        self.admin_port = free_port()
        config.setdefault("gateway", {})
        config["gateway"].setdefault("admin_listen", f"127.0.0.1:{self.admin_port}")
        config["gateway"].setdefault("data_dir", str(workdir / "var"))
        config["gateway"].setdefault("drain_timeout", "5s")
        self.config = config
        self.write_config(config)
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = workdir / "hoopd.log"

    def write_config(self, config: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def recordings(self) -> Path:
        return Path(self.config["gateway"]["data_dir"]) / "recordings"

    def start(self) -> Daemon:
        log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*HOOPD, "serve", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._log = log
        wait_port(self.admin_port, proc=self.proc)
        wait_for(lambda: http_get(self.url("/readyz"))[0] == 200 or self._dead(), 15)
        return self

    def _dead(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"hoopd exited {self.proc.returncode}:\n{self.log()}")
        return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.admin_port}{path}"

    def metrics(self) -> str:
        return http_get(self.url("/metrics"))[1].decode()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running(
    workdir: Path, config: dict[str, Any], env: dict[str, str] | None = None
) -> Iterator[Daemon]:
    daemon = Daemon(workdir, config, env).start()
    try:
        yield daemon
    finally:
        daemon.stop()


class WebhookReceiver:
    """Collects the JSON payloads the gateway's approval webhook posts."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_until_closed(sock: socket.socket, limit: float = 10) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes, and how long that took
    (``limit``: seconds to wait for each read)."""
    sock.settimeout(limit)
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


async def read_until_closed_async(
    reader: asyncio.StreamReader,
    limit: float = 10,
    tolerate: tuple[type[BaseException], ...] = (),
) -> tuple[bytes, float]:
    """``read_until_closed`` for an asyncio stream; an error in ``tolerate``
    counts as the close."""
    started = time.monotonic()
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), limit):
            data += chunk
    except tolerate:
        pass
    return data, time.monotonic() - started
