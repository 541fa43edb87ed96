"""`hoopd serve` end to end with the reference tcp protocol: real clients
(curl, sockets) through the daemon, recordings replayed and verified offline
on a copy of the files, metrics scraped with curl, signals."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from hoopd.tls import cert_pem, generate_ca, issue_certificate
from tests.core.upstreams import echo_server, http_file_server
from tests.helpers import Daemon, free_port, hoopd, running, wait_for, wait_port


def tcp_conn(name: str, port: int, upstream_port: int, **extra: Any) -> dict[str, Any]:
    conn = {
        "name": name,
        "protocol": "tcp",
        "listen": f"127.0.0.1:{port}",
        "upstream": {"host": "127.0.0.1", "port": upstream_port},
        "auth": "none",
    }
    conn.update(extra)
    return conn


def replay_json(directory: Path) -> list[dict[str, Any]]:
    result = hoopd("replay", "list", str(directory), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def ended_sessions(directory: Path, count: int = 1) -> list[dict[str, Any]]:
    """Wait until `count` sessions have written their end."""

    def ready() -> list[dict[str, Any]] | None:
        if not directory.exists():
            return None
        rows = replay_json(directory)
        done = [r for r in rows if r.get("end_reason")]
        return done if len(done) >= count else None

    return wait_for(ready, timeout=20, interval=0.2)


def echo_roundtrip(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_curl_through_tcp_is_recorded_and_replayable_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    body = os.urandom(300_000).hex().encode()
    (site / "data.txt").write_bytes(body)
    listen = free_port()
    with http_file_server(site) as upstream, running(
        tmp_path, {"connections": [tcp_conn("web", listen, upstream)]}
    ) as daemon:
        out = subprocess.run(
            ["curl", "-sS", "--fail", f"http://127.0.0.1:{listen}/data.txt"],
            capture_output=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == body
        [session] = ended_sessions(daemon.recordings)
        metrics = subprocess.run(
            ["curl", "-sS", daemon.url("/metrics")], capture_output=True, text=True, timeout=10
        ).stdout

    # The families an SRE scrapes, with this session counted.
    assert 'hoopd_sessions_total{connection="web",protocol="tcp"} 1.0' in metrics
    assert 'hoopd_sessions_active{connection="web",protocol="tcp"} 0.0' in metrics
    assert 'hoopd_decisions_total{connection="web",protocol="tcp",verdict="allow"} 1.0' in metrics
    bytes_out = next(
        line for line in metrics.splitlines()
        if line.startswith('hoopd_bytes_total{connection="web",direction="out"')
    )
    assert float(bytes_out.split()[-1]) > len(body)
    for family in (
        "hoopd_commands_total",
        "hoopd_approvals_pending",
        "hoopd_approval_wait_seconds",
        "hoopd_masked_values_total",
        "hoopd_recording_frames_total",
        "hoopd_recording_bytes_total",
        "hoopd_recording_errors_total",
        "hoopd_auth_failures_total",
        "hoopd_upstream_connect_seconds_bucket",
    ):
        assert f"# TYPE {family.removesuffix('_total').removesuffix('_bucket')}" in metrics, family
    assert "anonymous" not in metrics  # no user or session ids in labels
    assert session["session_id"] not in metrics

    # An analyst copies the files elsewhere: only the recordings and the public key.
    copy = tmp_path / "analyst"
    shutil.copytree(daemon.recordings, copy)
    shutil.rmtree(tmp_path / "var")
    [row] = replay_json(copy)
    assert row["user"] == "anonymous"
    assert row["connection"] == "web" and row["protocol"] == "tcp"
    assert row["verification"] == "ok"
    assert row["bytes"] >= len(body)

    verify = hoopd("replay", "verify", str(copy))
    assert verify.returncode == 0, verify.stdout + verify.stderr

    show = hoopd("replay", "show", str(copy), row["session_id"][:10])
    assert show.returncode == 0, show.stderr
    assert "ALLOW" in show.stdout and "anonymous" in show.stdout

    jsonl = hoopd("replay", "export", str(copy), row["session_id"], "--format", "jsonl")
    assert jsonl.returncode == 0, jsonl.stderr
    header, *events = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert header["type"] == "header" and header["verification"] == "ok"
    assert events[0]["type"] == "session_start"
    assert events[-1]["type"] == "session_end"
    assert any(e["type"] == "output" and e.get("stream") == "stdout" for e in events)
    assert any(e["type"] == "output" and e.get("stream") == "stdin" for e in events)

    cast = hoopd("replay", "export", str(copy), row["session_id"], "--format", "asciicast")
    assert cast.returncode == 0, cast.stderr
    header = json.loads(cast.stdout.splitlines()[0])
    assert header["version"] == 2

    # Tampering with the copy is detected and named.
    seg = sorted((copy / row["session_id"]).glob("*.hrec"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0x01
    seg.write_bytes(bytes(data))
    verify = hoopd("replay", "verify", str(copy))
    assert verify.returncode == 1
    assert seg.name in verify.stdout + verify.stderr


def _write_client_cert(tmp: Path, ca: Any, ca_key: Any, name: str, groups: tuple[str, ...]) -> tuple[Path, Path]:
    cert, key = issue_certificate(ca, ca_key, name, client=True, organizational_units=groups)
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}-key.pem"
    cert_path.write_bytes(cert_pem(cert))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_client_certificate_identifies_and_authorizes(tmp_path: Path) -> None:
    ca, ca_key = generate_ca("test client CA")
    ca_path = tmp_path / "client-ca.pem"
    ca_path.write_bytes(cert_pem(ca))
    alice = _write_client_cert(tmp_path, ca, ca_key, "alice", ("sre",))
    mallory = _write_client_cert(tmp_path, ca, ca_key, "mallory", ("marketing",))
    listen = free_port()
    conn = tcp_conn("secure", listen, 0, tls={"client_ca": str(ca_path)}, allow_groups=["sre"])
    conn.pop("auth")
    with echo_server() as upstream:
        conn["upstream"]["port"] = upstream.port
        with running(tmp_path, {"connections": [conn]}) as daemon:
            gateway_ca = tmp_path / "var" / "tls" / "ca.pem"

            def talk(cert: tuple[Path, Path] | None) -> bytes:
                ctx = ssl.create_default_context(cafile=str(gateway_ca))
                if cert:
                    ctx.load_cert_chain(*cert)
                with (
                    socket.create_connection(("127.0.0.1", listen), timeout=5) as raw,
                    ctx.wrap_socket(raw, server_hostname="localhost") as s,
                ):
                    s.sendall(b"ping\n")
                    return s.recv(100)

            assert talk(alice) == b"ping\n"
            # Without a certificate the handshake fails (with TLS 1.3 the client
            # learns it on its first read): nothing reaches the upstream.
            try:
                got: bytes | None = talk(None)
            except (ssl.SSLError, OSError):
                got = None
            assert got in (None, b"")
            assert talk(mallory) == b""  # accepted TLS, then refused by policy
            rows = ended_sessions(daemon.recordings, 2)
            metrics = daemon.metrics()

    by_user = {r["user"]: r for r in rows}
    assert by_user["alice"]["end_reason"] == "client_closed" or by_user["alice"]["end_reason"]
    assert by_user["mallory"]["end_reason"] == "denied"
    assert 'hoopd_sessions_refused_total{connection="secure",protocol="tcp",reason="denied"} 1.0' in metrics
    show = hoopd("replay", "show", str(daemon.recordings), by_user["mallory"]["session_id"])
    assert "DENY" in show.stdout and "no rule allows mallory on secure" in show.stdout


def test_sighup_reload_adds_changes_removes_without_dropping_sessions(tmp_path: Path) -> None:
    a_port, b_port = free_port(), free_port()
    with echo_server(b"one:") as one, echo_server(b"two:") as two:
        config = {"connections": [tcp_conn("a", a_port, one.port)]}
        with running(tmp_path, config) as daemon:
            live = socket.create_connection(("127.0.0.1", a_port), timeout=5)
            assert live.recv(4) == b"one:"

            # change a's upstream, add b
            config["connections"] = [tcp_conn("a", a_port, two.port), tcp_conn("b", b_port, one.port)]
            daemon.write_config(config)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: "config reloaded" in daemon.log(), 10)
            wait_port(b_port)
            assert echo_roundtrip(b_port, b"x") == b"one:x"
            assert echo_roundtrip(a_port, b"y") == b"two:y"
            live.sendall(b"still here")  # the session from before the reload goes on
            assert live.recv(100) == b"still here"

            # an invalid config is refused, with every problem logged; nothing changes
            bad = {"connections": [tcp_conn("a", a_port, 0), tcp_conn("b", b_port, one.port, listen="nowhere")]}
            daemon.write_config(bad)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: "reload refused" in daemon.log(), 10)
            log = daemon.log()
            assert "connections[0].upstream.port: must be 1..65535" in log
            assert "connections[1].listen: must be host:port" in log
            assert echo_roundtrip(b_port, b"z") == b"one:z"

            # remove b
            config["connections"] = [tcp_conn("a", a_port, two.port)]
            daemon.write_config(config)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: daemon.log().count("config reloaded") >= 2, 10)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", b_port), timeout=2)
            live.sendall(b"and still")
            assert live.recv(100) == b"and still"
            live.close()
            metrics = daemon.metrics()
    assert 'hoopd_config_reloads_total{result="ok"} 2.0' in metrics
    assert 'hoopd_config_reloads_total{result="invalid"} 1.0' in metrics


def test_sigterm_drains_then_ends_sessions_and_exits_zero(tmp_path: Path) -> None:
    port = free_port()
    with echo_server() as upstream:
        daemon = Daemon(tmp_path, {"gateway": {"drain_timeout": "1s"}, "connections": [tcp_conn("a", port, upstream.port)]})
        daemon.start()
        live = socket.create_connection(("127.0.0.1", port), timeout=5)
        live.sendall(b"hello")
        assert live.recv(5) == b"hello"
        started = time.monotonic()
        assert daemon.stop(timeout=20) == 0
        assert time.monotonic() - started < 15
        assert live.recv(100) == b""  # the gateway closed it
        live.close()
    [row] = replay_json(daemon.recordings)
    assert row["end_reason"] == "shutdown"
    assert hoopd("replay", "verify", str(daemon.recordings)).returncode == 0


def test_kill_9_leaves_a_verifiable_recording_up_to_the_tail(tmp_path: Path) -> None:
    port = free_port()
    with echo_server() as upstream:
        daemon = Daemon(tmp_path, {
            "recording": {"checkpoint_frames": 5, "fsync": "always"},
            "connections": [tcp_conn("a", port, upstream.port)],
        }).start()
        live = socket.create_connection(("127.0.0.1", port), timeout=5)
        for i in range(40):
            msg = f"line {i}\n".encode()
            live.sendall(msg)
            assert live.recv(100) == msg
        time.sleep(0.5)
        assert daemon.proc is not None
        daemon.proc.kill()
        daemon.proc.wait()
        live.close()
    verify = hoopd("replay", "verify", str(daemon.recordings))
    assert verify.returncode == 3, verify.stdout + verify.stderr  # incomplete / torn, not tampered
    [row] = replay_json(daemon.recordings)
    assert not row.get("end_reason")
    jsonl = hoopd("replay", "export", str(daemon.recordings), row["session_id"], "--format", "jsonl")
    events = [json.loads(line) for line in jsonl.stdout.splitlines()]
    stdout = b"".join(
        base64.b64decode(e["data"]["base64"])
        for e in events
        if e["type"] == "output" and e.get("stream") == "stdout"
    )
    assert b"line 39\n" in stdout or b"line 38\n" in stdout
