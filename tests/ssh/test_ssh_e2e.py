"""Real OpenSSH clients through ``hoopd serve`` to a real OpenSSH server.

One sshd and one gateway serve the whole module (keeps the suite fast);
tests that need another config start their own gateway."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import socket
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hoopd.identity.tokens import GatewayTokens, load_or_create_token_key
from hoopd.model import AuthMethod, Identity
from tests.core.upstreams import http_file_server
from tests.helpers import Daemon, free_port, hoopd, running, wait_for, wait_port
from tests.ssh.harness import (
    SSH_OPTS,
    Sshd,
    have_openssh,
    keygen,
    popen_ssh,
    run_ssh,
    ssh_conn,
    sshd,
)

pytestmark = pytest.mark.skipif(not have_openssh(), reason="needs root, sshd and ssh")

SECRET = "hoopd-secret-0123456789abcdef"
MASKING = {"rules": [{"id": "test-secret", "pattern": "hoopd-secret-[0-9a-f]{16}"}]}


@dataclass
class Env:
    tmp: Path
    target: Sshd
    daemon: Daemon
    port: int
    nofwd_port: int
    token: str
    bob_key: Path
    web_port: int
    site: Path
    anon_port: int
    agent_port: int
    router_port: int
    x11_port: int
    x11_target_off_port: int



def replay_rows(directory: Path) -> list[dict[str, Any]]:
    result = hoopd("replay", "list", str(directory), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout.strip()
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def output_bytes(event: dict[str, Any]) -> bytes:
    data = event.get("data")
    return data if isinstance(data, bytes) else b""


def session_events(session_dir: Path) -> list[dict[str, Any]]:
    from recorder.replay import read_events

    recorded, _ = read_events(session_dir)
    return [
        {"type": r.event.type_name, "ts_ns": r.ts_ns, "session": session_dir.name, **r.event.to_record()}
        for r in recorded
    ]


def all_events(env: Env) -> list[dict[str, Any]]:
    """Every recorded event, once every session has written its end (the
    recorder writes in the background; tests read after their clients exit)."""
    from recorder.reader import list_session_dirs

    def read() -> list[dict[str, Any]] | None:
        evs: list[dict[str, Any]] = []
        for d in list_session_dirs(env.daemon.recordings):
            one = session_events(d)
            if not one or one[-1]["type"] != "session_end":
                return None
            evs += one
        return evs

    try:
        return wait_for(read, 10)
    except TimeoutError:
        evs: list[dict[str, Any]] = []
        for d in list_session_dirs(env.daemon.recordings):
            evs += session_events(d)
        return evs


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("ssh")
    bob_key = tmp / "bob_key"
    bob_pub = keygen(bob_key, "bob")
    site = tmp / "site"
    site.mkdir()
    (site / "data.bin").write_bytes(os.urandom(200_000))
    with sshd(tmp) as target, http_file_server(site) as web_port:
        port, nofwd, anon, agent, router, x11, x11_off = (free_port() for _ in range(7))
        keys = [{"key": bob_pub, "subject": "bob", "groups": ["ops"]}]
        config = {
            "connections": [
                ssh_conn(
                    "box", port, target,
                    # Held output is released after 300 ms of quiet (default 50 ms): the
                    # dribbled-secret tests sleep 4 ms per character, which a loaded
                    # 2-core CI machine can stretch well past 50 ms.
                    options={"authorized_keys": keys, "allow_port_forwarding": True, "output_flush": "300ms"},
                    masking=MASKING,
                    risk={"review_at": "high", "rules": [
                        {"pattern": "^forbidden-cmd", "action": "deny"},
                        {"id": "no-tunnel-to-9", "pattern": "^direct-tcpip .*:9$", "action": "deny"},
                    ]},
                    approval={"timeout": "60s"},
                ),
                ssh_conn("nofwd", nofwd, target, options={"authorized_keys": keys, "file_transfer": False}),
                ssh_conn("anon", anon, target, auth="none", allow_groups=[]),
                ssh_conn("agentfwd", agent, target,
                         options={"authorized_keys": keys, "allow_agent_forwarding": True}),
                ssh_conn("router", router, target,
                         options={"authorized_keys": keys, "route_by_login": ["box", "nofwd"]}),
                ssh_conn("x11fwd", x11, target, options={"authorized_keys": keys, "allow_x11_forwarding": True}),
                ssh_conn("x11-target-off", x11_off, target, target_port=target.no_x11_port,
                         options={"authorized_keys": keys, "allow_x11_forwarding": True}),
            ]
        }
        key = load_or_create_token_key(tmp / "var" / "token_key.ed25519")
        token = GatewayTokens(key).issue("alice", ["ops"], "1h")
        with running(tmp, config) as daemon:
            yield Env(tmp, target, daemon, port, nofwd, token, bob_key, web_port, site, anon, agent, router,
                      x11, x11_off)


def key_ssh(env: Env, port: int, *args: str, user: str = "bob") -> list[str]:
    return ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(env.bob_key),
            "-p", str(port), *args[:-1], f"{user}@127.0.0.1", args[-1]]


# -- exec ------------------------------------------------------------------------


def test_exec_streams_exit_code_and_stdin_eof(env: Env) -> None:
    r = run_ssh(env.port, env.token, "echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")
    r = run_ssh(env.port, env.token, "wc -l; echo after-eof", input=b"line1\nline2\n")
    assert (r.returncode, r.stdout) == (0, b"2\nafter-eof\n")
    payload = os.urandom(3_000_000).hex().encode()
    r = run_ssh(env.port, env.token, "sha256sum", input=payload)
    assert r.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_exec_exit_signal(env: Env) -> None:
    r = run_ssh(env.port, env.token, "kill -TERM $$")
    assert r.returncode == 255  # what OpenSSH reports for a remote signal (same as direct)


def test_bad_token_is_refused(env: Env) -> None:
    r = run_ssh(env.port, "hgt1.nope.nope", "echo should-not-run")
    assert r.returncode == 5  # sshpass: the password was refused
    assert b"should-not-run" not in r.stdout


def test_public_key_identity(env: Env) -> None:
    r = subprocess.run(key_ssh(env, env.port, "echo $SSH_CONNECTION >/dev/null; echo hi"), capture_output=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr
    other = env.tmp / "stranger"
    keygen(other, "stranger")
    r = subprocess.run(
        ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(other),
         "-p", str(env.port), "bob@127.0.0.1", "true"], capture_output=True, timeout=30)
    assert r.returncode == 255 and b"Permission denied" in r.stderr


def test_ssh_cert_from_token(env: Env) -> None:
    key = env.tmp / "carol_key"
    keygen(key, "carol")
    issued = hoopd("ssh-cert", "-c", str(env.daemon.config_path), "--token", env.token,
                   "--pubkey", str(key) + ".pub", "--ttl", "10m")
    assert issued.returncode == 0, issued.stderr
    cert = Path(str(key) + "-cert.pub")
    assert cert.exists()
    base = ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
            "-o", f"CertificateFile={cert}", "-p", str(env.port)]
    r = subprocess.run([*base, "alice@127.0.0.1", "echo cert-ok"], capture_output=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, b"cert-ok\n"), r.stderr
    # the principal is enforced
    r = subprocess.run([*base, "mallory@127.0.0.1", "true"], capture_output=True, timeout=30)
    assert r.returncode == 255
    bad = hoopd("ssh-cert", "-c", str(env.daemon.config_path), "--token", "hgt1.x.y",
                "--pubkey", str(key) + ".pub", "-o", "-")
    assert bad.returncode == 1 and "not accepted" in bad.stderr


def test_secret_paused_mid_value_is_masked_in_exec(env: Env) -> None:
    """Exec without a terminal: output held for masking is not released on a
    timer (exec_output_flush unset), so a target that stops in the middle of
    a secret for longer than output_flush (300 ms here) cannot leak its first
    half. Before that was the default it escaped as two harmless-looking halves."""
    half = len(SECRET) // 2
    r = run_ssh(env.port, env.token, f"printf 'token={SECRET[:half]}'; sleep 1; printf '{SECRET[half:]} done\\n'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"token=[") and r.stdout.endswith(b"] done\n"), r.stdout
    assert SECRET[:half].encode() not in r.stdout and SECRET[half:].encode() not in r.stdout


def test_secret_highlighted_by_grep_color_is_masked(env: Env) -> None:
    """grep --color highlighting part of a secret wrote it with colour
    escapes in the middle: the terminal showed the whole secret, no masking
    pattern matched it, and it reached the client and the recording."""
    pre, value = SECRET[:13], SECRET[13:]
    r = run_ssh(env.port, env.token, f"f=$(mktemp); printf '%s%s\\n' {pre} {value} > $f; "
                f"grep --color=always {value[:6]} $f; rm -f $f")
    assert r.returncode == 0, r.stderr
    shown = re.sub(rb"\x1b\[[0-9;]*[mK]", b"", r.stdout)  # what the terminal shows
    assert b"[TEST_SECRET]" in shown and value[6:].encode() not in shown, r.stdout
    out = b"".join(output_bytes(e) for e in all_events(env) if e["type"] == "output")
    assert value[6:].encode() not in re.sub(rb"\x1b\[[0-9;]*[mK]", b"", out)


def test_secret_printed_one_char_at_a_time_is_masked(env: Env) -> None:
    script = (
        "import sys, time\n"
        f"for c in 'token={SECRET} done\\n':\n"
        "    sys.stdout.write(c); sys.stdout.flush(); time.sleep(0.004)\n"
    )
    r = run_ssh(env.port, env.token, f"python3 -c \"{script}\"")
    assert r.returncode == 0, r.stderr
    assert SECRET.encode() not in r.stdout
    assert r.stdout.startswith(b"token=") and r.stdout.endswith(b" done\n")


def test_bulk_exec_output_is_masked_sent_and_recorded_whole(env: Env) -> None:
    """Exec output without a terminal is batched per event-loop pass (several
    SSH packets per masker call): secrets inside long lines, between stdout
    and stderr writes, are masked; nothing is lost, reordered or sent
    unrecorded; the recording holds exactly what the client received."""
    marker = f"bulk-{os.getpid()}-{time.monotonic_ns()}"
    script = (
        "import sys\n"
        "o, e = sys.stdout.buffer, sys.stderr.buffer\n"
        "for i in range(12):\n"
        "    o.write(b'y' * 70000 + b' token=" + SECRET + " ')\n"
        "    o.flush()\n"
        "    e.write(b'err%d\\n' % i)\n"
        "    e.flush()\n"
        "o.write(b'tail token=" + SECRET + "')\n"
    )
    r = run_ssh(env.port, env.token, f"python3 -c \"{script}\" # {marker}")
    assert r.returncode == 0, r.stderr
    assert SECRET.encode() not in r.stdout
    assert r.stdout.count(b"y") == 12 * 70000
    assert r.stdout.count(b" token=[SECRET] ") == 12
    assert r.stdout.startswith(b"y" * 70000 + b" token=[")
    assert r.stdout.endswith(b" tail token=[SECRET]")
    assert r.stderr == b"".join(b"err%d\n" % i for i in range(12))
    events = all_events(env)
    cmd = next(e for e in events if e["type"] == "command" and marker in e["text"])
    mine = [e for e in events if e["session"] == cmd["session"] and e["type"] == "output"
            and e.get("command_seq") == cmd["seq"]]
    for stream, got in (("stdout", r.stdout), ("stderr", r.stderr)):
        assert b"".join(output_bytes(e) for e in mine if e["stream"] == stream) == got


def test_denied_by_rule(env: Env) -> None:
    r = run_ssh(env.port, env.token, "forbidden-cmd --now")
    assert r.returncode == 126
    assert b"hoopd: command refused" in r.stderr


def test_routing_by_login_name(env: Env) -> None:
    """One listener, several targets: the login name picks the connection
    (options.route_by_login) and that connection's settings apply; other
    login names get the listener's own connection."""
    def ssh(user: str, command: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(key_ssh(env, env.router_port, command, user=user),
                              capture_output=True, timeout=30)

    r = ssh("box", "echo via-box")
    assert (r.returncode, r.stdout) == (0, b"via-box\n"), r.stderr
    r = ssh("box", "forbidden-cmd --routed")  # box's risk rule, not the router's
    assert r.returncode == 126 and b"hoopd: command refused" in r.stderr
    r = ssh("bob", "forbidden-cmd --unrouted; echo router-has-no-such-rule")
    assert r.stdout == b"router-has-no-such-rule\n"
    r = subprocess.run(  # nofwd does not allow file transfer, the router does
        ["scp", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(env.bob_key),
         "-P", str(env.router_port), "nofwd@127.0.0.1:/etc/hostname", str(env.tmp / "routed-x")],
        capture_output=True, timeout=30)
    assert r.returncode != 0 and not (env.tmp / "routed-x").exists()
    events = all_events(env)
    sessions = {(e["attrs"].get("login"), e["connection"]) for e in events if e["type"] == "session_start"}
    assert {("box", "box"), ("nofwd", "nofwd"), ("bob", "router")} <= sessions
    assert ("box", "router") not in sessions and ("nofwd", "router") not in sessions


def _approvals_store(env: Env) -> Any:
    from hoopd.approvals.sqlite import SQLiteStore

    return SQLiteStore(env.tmp / "var" / "state.sqlite3")


def _decide_pending(env: Env, approve: bool) -> str:
    async def go() -> str:
        store = _approvals_store(env)
        try:
            deadline = time.monotonic() + 20
            while True:
                pending = await store.list(state="pending")
                if pending:
                    break
                assert time.monotonic() < deadline, "no approval was requested"
                await asyncio.sleep(0.1)
            approval = pending[0]
            reviewer = Identity("rita", frozenset({"reviewers"}), AuthMethod.GATEWAY_TOKEN)
            await store.decide(approval.id, reviewer, approve, "test")
            return str(approval.id)
        finally:
            await store.close()

    return asyncio.run(go())


def _pending_approvals(env: Env) -> int:
    async def go() -> int:
        store = _approvals_store(env)
        try:
            return len(await store.list(state="pending"))
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.mark.parametrize("approve", [True, False])
def test_held_rm_rf(env: Env, approve: bool) -> None:
    victim = env.tmp / f"victim-{approve}"
    (victim / "sub").mkdir(parents=True)
    proc = popen_ssh(env.port, env.token, f"rm -rf {victim} && echo removed")
    approval_id = _decide_pending(env, approve)
    out, err = proc.communicate(timeout=30)
    assert approval_id.encode() in err  # the user was told which approval to ask for
    if approve:
        assert proc.returncode == 0, err
        assert out == b"removed\n"
        assert not victim.exists()
    else:
        assert proc.returncode == 126
        assert b"command refused" in err and b"denied by rita" in err
        assert victim.exists()


# Exec commands the bash on the target runs as rm -rf DIR, which the scorer
# once read as something else and let through without a reviewer.
DISGUISED_RM = [
    "$'rm' -rf {d}",
    "$'\\x72m' -rf {d}",
    "rm${{IFS}}-rf${{IFS}}{d}",
    "{{rm,-rf,{d}}}",
    "echo ${{v:-$(rm -rf {d})}}",
    "echo 'rm -rf {d}' | sh",
    "sh <<< 'rm -rf {d}'",
    "time -p rm -rf {d}",
    "setsid -w rm -rf {d}",
    "trap 'rm -rf {d}' EXIT",
    "runuser -u root -- rm -rf {d}",
    "r=rm; $r -rf {d}",
    "find {d} -maxdepth 0 -exec sh -c 'rm -rf \"$1\"' _ {{}} \\;",
]


def test_disguised_rm_rf_in_exec_is_held(env: Env) -> None:
    victim = env.tmp / "disguised-victim"
    (victim / "sub").mkdir(parents=True)
    for template in DISGUISED_RM:
        command = "exec bash -c " + shlex.quote(template.format(d=victim))  # sshd runs the root's shell
        proc = popen_ssh(env.port, env.token, command)
        try:
            _decide_pending(env, False)
        except AssertionError:
            proc.communicate(timeout=30)
            raise AssertionError(f"{template!r} was not held; {victim} exists: {victim.exists()}") from None
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 126 and b"command refused" in err, (template, err)
        assert victim.exists(), template


# -- file transfer ---------------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_sftp_and_scp_both_ways(env: Env) -> None:
    src = env.tmp / "upload.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    remote = env.tmp / "remote"
    remote.mkdir()
    batch = env.tmp / "batch"
    batch.write_text(
        f"put {src} {remote}/a.bin\nget {remote}/a.bin {env.tmp}/back-sftp.bin\n"
        f"rename {remote}/a.bin {remote}/b.bin\nrm {remote}/b.bin\n"
    )
    sftp = ["sftp", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(env.bob_key),
            "-P", str(env.port), "-b", str(batch), "bob@127.0.0.1"]
    r = subprocess.run(sftp, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert _md5(env.tmp / "back-sftp.bin") == _md5(src)
    for legacy in ([], ["-O"]):
        scp = ["scp", *legacy, *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
               "-i", str(env.bob_key), "-P", str(env.port)]
        name = "c-legacy.bin" if legacy else "c.bin"
        r = subprocess.run([*scp, str(src), f"bob@127.0.0.1:{remote}/{name}"], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        back = env.tmp / f"back-{name}"
        r = subprocess.run([*scp, f"bob@127.0.0.1:{remote}/{name}", str(back)], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert _md5(remote / name) == _md5(src) == _md5(back)
    # file operations are in the recording, with paths and sizes
    texts = {e["text"]: e for e in all_events(env) if e["type"] == "command"}
    assert f"sftp open {remote}/a.bin (write,create,truncate)" in texts
    assert f"sftp rename {remote}/a.bin -> {remote}/b.bin" in texts
    assert f"sftp remove {remote}/b.bin" in texts
    results = [e for e in all_events(env) if e["type"] == "result"]
    assert any(f"written={src.stat().st_size}" in r["status"] for r in results)
    assert any(f"read={src.stat().st_size}" in r["status"] for r in results)
    assert any(t.startswith("scp -t") for t in texts)  # legacy scp upload is an exec
    size = src.stat().st_size
    assert f"scp upload upload.bin -> {remote}/c-legacy.bin ({size} bytes)" in texts
    assert f"scp download {remote}/c-legacy.bin: c-legacy.bin ({size} bytes)" in texts


def test_rsync_over_ssh_both_ways(env: Env) -> None:
    """rsync -e ssh: an exec of ``rsync --server`` carried unmasked (binary),
    recorded as a transfer command; the files arrive identical."""
    ssh_cmd = " ".join(["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                        "-i", str(env.bob_key), "-p", str(env.port)])
    src = env.tmp / "rsync-src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(700_000))
    (src / "b.txt").write_text("hoopd rsync\n" * 1000)
    remote = env.tmp / "rsync-remote"
    back = env.tmp / "rsync-back"
    for args in ([f"{src}/", f"bob@127.0.0.1:{remote}/"], [f"bob@127.0.0.1:{remote}/", f"{back}/"]):
        r = subprocess.run(["rsync", "-a", "-e", ssh_cmd, *args], capture_output=True, timeout=60)
        assert r.returncode == 0, r.stderr
    for name in ("a.bin", "b.txt"):
        want = (src / name).read_bytes()
        assert (remote / name).read_bytes() == want and (back / name).read_bytes() == want
    transfers = [e for e in all_events(env) if e["type"] == "command" and e["text"].startswith("rsync --server")]
    assert len(transfers) >= 2 and all(e["attrs"]["transfer"] is True for e in transfers)


def test_tar_over_ssh_is_a_transfer(env: Env) -> None:
    """ssh host 'tar cf - ...' streams an archive: not masked (that would
    corrupt it), so a file holding a secret arrives intact and the command is
    recorded as a transfer."""
    src = env.tmp / "tar-src"
    src.mkdir(exist_ok=True)
    (src / "notes.txt").write_bytes(f"token {SECRET} end\n".encode() + os.urandom(20_000))
    r = subprocess.run(key_ssh(env, env.port, f"tar cf - -C {src} notes.txt"), capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = env.tmp / "tar-out"
    out.mkdir(exist_ok=True)
    subprocess.run(["tar", "xf", "-", "-C", str(out)], input=r.stdout, check=True)
    assert (out / "notes.txt").read_bytes() == (src / "notes.txt").read_bytes()
    commands = [e for e in all_events(env) if e["type"] == "command" and e["text"].startswith("tar cf -")]
    assert commands and commands[-1]["attrs"]["transfer"] is True


def test_file_transfer_refused_when_off(env: Env) -> None:
    r = subprocess.run(
        ["scp", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(env.bob_key),
         "-P", str(env.nofwd_port), "bob@127.0.0.1:/etc/hostname", str(env.tmp / "x")],
        capture_output=True, timeout=30)
    assert r.returncode != 0


# -- port forwarding ---------------------------------------------------------------


def _fetch(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /data.bin HTTP/1.0\r\nHost: x\r\n\r\n")
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("allowed", [True, False])
def test_local_forwarding(env: Env, allowed: bool) -> None:
    lport = free_port()
    port = env.port if allowed else env.nofwd_port
    proc = subprocess.Popen(
        key_ssh(env, port, "-N", "-L", f"{lport}:127.0.0.1:{env.web_port}", "-"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_port(lport, proc=proc)
        body = _fetch(lport)
        expected = (env.site / "data.bin").read_bytes()
        if allowed:
            assert body.endswith(expected)
        else:
            assert expected not in body
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    wait_for(lambda: [e for e in all_events(env) if e["type"] == "command" and e["text"].startswith("direct-tcpip")], 10)
    if not allowed:
        wait_for(lambda: [e for e in all_events(env) if e["type"] == "result" and e["status"] == "refused"], 10)


def test_changed_host_key_refuses(tmp_path: Path, env: Env) -> None:
    other = tmp_path / "other"
    wrong = keygen(other, "wrong")
    port = free_port()
    conn = ssh_conn("pinned", port, env.target)
    conn["upstream"]["host_key"] = wrong
    key = load_or_create_token_key(tmp_path / "var" / "token_key.ed25519")
    token = GatewayTokens(key).issue("alice", ["ops"], "1h")
    with running(tmp_path, {"connections": [conn]}):
        r = run_ssh(port, token, "echo should-not-run")
    assert r.returncode != 0
    assert b"should-not-run" not in r.stdout
    assert b"host key does not match" in r.stderr


# -- interactive terminal ------------------------------------------------------------


class Term:
    def __init__(self, argv: list[str], rows: int, cols: int) -> None:
        self.master, slave = os.openpty()
        self.resize(rows, cols, fd=slave)
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.buf = b""

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, pattern: bytes, timeout: float = 15) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{pattern!r} not seen; got {self.buf[-600:]!r}")
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                with contextlib.suppress(OSError):
                    self.buf += os.read(self.master, 65536)

    def wait(self, timeout: float = 15) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.1)
            if r:
                with contextlib.suppress(OSError):
                    self.buf += os.read(self.master, 65536)
        os.close(self.master)
        return self.proc.wait(1)


@contextlib.contextmanager
def shell(env: Env) -> Iterator[Term]:
    """A terminal on a PTY shell through the gateway, its prompt set to
    ``PS> `` and seen; the ssh client is killed if the test fails first."""
    term = Term(key_ssh(env, env.port, "-tt", "")[:-1], 30, 100)
    try:
        term.send(b"PS1='P''S> '\r")
        term.expect(b"PS> ")
        yield term
    finally:
        if term.proc.poll() is None:
            term.proc.kill()


def test_pty_shell(env: Env) -> None:
    with shell(env) as term:
        term.send(b"stty size\r")
        term.expect(b"30 100")
        term.resize(43, 132)
        time.sleep(0.3)
        term.send(b"stty size\r")
        term.expect(b"43 132")
        term.send(b"sleep 30\r")
        time.sleep(0.5)
        started = time.monotonic()
        term.send(b"\x03")
        term.expect(b"PS> ")
        assert time.monotonic() - started < 5
        # a secret dribbled one character at a time by the target is masked on the terminal too
        term.send(
            f"for c in $(echo {' '.join(SECRET)}); do printf %s $c; sleep 0.004; done; echo\r".encode()
        )
        term.expect(rb"\[TEST_SECRET\]")
        term.expect(b"PS> ")
        term.send(b"echo ok-$((6*7))\r")
        term.expect(b"ok-42")
        # a risky line is held, then dropped when denied
        term.send(b"rm -rf /tmp/hoopd-pty-victim\r")
        _decide_pending(env, False)
        term.expect(b"command refused")
        term.expect(b"PS> ")
        term.send(b"echo after-deny\r")
        term.expect(b"after-deny")
        victim = env.tmp / "pty-victim"
        victim.mkdir()
        term.send(f"rm -rf {victim} && echo gone-$((1+1))\r".encode())
        _decide_pending(env, True)
        term.expect(b"gone-2")
        assert not victim.exists()
        # Ctrl-C while a line is held cancels it
        keep = env.tmp / "pty-keep"
        keep.mkdir()
        term.send(f"rm -rf {keep}\r".encode())
        term.expect(b"needs a reviewer")
        term.send(b"\x03")
        term.expect(b"cancelled; the line was not run")
        term.expect(b"PS> ")
        term.send(b"echo after-$((2+3))\r")
        term.expect(b"after-5")
        assert keep.exists()
        _decide_pending(env, False)  # tidy: the abandoned approval
        # editing with cursor keys cannot smuggle a risky line past the gateway:
        # typed "echo rm -rf DIR", then Home and 5 x Delete -> the shell runs rm -rf DIR
        term.send(f"echo rm -rf {keep}".encode())
        term.expect(keep.name.encode())
        term.send(b"\x01" + b"\x1b[3~" * 5)
        time.sleep(0.3)
        term.send(b"\r")
        term.expect(b"needs a reviewer")
        _decide_pending(env, False)
        term.expect(b"command refused")
        term.expect(b"PS> ")
        term.send(b"echo after-$((3+4))\r")
        term.expect(b"after-7")
        assert keep.exists()
        term.send(b"exit 5\r")
        assert term.wait() == 5
    evs = all_events(env)
    lines = [e["text"] for e in evs if e["type"] == "command" and e["kind"] == "shell-line"]
    assert "stty size" in lines and "sleep 30" in lines and "echo ok-$((6*7))" in lines
    assert any(e["type"] == "resize" and (e["cols"], e["rows"]) == (132, 43) for e in evs)
    out = b"".join(output_bytes(e) for e in evs if e["type"] == "output")
    assert SECRET.encode() not in out
    assert b"ok-42" in out
    # the terminal session replays as it looked: asciicast with size and resizes
    [sid] = {e["session"] for e in evs if e["type"] == "command" and e["text"] == "stty size"}
    cast = hoopd("replay", "export", str(env.daemon.recordings), sid, "--format", "asciicast")
    assert cast.returncode == 0, cast.stderr
    header, *frames = [json.loads(line) for line in cast.stdout.splitlines()]
    assert (header["width"], header["height"]) == (100, 30)
    assert [132, 43] in [[int(x) for x in f[2].split("x")] for f in frames if f[1] == "r"]
    assert any("ok-42" in f[2] for f in frames if f[1] == "o")
    assert all(SECRET not in f[2] for f in frames)


def test_pty_keys_typed_ahead_of_a_dropped_line(env: Env) -> None:
    """Keys typed while a line is held, or with the Ctrl-C that cancels it,
    reach the shell only once it has dropped that line: they run as typed,
    and never join (what is left of) the refused line."""
    keep = env.tmp / "pty-typeahead-keep"
    keep.mkdir()
    with shell(env) as term:
        for i in range(6):
            term.send(f"rm -rf {keep}\r".encode())
            term.expect(b"needs a reviewer")
            if i % 2:
                term.send(f"\x03echo ahead-$((100+{i}))\r".encode())
                term.expect(b"cancelled; the line was not run")
            else:
                term.send(f"echo ahead-$((100+{i}))\r".encode())
                _decide_pending(env, False)
                term.expect(b"command refused")
            seen = term.expect(rb"ahead-1\d\d|command not found")
            assert seen[0] == f"ahead-{100 + i}".encode(), term.buf
            term.expect(b"PS> ")
            if i % 2:
                _decide_pending(env, False)  # tidy: the abandoned approval
        term.send(b"exit 3\r")
        assert term.wait() == 3
    assert keep.exists()


# Keys a line editor (or a canonical tty) obeys that the gateway once took
# for plain typing, so each line below ran ``rm -rf DIR`` without a reviewer.
UNSEEN_EDITS = {
    "ctrl-o runs the line": lambda d: [f"rm -rf {d}\x0f"],
    "home, ctrl-u kills nothing": lambda d: [f"rm -rf {d}\x01\x15\r"],
    "ctrl-u, then undo": lambda d: [f"rm -rf {d}\x15\x1f\r"],
    "ctrl-u, then ctrl-x ctrl-u": lambda d: [f"rm -rf {d}\x15\x18\x15\r"],
    "ctrl-v makes ctrl-u a character": lambda d: [f"rm -rf {d} \x16\x15\r"],
    "ctrl-x ctrl-x jumps to the start": lambda d: [f" -rf {d}\x18\x18rm\r"],
    "redrawn in place (insert/delete char)": lambda d: [f"xm -rf {d}\x01\x04r\r"],
    # the parser took $'\'' in $(...) for an open quote: the line waited, unjudged,
    # for a continuation, while bash ran it
    "a line the parser read as unfinished": lambda d: [f"rm -rf {d}; echo $(echo $'\\'')\r"],
    # and whatever the parser holds unfinished is judged as far as it goes
    "an unfinished line": lambda d: [f"rm -rf {d}; echo 'open\r"],
    # history expansion and fc make the line from earlier ones: echo rm -rf DIR, then...
    "history words (!:1*)": lambda d: [f"echo rm -rf {d}\r", "!:1*\r"],
    "quick substitution (^echo ^)": lambda d: [f"echo rm -rf {d}\r", "^echo ^\r"],
    "fc -s": lambda d: [f"echo rm -rf {d}\r", "fc -s 'echo rm=rm'\r"],
    # Ctrl-X Ctrl-E runs what the editor leaves: here the editor turns "echo rm" into "rm"
    "edit-and-execute (ctrl-x ctrl-e)": lambda d: ["export EDITOR='sed -i s/^echo.//'\r",
                                                   f"echo rm -rf {d}\x18\x05"],
    # re-binding keys: after these a key ran the line, a macro typed one, Ctrl-U erased a word
    "bind a key to accept-line": lambda d: ["bind '\"z\": accept-line'\r"],
    "bind a macro": lambda d: [f"bind '\"\\eq\": \"rm -rf {d}\\n\"'\r"],
    "stty werase": lambda d: ["stty werase ^U\r"],
    # sh (dash) reads a canonical tty: Ctrl-D hands the line over, a second one ends input
    "ctrl-d ends the line in sh": lambda d: ["sh\r", f"rm -rf {d}\x04"],
}


def test_pty_keys_that_edit_or_run_a_line_unseen(env: Env) -> None:
    """Ctrl-O, undo, literal-next, the Ctrl-X prefix, a Ctrl-U after the
    cursor moved, a line redrawn with insert/delete-character and Ctrl-D in
    a canonical tty (dash) all left the gateway with a harmless (or no) line
    while the shell ran ``rm -rf DIR``: each is now held."""
    keep = env.tmp / "pty-unseen-keep"
    keep.mkdir()
    with shell(env) as term:
        for name, keys in UNSEEN_EDITS.items():
            parts = keys(keep)
            for part in parts[:-1]:
                term.send(part.encode())
                time.sleep(1)
            for ch in parts[-1].encode():  # key by key, as typed
                term.send(bytes([ch]))
                time.sleep(0.005)
            try:
                term.expect(b"needs a reviewer", 10)
            except AssertionError:
                raise AssertionError(f"{name}: not held; {keep} exists: {keep.exists()}") from None
            _decide_pending(env, False)
            term.expect(b"command refused")
            if parts[0] == "sh\r":  # leave sh
                time.sleep(0.5)
                term.send(b"exit\r")
            term.expect(b"PS> ")
            assert keep.exists(), name
        term.send(b"echo after-$((4+4))\r")
        term.expect(b"after-8")
        term.send(b"exit 4\r")
        assert term.wait() == 4
    assert keep.exists()


def test_pty_alternate_screen_stops_tracking_only_for_full_screen_programs(env: Env) -> None:
    """Keys typed in a full-screen program (less, vim) are not shell lines.
    But the switch to the alternate screen is output anyone can print:
    after printf '\\e[?1049h' the shell ran rm -rf DIR untracked."""
    keep = env.tmp / "pty-altscreen-keep"
    keep.mkdir()
    with shell(env) as term:
        term.send(b"printf '\\e[?1049h'\r")
        term.expect(b"PS> ")
        term.send(f"rm -rf {keep}\r".encode())
        term.expect(b"needs a reviewer")
        _decide_pending(env, False)
        term.expect(b"command refused")
        term.expect(b"PS> ")
        term.send(b"printf '\\e[?1049l'\r")
        term.expect(b"PS> ")
        # in less, "/rm -rf x" Enter is a search, not a line to hold
        term.send(b"seq 1 200 | less\r")
        term.expect(b"\\x1b\\[\\?1049h")
        time.sleep(0.5)
        term.send(b"/rm -rf x\r")
        time.sleep(1.5)
        term.send(b"q")
        term.expect(b"PS> ")
        assert not _pending_approvals(env), "a search typed in less was held"
        term.send(b"echo after-$((5+5))\r")
        term.expect(b"after-10")
        term.send(b"exit\r")
        term.wait()
    assert keep.exists()


def test_terminal_lines_recorded_with_an_edited_line_are_masked(env: Env) -> None:
    """A line edited or recalled (here: Up, Enter) is recorded with the last
    lines the terminal showed (attribute ``shown``), taken from the target's
    output: a secret printed just before was recorded there unmasked."""
    pre, value = SECRET[:13], SECRET[13:]
    with shell(env) as term:
        term.send(f"printf '%s%s\\n' {pre} {value}\r".encode())
        term.expect(b"PS> ")
        term.send(b"\x1b[A")
        time.sleep(0.5)
        term.send(b"\r")
        term.expect(b"PS> ")
        term.send(b"exit\r")
        term.wait()
    evs = all_events(env)
    recalled = [e for e in evs if e["type"] == "command" and e.get("attrs", e).get("uncertain")
                and "printf '%s%s" in e["text"]]
    assert recalled, "the recalled line was not recorded as uncertain"
    mine = [e for e in evs if e["type"] == "command" and e["session"] == recalled[0]["session"]]
    assert SECRET not in json.dumps(mine, default=str)


def test_credential_expiry_ends_the_session(env: Env) -> None:
    key = load_or_create_token_key(env.tmp / "var" / "token_key.ed25519")
    short = GatewayTokens(key).issue("alice", ["ops"], 2)
    started = time.monotonic()
    r = run_ssh(env.port, short, "sleep 20; echo not-reached")
    assert time.monotonic() - started < 12
    assert b"not-reached" not in r.stdout
    assert b"credential has expired" in r.stderr


def test_revoked_token_ends_the_session_and_is_refused(env: Env) -> None:
    """hoopd token revoke (on the gateway host, into the state store): the
    live session that logged in with the token ends, the token no longer logs
    in, and the other tokens of the subject still do."""
    key = load_or_create_token_key(env.tmp / "var" / "token_key.ed25519")
    leaked = GatewayTokens(key).issue("dave", ["ops"], "1h")
    spare = GatewayTokens(key).issue("dave", ["ops"], "1h")
    live = popen_ssh(env.port, leaked, "echo started; sleep 20; echo not-reached", user="dave")
    try:
        assert live.stdout is not None and live.stdout.readline() == b"started\n"
        started = time.monotonic()
        out = hoopd("token", "revoke", "-c", str(env.daemon.config_path), "--token", leaked,
                    "--reason", "pasted in a chat")
        assert out.returncode == 0 and "revoked token" in out.stdout, out.stdout + out.stderr
        rest, err = live.communicate(timeout=30)
    finally:
        live.kill()
    assert time.monotonic() - started < 15
    assert b"not-reached" not in rest
    assert b"revoked" in err, err
    assert run_ssh(env.port, leaked, "echo again").returncode == 5  # refused at login
    assert run_ssh(env.port, spare, "echo spare").stdout == b"spare\n"
    listed = hoopd("token", "revocations", "-c", str(env.daemon.config_path), "--json")
    assert any(r["reason"] == "pasted in a chat" for r in json.loads(listed.stdout))


@contextlib.contextmanager
def ssh_agent(env: Env, name: str) -> Iterator[tuple[dict[str, str], str]]:
    """A running ssh-agent holding one new key: (client environment, the
    key's fingerprint as ``ssh-add -l`` prints it)."""
    sock = env.tmp / f"{name}.sock"
    key = env.tmp / f"{name}_key"
    keygen(key, name)
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        wait_for(sock.exists, 10)
        client_env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(key)], check=True, env=client_env, timeout=10)
        fingerprint = subprocess.run(
            ["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        yield client_env, fingerprint
    finally:
        agent.kill()
        agent.wait()


def test_agent_forwarding_is_refused(env: Env) -> None:
    with ssh_agent(env, "refused-agent") as (client_env, _):
        r = subprocess.run(
            key_ssh(env, env.port, "-A", "echo sock=${SSH_AUTH_SOCK:-none}"),
            capture_output=True, timeout=30, env=client_env,
        )
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"sock=none\n"


def test_agent_forwarding_when_allowed(env: Env) -> None:
    """ssh -A through a connection with allow_agent_forwarding: processes on
    the target reach the user's agent (their key, not the gateway's), and
    the recorded command says so. Without -A they see no agent."""
    with ssh_agent(env, "user-agent") as (client_env, fingerprint):
        r = subprocess.run(
            key_ssh(env, env.agent_port, "-A", "ssh-add -l; echo agent-used"),
            capture_output=True, timeout=30, env=client_env,
        )
        assert r.returncode == 0, r.stderr
        listed = r.stdout.decode().splitlines()
        assert listed[-1] == "agent-used"
        assert [line.split()[1] for line in listed[:-1]] == [fingerprint]
        r = subprocess.run(
            key_ssh(env, env.agent_port, "echo sock=${SSH_AUTH_SOCK:-none}"),
            capture_output=True, timeout=30, env=client_env,
        )
        assert (r.returncode, r.stdout) == (0, b"sock=none\n"), r.stderr
    commands = [e for e in all_events(env) if e["type"] == "command"]
    used = [c for c in commands if c["text"] == "ssh-add -l; echo agent-used"]
    assert used and used[-1]["attrs"].get("agent_forwarded") is True
    plain = [c for c in commands if c["text"] == "echo sock=${SSH_AUTH_SOCK:-none}"]
    assert plain and "agent_forwarded" not in plain[-1]["attrs"]


# -- X11 forwarding ----------------------------------------------------------------

X11_UP = (bytes(range(256)) * 1200)[:300_000]
"""What the X program on the target sends after its connection setup."""
X11_DOWN = hashlib.sha256(b"x11-down").digest() * 10_000
"""What the fake X server answers with."""
X11_CLIENT = r"""
import hashlib, os, socket, struct, subprocess
display = os.environ.get("DISPLAY")
if not display:
    raise SystemExit("no DISPLAY")
num = int(display.rsplit(":", 1)[1].split(".")[0])
entry = subprocess.run(["xauth", "list", display], capture_output=True, text=True, check=True).stdout.split()
proto, cookie = entry[1].encode(), bytes.fromhex(entry[2])
print("target-cookie", cookie.hex(), flush=True)
pad = lambda b: b + bytes(-len(b) % 4)
up = (bytes(range(256)) * 1200)[:300000]
s = socket.create_connection(("127.0.0.1", 6000 + num), timeout=20)
s.sendall(b"l\0" + struct.pack("<HHHHH", 11, 0, len(proto), len(cookie), 0) + pad(proto) + pad(cookie) + up)
got = bytearray()
while chunk := s.recv(65536):
    got += chunk
print("x11-reply", bytes(got[:2]).decode(), hashlib.sha256(bytes(got[2:34])).hexdigest() == hashlib.sha256(hashlib.sha256(up).digest()).hexdigest(),
      hashlib.sha256(bytes(got[34:])).hexdigest(), flush=True)
"""


@dataclass
class FakeX:
    display: int
    cookie: bytes
    client_env: dict[str, str]
    seen: list[tuple[bytes, bytes, bytes]]
    """(authorization name, authorization data, what followed) per connection."""


@contextlib.contextmanager
def fake_x_server(env: Env, name: str, *, running: bool = True) -> Iterator[FakeX]:
    """The user's X server: a TCP listener on 127.0.0.1:6000+N (display
    127.0.0.1:N) with its cookie in an Xauthority file of its own. It reads
    a connection setup and len(X11_UP) bytes, then answers "OK", the
    SHA-256 of what it read and X11_DOWN, and closes. Not ``running``: the
    port is taken but refuses connections."""
    listener = socket.socket()
    display = 0
    for n in range(300 + os.getpid() % 300, 1000):
        try:
            listener.bind(("127.0.0.1", 6000 + n))
        except OSError:
            continue
        display = n
        break
    assert display, "no free X display number"
    if running:
        listener.listen()
    listener.settimeout(0.2)
    cookie = os.urandom(16)
    xauthority = env.tmp / f"{name}.xauth"
    subprocess.run(["xauth", "-f", str(xauthority), "add", f"127.0.0.1:{display}", "MIT-MAGIC-COOKIE-1", cookie.hex()],
                   check=True, capture_output=True, timeout=10)  # fmt: skip
    fake = FakeX(display, cookie, {**os.environ, "DISPLAY": f"127.0.0.1:{display}", "XAUTHORITY": str(xauthority)}, [])
    stop = threading.Event()

    def read(conn: socket.socket, n: int) -> bytes:
        got = b""
        while len(got) < n and (chunk := conn.recv(n - len(got))):
            got += chunk
        return got

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(20)
                prefix = read(conn, 12)
                proto_len, data_len = struct.unpack("<HH", prefix[6:10])
                proto = read(conn, proto_len + (-proto_len % 4))[:proto_len]
                data = read(conn, data_len + (-data_len % 4))[:data_len]
                rest = read(conn, len(X11_UP))
                fake.seen.append((proto, data, rest))
                conn.sendall(b"OK" + hashlib.sha256(rest).digest() + X11_DOWN)

    thread = threading.Thread(target=serve, daemon=True)
    if running:
        thread.start()
    try:
        yield fake
    finally:
        stop.set()
        if running:
            thread.join(5)
        listener.close()


def _x11_client(env: Env) -> str:
    script = env.tmp / "x11_client.py"
    if not script.exists():
        script.write_text(X11_CLIENT)
    return f"python3 {script}"


def test_x11_forwarding_when_allowed(env: Env) -> None:
    """ssh -Y through a connection with allow_x11_forwarding: a program on the
    target connects to its DISPLAY with the cookie it finds there (the
    target's own), the user's X server gets the connection with its real
    cookie (swapped in by the user's ssh client) and 300 kB go each way."""
    with fake_x_server(env, "x11-exec") as x:
        r = subprocess.run(key_ssh(env, env.x11_port, "-Y", _x11_client(env)),
                           capture_output=True, timeout=60, env=x.client_env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        out = dict(line.split(" ", 1) for line in r.stdout.decode().splitlines())
        assert out["x11-reply"] == f"OK True {hashlib.sha256(X11_DOWN).hexdigest()}"
        assert [(proto, data) for proto, data, _ in x.seen] == [(b"MIT-MAGIC-COOKIE-1", x.cookie)]
        assert x.seen[0][2] == X11_UP
        assert out["target-cookie"] != x.cookie.hex()  # the target never sees the real cookie
    evs = all_events(env)
    commands = [e for e in evs if e["type"] == "command"]
    [ran] = [c for c in commands if c["text"] == _x11_client(env) and c["attrs"].get("x11_forwarded")]
    x11 = [c for c in commands if c["text"] == "x11" and c["session"] == ran["session"]]
    assert [c["attrs"] for c in x11] == [{"channel": "x11"}]
    [result] = [e for e in evs if e["type"] == "result" and e["session"] == ran["session"]
                and e["command_seq"] == x11[0]["seq"]]  # fmt: skip
    assert result["status"] == f"closed in={34 + len(X11_DOWN)} out={48 + len(X11_UP)}"
    assert not any(x.cookie.hex() in json.dumps(e, default=str) for e in evs)


def test_x11_forwarding_in_a_terminal_shell(env: Env) -> None:
    with fake_x_server(env, "x11-shell") as x:
        argv = ["env", *(f"{k}={x.client_env[k]}" for k in ("DISPLAY", "XAUTHORITY"))]
        term = Term([*argv, *key_ssh(env, env.x11_port, "-Y", "-tt", "")[:-1]], 30, 100)
        try:
            term.send(f"{_x11_client(env)}; exit\r".encode())
            term.expect(b"x11-reply OK True")
            assert term.wait() == 0
        finally:
            if term.proc.poll() is None:
                term.proc.kill()
        assert [data for _, data, _ in x.seen] == [x.cookie]


def test_x11_connection_to_a_user_without_x_server(env: Env) -> None:
    """The user's ssh cannot reach its X server: the X11 connection is
    recorded as failed, the target's program sees it closed, the session
    goes on."""
    with fake_x_server(env, "x11-no-server", running=False) as x:
        command = f"{_x11_client(env)} 2>/dev/null; echo after-x11"
        r = subprocess.run(key_ssh(env, env.x11_port, "-Y", command),
                           capture_output=True, timeout=60, env=x.client_env)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.endswith(b"after-x11\n")
    evs = all_events(env)
    [ran] = [e for e in evs if e["type"] == "command" and e["text"] == command]
    [x11] = [e for e in evs if e["type"] == "command" and e["text"] == "x11" and e["session"] == ran["session"]]
    [result] = [e for e in evs if e["type"] == "result" and e["session"] == ran["session"]
                and e["command_seq"] == x11["seq"]]  # fmt: skip
    assert result["status"] == "failed", result


def test_x11_forwarding_is_refused_by_default(env: Env) -> None:
    """Without allow_x11_forwarding ssh -Y is told no (as by an sshd with
    X11Forwarding no), the target sees no DISPLAY and the session goes on."""
    with fake_x_server(env, "x11-refused") as x:
        r = subprocess.run(key_ssh(env, env.port, "-Y", "echo display=${DISPLAY:-none}"),
                           capture_output=True, timeout=30, env=x.client_env)  # fmt: skip
        assert (r.returncode, r.stdout) == (0, b"display=none\n"), r.stderr
        assert b"X11 forwarding request failed" in r.stderr
        assert x.seen == []
    commands = [e for e in all_events(env) if e["type"] == "command"]
    plain = [c for c in commands if c["text"] == "echo display=${DISPLAY:-none}"]
    assert plain and "x11_forwarded" not in plain[-1]["attrs"]


def test_x11_forwarding_refused_by_the_target(env: Env) -> None:
    """The gateway allows it, the target (X11Forwarding no) does not: the
    user is told on stderr, the session records why, the command runs."""
    with fake_x_server(env, "x11-target-off") as x:
        r = subprocess.run(key_ssh(env, env.x11_target_off_port, "-Y", "echo shown=${DISPLAY:-none}"),
                           capture_output=True, timeout=30, env=x.client_env)  # fmt: skip
        assert (r.returncode, r.stdout) == (0, b"shown=none\n"), r.stderr
        assert b"hoopd: X11 forwarding request failed: the target refused it" in r.stderr
    evs = all_events(env)
    [ran] = [e for e in evs if e["type"] == "command" and e["text"] == "echo shown=${DISPLAY:-none}"]
    assert any(e["type"] == "error" and e["code"] == "x11_refused" and e["session"] == ran["session"] for e in evs)


def test_git_clone_and_push_over_ssh(env: Env) -> None:
    work = env.tmp / "gitwork"
    bare = env.tmp / "repo.git"
    g = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
         "GIT_COMMITTER_EMAIL": "t@x",
         "GIT_SSH_COMMAND": " ".join(key_ssh(env, env.port, "x")[:-2])}
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    blob = os.urandom(300_000)
    (work / "data.bin").write_bytes(blob)  # binary: must pass unmasked and intact
    (work / "notes.txt").write_text(f"contains {SECRET}\n")
    subprocess.run(["git", "-C", str(work), "add", "."], check=True, env=g)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "c"], check=True, env=g)
    url = f"ssh://bob@127.0.0.1:{env.port}{bare}"
    r = subprocess.run(["git", "-C", str(work), "push", "-q", url, "HEAD:refs/heads/main"],
                       capture_output=True, env=g, timeout=60)
    assert r.returncode == 0, r.stderr
    clone = env.tmp / "clone"
    r = subprocess.run(["git", "clone", "-q", "-b", "main", url, str(clone)], capture_output=True, env=g, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (clone / "data.bin").read_bytes() == blob
    texts = [e["text"] for e in all_events(env) if e["type"] == "command"]
    assert any(t.startswith("git-receive-pack") for t in texts)
    assert any(t.startswith("git-upload-pack") for t in texts)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_flow_control_bounds_gateway_memory(env: Env) -> None:
    """A client that stops reading, and a target that stops reading, must not
    make the gateway buffer what the other side keeps sending."""
    assert env.daemon.proc is not None
    pid = env.daemon.proc.pid
    before = _rss_mb(pid)
    # download to a stalled reader: the client reads nothing for 3 s
    proc = popen_ssh(env.port, env.token, "head -c 80M /dev/zero")
    time.sleep(3)
    stalled_down = _rss_mb(pid) - before
    assert proc.stdout is not None
    total = 0
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    proc.wait(60)
    assert total == 80 * 1024 * 1024
    # upload to a stalled target: it reads nothing for 3 s. Measured from
    # here, so that what the download phase left in RSS (freed heap the
    # allocator keeps for reuse, up to ~20 MB) is not counted against this
    # phase; the download's own bound has its tests below.
    before_up = _rss_mb(pid)
    upload = popen_ssh(env.port, env.token, "sleep 3; wc -c", stdin=subprocess.PIPE)
    payload = b"\0" * (80 * 1024 * 1024)
    import threading

    feeder = threading.Thread(target=lambda: upload.communicate(payload, timeout=90))
    feeder.start()
    time.sleep(2.5)
    stalled_up = _rss_mb(pid) - before_up
    feeder.join(90)
    print(f"gateway RSS growth: stalled client {stalled_down:.1f} MB, stalled target {stalled_up:.1f} MB")
    assert upload.returncode == 0
    assert stalled_down < 40, f"gateway grew {stalled_down:.0f} MB while the client was not reading"
    assert stalled_up < 40, f"gateway grew {stalled_up:.0f} MB while the target was not reading"


@contextlib.contextmanager
def _peak_rss_growth(pid: int) -> Iterator[list[float]]:
    """Samples the gateway's RSS every 10 ms; yields [growth in MB above the
    RSS at entry], filled in on exit."""
    before = _rss_mb(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):
            peak = max(peak, _rss_mb(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = [0.0]
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result[0] = max(peak, _rss_mb(pid)) - before


# The two tests below pause and resume the upstream channel again and again
# while it has data buffered. asyncssh (2.24) re-opens the target's SSH window
# to its full 4 MiB on the first chunk it hands over after a resume, without
# counting what it still holds; if the gateway paused again before that
# buffer was drained, every cycle let it grow by up to a window (45 MB held
# there for one download). Drained on each resume, it holds at most a window.


def test_download_to_a_slow_reader_stays_bounded(env: Env) -> None:
    """The client reads 20 MB/s, the target sends faster: the client's window
    opens a little at a time and each opening resumes the upstream channel
    (60 MB grew the gateway by 37-55 MB before the fix, 9-11 MB after)."""
    assert env.daemon.proc is not None
    warm = run_ssh(env.port, env.token, "head -c 1M /dev/zero")
    assert warm.returncode == 0, warm.stderr
    size, rate = 60 << 20, 20e6
    with _peak_rss_growth(env.daemon.proc.pid) as grown:
        proc = popen_ssh(env.port, env.token, f"head -c {size} /dev/zero")
        assert proc.stdout is not None
        total = 0
        started = time.monotonic()
        while chunk := os.read(proc.stdout.fileno(), 65536):
            total += len(chunk)
            ahead = total / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        assert proc.wait(60) == 0
    print(f"gateway RSS growth, download to a 20 MB/s reader: {grown[0]:.1f} MB")
    assert total == size
    assert grown[0] < 25, f"gateway grew {grown[0]:.0f} MB for a download to a slow reader"


SLOW_DISK = str(Path(__file__).parent / "slowdisk")


def test_download_behind_a_slow_recordings_disk_stays_bounded(env: Env) -> None:
    """The recorder cannot keep up (a 20 MB/s recordings disk, a 4 MiB byte
    queue): it pauses and resumes the upstream channel many times. The gateway
    holds the recorder's queue plus about a window on each side, not more the
    more often the recorder paused (80 MB grew it by 29-65 MB before the fix,
    8-15 MB after)."""
    tmp = env.tmp / "slowdisk-gw"
    tmp.mkdir()
    port = free_port()
    config = {
        "recording": {"queue_max_bytes": "4MiB"},
        "connections": [ssh_conn("box", port, env.target, masking=MASKING)],
    }
    token = GatewayTokens(load_or_create_token_key(tmp / "var" / "token_key.ed25519")).issue(
        "alice", ["ops"], "1h"
    )
    path = os.pathsep.join(p for p in (SLOW_DISK, os.environ.get("PYTHONPATH", "")) if p)
    with running(tmp, config, {"PYTHONPATH": path, "HOOPD_TEST_DISK_RATE": "20e6"}) as daemon:
        assert daemon.proc is not None
        warm = run_ssh(port, token, "head -c 1M /dev/zero")  # first-session imports and caches
        assert warm.returncode == 0, warm.stderr
        with _peak_rss_growth(daemon.proc.pid) as grown:
            r = run_ssh(port, token, "head -c 80M /dev/zero")
        assert r.returncode == 0, r.stderr
        assert len(r.stdout) == 80 * 1024 * 1024
        print(f"gateway RSS growth, download behind a 20 MB/s recordings disk: {grown[0]:.1f} MB")
        assert grown[0] < 24, f"gateway grew {grown[0]:.0f} MB for a download its recorder held back"


# The same for a -L tunnel. It used asyncssh's SSHReader/SSHWriter streams,
# whose session pauses its channel when a window's worth is buffered and
# resumes it after each read with the rest still in the channel's buffer: a
# 100 MB download to a 20 MB/s reader held 12-20 MB there with a 2 MiB window.
# The tunnel now uses channel sessions with _Pausable's discipline.
# Each test has its own gateway: the module's one keeps freed heap from the
# tests before, which would hide the growth.

TUNNEL_SIZE, TUNNEL_RATE = 100 << 20, 20e6


def _paced(total: int, started: float, rate: float) -> None:
    ahead = total / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)


@contextlib.contextmanager
def _tunnel_target(serve: Any) -> Iterator[int]:
    """A TCP server on the target side: ``serve(conn, size)`` for each
    connection that starts with an 8-byte size (wait_port's probe does not)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                head = b""
                while len(head) < 8 and (got := conn.recv(8 - len(head))):
                    head += got
                if len(head) == 8:
                    with contextlib.suppress(OSError):
                        serve(conn, struct.unpack("!Q", head)[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()
        thread.join(10)


@contextlib.contextmanager
def _forwarding_gateway(env: Env, name: str, target_port: int) -> Iterator[tuple[int, int]]:
    """Its own gateway and an ``ssh -N -L`` through it: (gateway pid, local port)."""
    tmp = env.tmp / name
    tmp.mkdir()
    port = free_port()
    keys = [{"key": Path(f"{env.bob_key}.pub").read_text().strip(), "subject": "bob", "groups": ["ops"]}]
    config = {"connections": [ssh_conn(
        "box", port, env.target, options={"authorized_keys": keys, "allow_port_forwarding": True}
    )]}
    with running(tmp, config) as daemon:
        assert daemon.proc is not None
        lport = free_port()
        proc = subprocess.Popen(
            key_ssh(env, port, "-N", "-L", f"{lport}:127.0.0.1:{target_port}", "-"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            wait_port(lport, proc=proc)
            yield daemon.proc.pid, lport
        finally:
            proc.kill()
            proc.communicate(timeout=10)


def _send_zeros(conn: socket.socket, size: int) -> None:
    block = b"\0" * (1 << 20)
    while size > 0:
        conn.sendall(block[:size])
        size -= len(block)


def test_tunnel_download_to_a_slow_reader_stays_bounded(env: Env) -> None:
    """The target side streams as fast as it can, the client reads 20 MB/s:
    the upstream channel is paused and resumed again and again (100 MB grew
    the gateway by 27-28 MB before it used channel sessions, 3 MB after)."""

    def download(lport: int, size: int, rate: float | None) -> int:
        with socket.create_connection(("127.0.0.1", lport), timeout=30) as s:
            s.sendall(struct.pack("!Q", size))
            total = 0
            started = time.monotonic()
            while chunk := s.recv(65536):
                total += len(chunk)
                if rate:
                    _paced(total, started, rate)
        return total

    with _tunnel_target(_send_zeros) as tport, _forwarding_gateway(env, "tunnel-down", tport) as (pid, lport):
        assert download(lport, 1 << 20, None) == 1 << 20  # first-tunnel imports and caches
        with _peak_rss_growth(pid) as grown:
            total = download(lport, TUNNEL_SIZE, TUNNEL_RATE)
    print(f"gateway RSS growth, tunnel download to a 20 MB/s reader: {grown[0]:.1f} MB")
    assert total == TUNNEL_SIZE
    assert grown[0] < 12, f"gateway grew {grown[0]:.0f} MB for a tunnel download to a slow reader"


def test_tunnel_upload_to_a_slow_target_stays_bounded(env: Env) -> None:
    """The client sends as fast as it can, the target side reads 20 MB/s:
    the client's channel is paused and resumed again and again (100 MB grew
    the gateway by 29-35 MB before it used channel sessions, 3 MB after)."""

    def slow_sink(conn: socket.socket, _size: int) -> None:
        total = 0
        started = time.monotonic()
        while chunk := conn.recv(65536):
            total += len(chunk)
            _paced(total, started, TUNNEL_RATE)
        conn.sendall(struct.pack("!Q", total))

    def upload(lport: int, size: int) -> int:
        with socket.create_connection(("127.0.0.1", lport), timeout=30) as s:
            s.sendall(struct.pack("!Q", size))
            _send_zeros(s, size)
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while len(reply) < 8 and (got := s.recv(8)):
                reply += got
        return int(struct.unpack("!Q", reply)[0])

    with _tunnel_target(slow_sink) as tport, _forwarding_gateway(env, "tunnel-up", tport) as (pid, lport):
        assert upload(lport, 1 << 20) == 1 << 20
        with _peak_rss_growth(pid) as grown:
            total = upload(lport, TUNNEL_SIZE)
    print(f"gateway RSS growth, tunnel upload to a 20 MB/s target: {grown[0]:.1f} MB")
    assert total == TUNNEL_SIZE
    assert grown[0] < 12, f"gateway grew {grown[0]:.0f} MB for a tunnel upload to a slow target"


def test_garbage_on_the_port_does_not_hurt_other_sessions(env: Env) -> None:
    for junk in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(5000), b"SSH-2.0-x\r\n" + os.urandom(3000)):
        with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
            s.sendall(junk)
            s.settimeout(10)
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    r = run_ssh(env.port, env.token, "echo still-fine")
    assert (r.returncode, r.stdout) == (0, b"still-fine\n")


def test_auth_none_is_anonymous(env: Env) -> None:
    r = subprocess.run(
        ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-p", str(env.anon_port), "whoever@127.0.0.1", "echo anon-ok"],
        capture_output=True, timeout=30,
    )
    assert (r.returncode, r.stdout) == (0, b"anon-ok\n"), r.stderr


async def test_too_many_auth_failures_disconnect(env: Env) -> None:
    import asyncssh

    keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(12)]
    with pytest.raises(asyncssh.DisconnectError) as info:
        await asyncssh.connect(
            "127.0.0.1", env.port, username="mallory", client_keys=keys, known_hosts=None,
            config=None, agent_path=None, password=None, preferred_auth="publickey",
        )
    assert "too many authentication failures" in str(info.value.reason)


def test_tunnel_destination_denied_by_rule(env: Env) -> None:
    lport = free_port()
    proc = subprocess.Popen(
        key_ssh(env, env.port, "-N", "-L", f"{lport}:127.0.0.1:9", "-"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(lport, proc=proc)
        assert _fetch(lport) == b""
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    def all_denied() -> bool:
        evs = all_events(env)
        cmds = [e for e in evs if e["type"] == "command" and e["text"] == "direct-tcpip 127.0.0.1:9"]
        return bool(cmds) and all(  # wait_port's probe opens one too
            any(e["type"] == "decision" and e["verdict"] == "deny" and "no-tunnel-to-9" in e["rule_ids"]
                and e["session"] == c["session"] and e["command_seq"] == c["seq"] for e in evs)
            for c in cmds
        )

    wait_for(all_denied, 10)  # the recorder writes in the background


def test_exec_stdin_is_masked_in_the_recording(env: Env) -> None:
    """What an exec command reads reaches the target as sent, and the
    recording keeps it masked like the output (as the postgres and http
    recordings keep what their clients send)."""
    marker = f"stdin-{os.urandom(4).hex()}"
    chunks = [b"line one\n", f"deploy key {SECRET} end\n".encode(), b"last\n"]
    r = run_ssh(env.port, env.token, f"sha256sum # {marker}", input=b"".join(chunks))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0].decode() == hashlib.sha256(b"".join(chunks)).hexdigest()
    events = all_events(env)
    cmd = next(e for e in events if e["type"] == "command" and marker in e["text"])
    stdin = b"".join(output_bytes(e) for e in events
                     if e["session"] == cmd["session"] and e["type"] == "output" and e["stream"] == "stdin")
    assert stdin == b"line one\ndeploy key [TEST_SECRET] end\nlast\n", stdin


def test_command_lines_are_masked_in_the_recording(env: Env) -> None:
    """A secret on a command line (a token in ``curl -H``, a key in
    ``export``) runs as typed, and the recording keeps the Command masked,
    as it keeps the terminal's echo of it: for exec and for a typed line."""
    marker = f"cmdline-{os.urandom(4).hex()}"
    r = run_ssh(env.port, env.token, f"echo {marker} ${{#X}}; X={SECRET}; echo ${{#X}}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [marker.encode(), b"0", str(len(SECRET)).encode()]
    with shell(env) as term:
        term.send(f"K={SECRET}; echo {marker}-typed ${{#K}}\r".encode())
        term.expect(f"{marker}-typed {len(SECRET)}".encode())
        term.expect(b"PS> ")
        term.send(b"exit\r")
        term.wait()
    commands = [e for e in all_events(env) if e["type"] == "command" and marker in e["text"]]
    assert {e["kind"] for e in commands} == {"exec", "shell-line"}, commands
    for e in commands:
        assert SECRET not in e["text"] and "[TEST_SECRET]" in e["text"], e


def test_held_command_shown_to_reviewers_masked(env: Env) -> None:
    """A held exec with a secret on its line: the approval store and so the
    reviewers get it masked; approved, the line runs as typed."""
    victim = env.tmp / "held-masked-victim"
    (victim / "sub").mkdir(parents=True)
    proc = popen_ssh(env.port, env.token, f"X={SECRET}; rm -rf {victim} && echo removed ${{#X}}")

    async def pending_text() -> str:
        store = _approvals_store(env)
        try:
            deadline = time.monotonic() + 20
            while not (pending := await store.list(state="pending")):
                assert time.monotonic() < deadline, "no approval was requested"
                await asyncio.sleep(0.1)
            return str(pending[0].command_text)
        finally:
            await store.close()

    shown = asyncio.run(pending_text())
    _decide_pending(env, True)
    out, err = proc.communicate(timeout=30)
    assert SECRET not in shown and "[TEST_SECRET]" in shown and str(victim) in shown, shown
    assert proc.returncode == 0, err
    assert out == f"removed {len(SECRET)}\n".encode()
    assert not victim.exists()
