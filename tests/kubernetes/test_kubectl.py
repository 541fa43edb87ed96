"""The real kubectl through ``hoopd serve`` against the fake API server.

kubectl is a version dispatcher: the fake pins /version to minor 32.
KUBECONFIG and the discovery cache live in tmp dirs.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import pty
import secrets
import ssl
import struct
import subprocess
import termios
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from hoopd.approvals.store import open_store
from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key
from hoopd.kubeconfig import build_kubeconfig
from hoopd.model import AuthMethod, Identity
from tests.core.upstreams import http_file_server
from tests.helpers import Daemon, WebhookReceiver, free_port, hoopd, wait_for
from tests.kubernetes.fakeapi import BY_PATH, FakeApiServer, Kind

POD = """
apiVersion: v1
kind: Pod
metadata: {name: web-0, labels: {app: web}}
spec:
  containers:
  - name: main
    image: busybox
    env:
    - {name: DB_PASSWORD, value: hunter2}
"""


def fake_kind(resource: str) -> Kind:
    return next(k for k in BY_PATH.values() if k.resource == resource)


class Kube:
    """A daemon with one kubernetes connection and a kubectl for alice."""

    def __init__(
        self, workdir: Path, fake: FakeApiServer, gateway: dict[str, Any] | None = None,
        **conn_extra: Any,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "sa-token").write_text("upstream-sa-token\n")
        self.port = free_port()
        conn = {
            "name": "kube",
            "protocol": "kubernetes",
            "listen": f"127.0.0.1:{self.port}",
            "allow_groups": ["dev"],
            "upstream": {
                "url": fake.url,
                "ca": str(fake.ca),
                "token": f"file:{workdir / 'sa-token'}",
                "impersonate": True,
            },
            "options": {"protected_namespaces": ["prod"]},
        }
        conn.update(conn_extra)
        self.daemon = Daemon(workdir, {"gateway": dict(gateway or {}), "connections": [conn]}).start()
        self.data_dir = Path(self.daemon.config["gateway"]["data_dir"])
        self.workdir = workdir
        self.kubeconfig = self.kubeconfig_for("alice", ["dev"])
        self.cache = workdir / "kube-cache"

    def token(self, sub: str, groups: list[str]) -> str:
        key = load_or_create_token_key(self.data_dir / KEY_FILE_NAME)
        return GatewayTokens(key).issue(sub, groups, 3600)

    def kubeconfig_for(self, sub: str, groups: list[str], token: str | None = None) -> Path:
        ca = (self.data_dir / "tls" / "ca.pem").read_bytes()
        doc = build_kubeconfig("kube", f"https://127.0.0.1:{self.port}", ca, token or self.token(sub, groups), "default")
        path = self.workdir / f"kubeconfig-{sub}"
        path.write_text(yaml.safe_dump(doc))
        return path

    def argv(self, *args: str, kubeconfig: Path | None = None) -> list[str]:
        return ["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig), "--cache-dir", str(self.cache), *args]

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 30, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(*args, kubeconfig=kubeconfig), input=input, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, input: str | None = None) -> str:
        res = self.kubectl(*args, input=input)
        assert res.returncode == 0, f"kubectl {' '.join(args)}: rc={res.returncode}\n{res.stdout}\n{res.stderr}\n{self.daemon.log()[-3000:]}"
        return res.stdout

    def sessions(self, text: str) -> list[dict[str, Any]]:
        res = hoopd("replay", "search", str(self.daemon.recordings), "--text", text, "--json")
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]

    def events(self, session_id: str) -> list[dict[str, Any]]:
        res = hoopd("replay", "export", str(self.daemon.recordings), session_id, "--format", "jsonl")
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()[1:]]

    def request(
        self, path: str, *, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """One HTTPS request to the gateway as alice, not through kubectl:
        (status, body), error statuses included."""
        ctx = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}", data=body, method=method,
            headers={"Authorization": f"Bearer {self.token('alice', ['dev'])}", **(headers or {})},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def approval_text(self, approval_id: str) -> str:
        """The command text an approval shows reviewers (as the store keeps it)."""

        async def text() -> str:
            store = open_store("sqlite", self.data_dir)
            try:
                return str((await store.get(approval_id)).command_text)
            finally:
                await store.close()

        return asyncio.run(text())

    def approve(self, approval_id: str) -> None:
        """Approve as the reviewer bob, straight in the store."""

        async def approve() -> None:
            store = open_store("sqlite", self.data_dir)
            await store.decide(approval_id, Identity("bob", frozenset(), AuthMethod.GATEWAY_TOKEN), True)
            await store.close()

        asyncio.run(approve())

    def close(self) -> None:
        self.daemon.stop()


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApiServer]:
    with FakeApiServer(tmp_path_factory.mktemp("fake-tls")) as server:
        yield server


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory, fake: FakeApiServer) -> Iterator[Kube]:
    k = Kube(
        tmp_path_factory.mktemp("kube-hold"),
        fake,
        risk={"review_at": "high", "rules": [{"pattern": r"^exec .* -- rm ", "action": "deny"}]},
        approval={"mode": "hold", "timeout": "60s"},
    )
    try:
        yield k
    finally:
        k.close()


def test_get_apply_describe_delete(kube: Kube, fake: FakeApiServer, tmp_path: Path) -> None:
    assert "kube-system" in kube.ok("get", "ns")
    (tmp_path / "pod.yaml").write_text(POD)
    assert "pod/web-0 created" in kube.ok("apply", "-f", str(tmp_path / "pod.yaml"))
    assert "web-0   1/1     Running" in kube.ok("get", "pods")
    # kubectl sees masked env values, so a re-apply is "configured" (it re-sends
    # the real value from the file); the cluster keeps the real value.
    assert "pod/web-0" in kube.ok("apply", "-f", str(tmp_path / "pod.yaml"))
    stored = fake.call(fake.api.store.get, fake_kind("pods"), "default", "web-0")
    assert stored["spec"]["containers"][0]["env"][0]["value"] == "hunter2"
    described = kube.ok("describe", "pod", "web-0")
    assert "Status:       Running" in described
    # env values are masked in every format, including describe and last-applied
    assert "hunter2" not in described and "hunter2" not in kube.ok("get", "pod", "web-0", "-o", "yaml")
    kube.ok("create", "configmap", "tmp-cm", "--from-literal=a=b")
    assert 'configmap "tmp-cm" deleted' in kube.ok("delete", "configmap", "tmp-cm")
    assert kube.kubectl("get", "configmap", "tmp-cm").returncode == 1
    # what the API server saw: the gateway's credential and the caller's identity,
    # never the client's token, never a protobuf Accept
    seen = [h for m, p, h in fake.api.requests if "/pods" in p]
    assert seen and all(h.get("Authorization") == "Bearer upstream-sa-token" for h in seen)
    assert all(h.get("Impersonate-User") == "alice" and h.get("Impersonate-Group") == "dev" for h in seen)
    assert not any("protobuf" in h.get("Accept", "") for _, _, h in fake.api.requests[-50:])


def test_secret_masked_in_yaml_json_table_and_watch(kube: Kube) -> None:
    kube.ok("create", "secret", "generic", "db", "--from-literal=password=hunter2")
    raw_b64 = "aHVudGVyMg=="
    as_yaml = kube.ok("get", "secret", "db", "-o", "yaml")
    as_json = json.loads(kube.ok("get", "secret", "db", "-o", "json"))
    assert raw_b64 not in as_yaml and "password:" in as_yaml
    assert as_json["data"]["password"] != raw_b64
    listed = kube.ok("get", "secrets", "-o", "json")
    assert raw_b64 not in listed
    assert "db     Opaque   1" in kube.ok("get", "secrets")
    watch = subprocess.Popen(kube.argv("get", "secrets", "-w", "-o", "json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        kube.ok("create", "secret", "generic", "db2", "--from-literal=token=s3cr3t-value")
        time.sleep(1.0)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    assert '"name": "db2"' in out
    assert raw_b64 not in out and "czNjcjN0LXZhbHVl" not in out
    # the recording holds the masked body only
    [session] = [s for s in kube.sessions("get secrets db") if s["commands"]][:1] or kube.sessions("secrets db")[:1]
    assert session["masked"] >= 1

def test_listed_secrets_are_masked_though_their_items_say_no_kind(kube: Kube) -> None:
    """The API server sends a list's items without kind (the fake does the
    same); each item of a SecretList is still a Secret, whatever its keys."""
    for name in ("lsecret1", "lsecret2"):
        if kube.kubectl("get", "secret", name).returncode != 0:
            kube.ok("create", "secret", "generic", name, "--from-literal=motd=list-hunter2")
    raw_b64 = base64.b64encode(b"list-hunter2").decode()
    raw = kube.ok("get", "--raw", "/api/v1/namespaces/default/secrets")
    items = json.loads(raw)["items"]
    assert {"lsecret1", "lsecret2"} <= {i["metadata"]["name"] for i in items}
    assert not any("kind" in i for i in items)
    everywhere = kube.ok("get", "--raw", "/api/v1/secrets")
    for out in (raw, everywhere, kube.ok("get", "secrets", "-o", "json"), kube.ok("get", "secrets", "-o", "yaml")):
        assert raw_b64 not in out and "lsecret1" in out


@pytest.mark.parametrize("flag", ["watch=yes", "watch", "watch=TRUE"])
def test_watch_spelled_otherwise_is_still_a_masked_stream(kube: Kube, flag: str) -> None:
    """The API server watches for any ``watch`` value but ``0``/``false``
    (empty included). Such a watch used to be taken for a list: buffered
    until it ended, then masked as one (unparsable) document by content
    only, so Secret data came back in clear."""
    for name in ("wsecret1", "wsecret2"):  # two events: the body is no longer one JSON document
        if kube.kubectl("get", "secret", name).returncode != 0:
            kube.ok("create", "secret", "generic", name, "--from-literal=motd=watch-hunter2")
    raw_b64 = base64.b64encode(b"watch-hunter2").decode()
    started = time.monotonic()
    out = kube.ok("get", "--raw", f"/api/v1/namespaces/default/secrets?{flag}&timeoutSeconds=2")
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert {"wsecret1", "wsecret2"} <= {e["object"]["metadata"]["name"] for e in events}
    assert raw_b64 not in out
    assert time.monotonic() - started < 15
    [session] = kube.sessions("watch secrets -n default")[-1:]
    assert session["masked"] >= 1



def test_api_server_log_files_are_masked_discovery_is_not(kube: Kube) -> None:
    """Only discovery, OpenAPI, version and health documents pass unmasked.
    Every other non-resource path used to pass too: ``get --raw /logs/...``
    (the API server's node log files) came back in clear."""
    out = kube.ok("get", "--raw", "/logs/kube-apiserver.log")
    assert "starting" in out and "etcd client" in out
    assert "etcd-pw-9f2c" not in out and "AKIAIOSFODNN7EXAMPLE" not in out
    for tricky in ("/version/../logs/kube-apiserver.log", "/version/%2E%2E/logs/kube-apiserver.log"):
        res = kube.kubectl("get", "--raw", tricky)
        assert "etcd-pw-9f2c" not in res.stdout + res.stderr, tricky
    assert json.loads(kube.ok("get", "--raw", "/version"))["minor"] == "32"
    [session] = kube.sessions("get /logs/kube-apiserver.log")[-1:]
    assert session["masked"] >= 2


def test_yaml_accept_cannot_fetch_secret_data_in_clear(kube: Kube, fake: FakeApiServer) -> None:
    """The API server answers in YAML when asked (Accept: application/yaml);
    a YAML body could only be masked by content rules, so a Secret's base64
    data and pod env values came back in clear. The gateway asks for JSON
    instead, which it masks structurally."""
    if kube.kubectl("get", "secret", "ysecret").returncode != 0:
        kube.ok("create", "secret", "generic", "ysecret", "--from-literal=motd=yaml-hunter2")
    raw_b64 = base64.b64encode(b"yaml-hunter2").decode()
    token = kube.token("alice", ["dev"])
    url = f"https://127.0.0.1:{kube.port}/api/v1/namespaces/default/secrets/ysecret"
    ca = str(kube.data_dir / "tls" / "ca.pem")
    for accept in ("application/yaml", "application/yaml, application/json;q=0.9"):
        res = subprocess.run(
            ["curl", "-sS", "--cacert", ca, "-H", f"Authorization: Bearer {token}", "-H", f"Accept: {accept}", url],
            capture_output=True, text=True, timeout=30,
        )
        assert res.returncode == 0, res.stderr
        assert raw_b64 not in res.stdout and "ysecret" in res.stdout, res.stdout
    seen = [h for (_, path, h) in fake.api.requests if path.endswith("/secrets/ysecret")][-1]
    assert "yaml" not in seen.get("Accept", "")


def test_exec_stdin_exit_codes_and_recording(kube: Kube) -> None:
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    res = kube.kubectl("exec", "web-0", "--", "sh", "-c", "echo out password=hunter2; echo err >&2; exit 3")
    assert res.returncode == 3, res.stderr
    assert "out" in res.stdout and "hunter2" not in res.stdout
    assert "err" in res.stderr and "command terminated with exit code 3" in res.stderr
    res = kube.kubectl("exec", "-i", "web-0", "--", "wc", "-l", input="a\nb\nc\n")
    assert res.returncode == 0 and res.stdout.strip() == "3", res.stderr
    [session] = kube.sessions("-- wc -l")
    events = kube.events(session["session_id"])
    stdin = [e for e in events if e["type"] == "output" and e["stream"] == "stdin"]
    results = [e for e in events if e["type"] == "result"]
    assert stdin and results[-1]["status"] == "exit 0"


def test_exec_without_tty_pausing_mid_secret_is_masked(kube: Kube) -> None:
    """No TTY: held output waits for the rest of the value (not released after
    exec_flush_ms of silence), so an AWS key printed in two halves a second
    apart is still masked."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    res = kube.kubectl("exec", "web-0", "--", "sh", "-c", "printf 'key AKIAIOSFOD'; sleep 1; printf 'NN7EXAMPLE end\\n'")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("key ") and res.stdout.endswith(" end\n"), res.stdout
    assert "AKIAIOSFOD" not in res.stdout and "NN7EXAMPLE" not in res.stdout


def test_exec_tty_spelled_yes_is_a_terminal(kube: Kube) -> None:
    """The API server reads any ``tty`` value but 0/false as a TTY; so does the
    gateway, or a terminal's output that could be the start of a value (here
    ``AKIA``) would be held until more output came, instead of after
    exec_flush_ms of silence."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    token = kube.token("alice", ["dev"])
    ctx = ssl.create_default_context(cafile=str(kube.data_dir / "tls" / "ca.pem"))
    script = "printf 'login AKIA'; sleep 4; printf ' done'"
    query = "&".join(["tty=yes", "stdout=true", "command=sh", "command=-c", "command=" + urllib.parse.quote(script)])
    url = f"https://127.0.0.1:{kube.port}/api/v1/namespaces/default/pods/web-0/exec?{query}"

    async def first_output() -> tuple[bytes, float]:
        async with aiohttp.ClientSession() as http, http.ws_connect(
            url, protocols=("v5.channel.k8s.io",), ssl=ctx, headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            start = time.monotonic()
            seen = b""
            while b"AKIA" not in seen:
                msg = await ws.receive(timeout=10)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                if msg.data[:1] == b"\x01":
                    seen += msg.data[1:]
            return seen, time.monotonic() - start

    seen, waited = asyncio.run(first_output())
    assert b"login AKIA" in seen and b"done" not in seen
    assert waited < 3, f"the terminal's output was held {waited:.1f}s"


def test_port_forward_through_the_gateway(kube: Kube, fake: FakeApiServer, tmp_path: Path) -> None:
    """kubectl port-forward (SPDY/3.1 in a websocket, kubectl >= 1.31): bytes
    reach the pod's port and come back, through the gateway, and the tunnel
    is recorded as a portforward command."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    site = tmp_path / "site"
    site.mkdir()
    payload = os.urandom(300_000)
    (site / "blob.bin").write_bytes(payload)
    local = free_port()
    with http_file_server(site) as pod_http:
        fake.api.pod_ports[8080] = pod_http
        pf = subprocess.Popen(kube.argv("port-forward", "pod/web-0", f"{local}:8080"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert pf.stdout is not None and "Forwarding from" in pf.stdout.readline()
            for _ in range(2):  # two connections over the same tunnel
                with urllib.request.urlopen(f"http://127.0.0.1:{local}/blob.bin", timeout=20) as resp:
                    assert resp.read() == payload
        finally:
            pf.terminate()
            pf.communicate(timeout=10)
    wait_for(lambda: fake.api.port_forwards >= 2, 10)  # counted when the tunnel has closed
    [session] = kube.sessions("portforward pods web-0")
    commands = [e for e in kube.events(session["session_id"]) if e["type"] == "command"]
    assert commands and commands[0]["attrs"].get("verb") == "portforward"


def test_attach_with_stdin(kube: Kube) -> None:
    """kubectl attach -i (websocket v5, like exec): input reaches the
    container's process, its output comes back masked, and it is recorded."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    res = kube.kubectl("attach", "-i", "web-0", input="echo attached password=hunter2\nexit 0\n")
    assert res.returncode == 0, res.stderr
    assert "attached" in res.stdout and "hunter2" not in res.stdout
    [session] = kube.sessions("attach pods web-0")
    events = kube.events(session["session_id"])
    assert any(e["type"] == "output" and e["stream"] == "stdin" for e in events)


def exported_bytes(data: Any) -> bytes:
    """``export --format jsonl`` writes bytes as text, or as {"base64": ...}."""
    if isinstance(data, dict):
        return base64.b64decode(data["base64"])
    return str(data).encode()


def test_kubectl_cp_both_ways_is_byte_identical(kube: Kube, tmp_path: Path) -> None:
    """kubectl cp runs tar through exec: the archive is not masked (a
    replaced value would corrupt it) and not recorded; the command is, as a
    transfer. (The fake's 'pod' shares this machine's /tmp.)"""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    content = b"line password=hunter2 end\n" + os.urandom(50_000).hex().encode()
    name = f"hoopd-cp-{os.getpid()}"
    (tmp_path / "up.txt").write_bytes(content)
    try:
        kube.ok("cp", str(tmp_path / "up.txt"), f"web-0:/tmp/{name}")
        assert Path(f"/tmp/{name}").read_bytes() == content
        kube.ok("cp", f"web-0:/tmp/{name}", str(tmp_path / "down.txt"))
        assert (tmp_path / "down.txt").read_bytes() == content
    finally:
        Path(f"/tmp/{name}").unlink(missing_ok=True)
    for text in ("-- tar -xmf - -C /tmp", f"-- tar cf - /tmp/{name}"):
        [session] = kube.sessions(text)
        events = kube.events(session["session_id"])
        [command] = [e for e in events if e["type"] == "command" and text in e["text"]]
        assert command["attrs"]["transfer"] is True
        recorded = b"".join(exported_bytes(e.get("data", "")) for e in events if e["type"] == "output")
        assert b"hunter2" not in recorded and content[-100:] not in recorded


def test_kubectl_cp_refused_when_file_transfer_is_off(tmp_path: Path, fake: FakeApiServer) -> None:
    k = Kube(tmp_path, fake, options={"protected_namespaces": ["prod"], "file_transfer": False})
    try:
        if k.kubectl("get", "pod", "web-0").returncode != 0:
            k.ok("run", "web-0", "--image=busybox")
        (tmp_path / "f.txt").write_text("x")
        res = k.kubectl("cp", str(tmp_path / "f.txt"), "web-0:/tmp/hoopd-never")
        assert res.returncode != 0
        assert "file transfer (kubectl cp) is not allowed" in res.stderr
        assert not Path("/tmp/hoopd-never").exists()
        assert k.kubectl("exec", "web-0", "--", "echo", "exec-still-works").stdout == "exec-still-works\n"
    finally:
        k.close()


def test_exec_tty_resize_recorded(kube: Kube) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(
        kube.argv("exec", "-it", "web-0", "--", "sh", "-c", "stty size; exit 5"),
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            import select

            if select.select([master], [], [], 0.2)[0]:
                out += os.read(master, 4096)
        except OSError:
            break
    proc.wait(10)
    os.close(master)
    assert proc.returncode == 5, out
    assert b"30 100" in out
    [session] = kube.sessions("stty size")
    resizes = [e for e in kube.events(session["session_id"]) if e["type"] == "resize"]
    assert resizes and (resizes[0]["cols"], resizes[0]["rows"]) == (100, 30)


def test_exec_denied_by_rule_says_why(kube: Kube) -> None:
    res = kube.kubectl("exec", "web-0", "--", "rm", "-rf", "/tmp/x")
    assert res.returncode != 0
    assert "denied" in res.stderr, res.stderr


def test_logs_follow_and_get_watch_stream(kube: Kube, fake: FakeApiServer) -> None:
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    logs = subprocess.Popen(kube.argv("logs", "-f", "web-0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = subprocess.Popen(kube.argv("get", "pods", "-w"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        fake.call(fake.api.store.append_log, "default", "web-0", "late line api_key=AKIAIOSFODNN7EXAMPLE")
        kube.ok("run", "watched", "--image=busybox")
        time.sleep(1.0)
    finally:
        logs.terminate()
        watch.terminate()
        log_out, _ = logs.communicate(timeout=10)
        watch_out, _ = watch.communicate(timeout=10)
    assert "starting web server" in log_out and "late line" in log_out
    assert "hunter2" not in log_out and "AKIAIOSFODNN7EXAMPLE" not in log_out
    assert "web-0" in watch_out and "watched" in watch_out


def test_logs_limit_bytes_cannot_cut_a_secret_past_its_rule(kube: Kube, fake: FakeApiServer) -> None:
    """`--limit-bytes` that ends inside an AWS key id would leave 19 of its 20
    characters, which no longer match the rule; the gateway applies the
    limit to the masked log instead."""
    if kube.kubectl("get", "pod", "pay-0").returncode != 0:
        kube.ok("run", "pay-0", "--image=busybox")
    key = "AKIAIOSFODNN7EXAMPLE"
    fake.call(fake.api.store.append_log, "default", "pay-0", f"uploaded with {key} ok")
    whole = kube.ok("logs", "pay-0")
    assert "uploaded with " in whole and key not in whole
    raw = "".join(f"{entry}\n" for entry in fake.api.store.logs[("default", "pay-0")]).encode()
    offset = raw.index(key.encode()) + len(key) - 1  # one character short
    cut = kube.ok("logs", "pay-0", f"--limit-bytes={offset}")
    assert key[:12] not in cut
    assert len(cut.encode()) == offset and whole.startswith(cut)


def test_bad_token_is_401(kube: Kube) -> None:
    bad = kube.kubeconfig_for("mallory", [], token="hgt1.bogus.token")
    res = kube.kubectl("get", "pods", kubeconfig=bad)
    assert res.returncode == 1
    assert "You must be logged in to the server" in res.stderr


def test_held_delete_namespace_runs_after_approval(kube: Kube) -> None:
    kube.ok("create", "ns", "doomed")
    proc = subprocess.Popen(kube.argv("delete", "ns", "doomed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store("sqlite", kube.data_dir)

    async def approve() -> str:
        async def pending() -> Any:
            for _ in range(200):
                found = [a for a in await store.list("pending", "kube") if "namespaces doomed" in a.command_text]
                if found:
                    return found[0]
                await asyncio.sleep(0.1)
            raise AssertionError("no pending approval")

        appr = await pending()
        assert proc.poll() is None  # kubectl is waiting
        await store.decide(appr.id, Identity("bob", frozenset({"sre"}), AuthMethod.GATEWAY_TOKEN), True)
        await store.close()
        return str(appr.id)

    approval_id = asyncio.run(approve())
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert 'namespace "doomed" deleted' in out
    assert kube.kubectl("get", "ns", "doomed").returncode == 1
    [session] = kube.sessions("delete namespaces doomed")
    events = kube.events(session["session_id"])
    seq = next(e["seq"] for e in events if e["type"] == "command" and e["text"] == "delete namespaces doomed")
    decisions = [e for e in events if e["type"] == "decision" and e["command_seq"] == seq]
    assert decisions[0]["verdict"] == "review"
    assert decisions[-1]["verdict"] == "allow" and decisions[-1]["approval_id"] == approval_id


def test_retry_mode_refuses_then_succeeds_once(tmp_path: Path, fake: FakeApiServer) -> None:
    hook = WebhookReceiver()
    k = Kube(
        tmp_path, fake, gateway={"webhook": {"url": hook.url, "retries": 0}},
        approval={"mode": "retry", "timeout": "60s"},
    )
    try:
        k.ok("create", "ns", "retry-me")
        res = k.kubectl("delete", "ns", "retry-me")
        assert res.returncode == 1
        assert "needs a reviewer's approval (id apr_" in res.stderr
        approval_id = res.stderr.split("(id ")[1].split(")")[0]
        assert wait_for(lambda: any(p["approval"]["id"] == approval_id for p in hook.received), 5)
        assert [p["event"] for p in hook.received] == ["approval.created"]  # reviewers are told

        k.approve(approval_id)
        assert 'namespace "retry-me" deleted' in k.ok("delete", "ns", "retry-me")
        k.ok("create", "ns", "retry-me")
        again = k.kubectl("delete", "ns", "retry-me")  # used once: a new approval is needed
        assert again.returncode == 1 and approval_id not in again.stderr
    finally:
        k.close()
        hook.close()


def test_scale_to_zero_in_protected_namespace_is_held(kube: Kube, tmp_path: Path) -> None:
    kube.ok("create", "ns", "prod")
    (tmp_path / "dep.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: prod}\n"
        "spec: {replicas: 2, selector: {matchLabels: {app: api}}, template: {metadata: {labels: {app: api}}, spec: {containers: [{name: main, image: nginx}]}}}\n"
    )
    kube.ok("apply", "-f", str(tmp_path / "dep.yaml"))
    assert "scaled" in kube.ok("scale", "-n", "prod", "deploy/api", "--replicas=1")
    res = kube.kubectl("scale", "-n", "prod", "deploy/api", "--replicas=0", "--request-timeout=2s")
    assert res.returncode != 0  # held for review; the client gave up waiting

    async def pending() -> list[Any]:
        store = open_store("sqlite", kube.data_dir)
        try:
            return [a for a in await store.list("pending", "kube") if "deployments.apps/scale api -n prod" in a.command_text]
        finally:
            await store.close()

    assert wait_for(lambda: asyncio.run(pending()), timeout=5)


def test_many_kubectl_clients_at_once(kube: Kube) -> None:
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    procs = [subprocess.Popen(kube.argv("get", "pods", "-o", "name"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    procs += [subprocess.Popen(kube.argv("exec", "web-0", "--", "sh", "-c", f"echo c{i}; exit {i}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [(p.communicate(timeout=60), p.returncode) for p in procs]
    for (out, err), rc in results[:8]:
        assert rc == 0 and "pod/web-0" in out, err
    for i, ((out, _), rc) in enumerate(results[8:]):
        assert rc == i and out.strip() == f"c{i}"


def test_spdy_is_refused_with_a_clear_message(kube: Kube) -> None:
    code, raw = kube.request(
        "/api/v1/namespaces/default/pods/web-0/exec?command=true&stdout=true", method="POST",
        headers={"Upgrade": "SPDY/3.1", "Connection": "Upgrade", "X-Stream-Protocol-Version": "v4.channel.k8s.io"},
    )  # fmt: skip
    assert code == 400, "SPDY upgrade was not refused"
    body = json.loads(raw)
    assert body["kind"] == "Status" and "SPDY is not supported" in body["message"]


class _Raw:
    """One TLS connection to the gateway, requests written by hand, so that
    the tests choose what shares a connection (server.FastConn's fast path,
    then the hand-over to aiohttp)."""

    def __init__(self, kube: Kube) -> None:
        import socket

        ctx = ssl.create_default_context(cafile=str(kube.data_dir / "tls" / "ca.pem"))
        self.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", kube.port), timeout=10), server_hostname="127.0.0.1")
        self.token = kube.token("alice", ["dev"])
        self.buf = b""

    def send(self, method: str, target: str, body: bytes = b"", **headers: str) -> None:
        headers.setdefault("Authorization", f"Bearer {self.token}")
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, *lines = head.decode().split("\r\n")
        return int(status.split()[1]), {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}

    def response(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if method == "HEAD" or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        assert headers.get("transfer-encoding") == "chunked", headers
        body = b""
        while True:
            chunk = self.chunk()
            if not chunk:
                return status, headers, body
            body += chunk

    def chunk(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        n = int(line, 16)
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data


def test_one_connection_plain_requests_then_a_watch(kube: Kube) -> None:
    """Plain requests (pipelined too) on the raw fast path, a body, then a
    watch on the same connection, which aiohttp takes over."""
    kube.kubectl("create", "configmap", "raw-cm", "--from-literal=a=b")
    raw = _Raw(kube)
    try:
        raw.send("GET", "/version", Accept="application/json")
        status, headers, body = raw.response()
        assert status == 200 and json.loads(body)["minor"] == "32"
        assert headers["content-type"].startswith("application/json") and "date" in headers and "server" in headers
        # two requests in one write: answered in order
        raw.send("GET", "/api/v1/namespaces/default/configmaps/raw-cm")
        raw.send("GET", "/api/v1/namespaces/default/configmaps/no-such-cm")
        first, second = raw.response(), raw.response()
        assert first[0] == 200 and json.loads(first[2])["metadata"]["name"] == "raw-cm"
        assert second[0] == 404 and json.loads(second[2])["kind"] == "Status"
        doc = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "raw-cm-2"}, "data": {"k": "v"}})
        raw.send("POST", "/api/v1/namespaces/default/configmaps", doc.encode(), Content_Type="application/json")
        status, _, body = raw.response()
        assert status == 201 and json.loads(body)["metadata"]["name"] == "raw-cm-2"
        raw.send("GET", "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0", Accept="application/json")
        status, headers = raw.head()
        assert status == 200 and headers.get("transfer-encoding") == "chunked"
        events = b""
        while b"raw-cm-2" not in events:
            events += raw.chunk()
        assert json.loads(events.splitlines()[0])["type"] == "ADDED"
    finally:
        raw.sock.close()
        kube.kubectl("delete", "configmap", "raw-cm", "raw-cm-2")


def test_heads_the_fast_path_leaves_to_aiohttp(kube: Kube) -> None:
    """HEAD, Connection: close and a bad token on the same kind of connection."""
    raw = _Raw(kube)
    try:
        raw.send("GET", "/api/v1/namespaces/default/configmaps", Authorization="Bearer nope")
        status, _, body = raw.response()
        assert status == 401 and json.loads(body)["reason"] == "Unauthorized"
        raw.send("HEAD", "/version")
        status, headers, _ = raw.response("HEAD")
        assert status == 200 and headers["content-type"].startswith("application/json")
        raw.send("GET", "/version", Connection="close")
        status, _, body = raw.response()
        assert status == 200 and json.loads(body)["minor"] == "32"
        with pytest.raises((EOFError, ConnectionError)):
            raw._fill()
    finally:
        raw.sock.close()


def test_a_rotated_token_file_is_sent_and_masked(fake: FakeApiServer, tmp_path: Path) -> None:
    """A projected service-account token rotated by the kubelet (a new file
    swapped in): the next requests carry the new token without a restart, and
    an API server echoing it gets it masked (masking off: only the rule for
    injected credentials can do that)."""
    token = tmp_path / "projected-token"
    token.write_text("first-projected-token-0123\n")
    upstream = {"url": fake.url, "ca": str(fake.ca), "token_file": str(token)}
    k = Kube(tmp_path / "gw", fake, upstream=upstream, masking={"enabled": False})
    try:
        res = k.kubectl("get", "--raw", "/echo-status")
        assert fake.api.requests[-1][2].get("Authorization") == "Bearer first-projected-token-0123"
        assert "credential 'Bearer [REDACTED]'" in res.stderr, res.stderr
        fresh = tmp_path / "projected-token.new"
        fresh.write_text("second-projected-token-4567\n")
        os.replace(fresh, token)
        time.sleep(1.2)  # the file is looked at once a second
        res = k.kubectl("get", "--raw", "/echo-status")
        assert fake.api.requests[-1][2].get("Authorization") == "Bearer second-projected-token-4567"
        assert "credential 'Bearer [REDACTED]'" in res.stderr, res.stderr
        assert "projected-token" not in res.stderr
        assert "ok" in k.ok("get", "--raw", "/healthz")
    finally:
        k.close()


@pytest.mark.parametrize("masking", ["default", "off"])
def test_an_echoed_upstream_token_is_masked(
    kube: Kube, fake: FakeApiServer, tmp_path: Path, masking: str
) -> None:
    """An authorizer that quotes the request's credential in its error Status
    and a response header: kubectl and the recording get the gateway's
    upstream token masked, masking on or off."""
    k = kube if masking == "default" else Kube(tmp_path / "nomask", fake, masking={"enabled": False})
    try:
        res = k.kubectl("get", "--raw", "/echo-status")
        assert res.returncode == 1
        assert "Error from server (Forbidden)" in res.stderr, res.stderr
        assert "may not read /echo-status" in res.stderr
        assert "upstream-sa-token" not in res.stdout + res.stderr
        if masking == "off":
            assert "credential 'Bearer [REDACTED]'" in res.stderr, res.stderr
        token = k.token("alice", ["dev"])
        ca = str(k.data_dir / "tls" / "ca.pem")
        head = subprocess.run(
            ["curl", "-sS", "-i", "--cacert", ca, "-H", f"Authorization: Bearer {token}",
             f"https://127.0.0.1:{k.port}/echo-status"],
            capture_output=True, text=True, timeout=30,
        ).stdout  # fmt: skip
        assert "upstream-sa-token" not in head
        assert "\nX-Echo-Authorization: Bearer [REDACTED]\n" in head, head
        # the API server did get the token (else there would be nothing to mask)
        assert fake.api.requests[-1][2].get("Authorization") == "Bearer upstream-sa-token"
        sessions = k.sessions("/echo-status")
        assert sessions
        for session in sessions:
            assert "upstream-sa-token" not in json.dumps(k.events(session["session_id"]))
        if masking == "off":
            assert sum(s["masked"] for s in sessions) >= 1
    finally:
        if k is not kube:
            k.close()


PRIVILEGED_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: main
    image: {image}
    securityContext: {{privileged: true}}
"""


def test_retry_mode_approval_is_bound_to_the_body(tmp_path: Path, fake: FakeApiServer) -> None:
    """An approval in retry mode is for the request the reviewer was shown,
    body included: ``create pods -n default`` (the name is in the body) of
    another privileged pod, with another image, does not consume it."""
    k = Kube(tmp_path, fake, approval={"mode": "retry", "timeout": "60s"})
    try:
        approved = tmp_path / "approved.yaml"
        approved.write_text(PRIVILEGED_POD.format(name="debug-approved", image="busybox"))
        other = tmp_path / "other.yaml"
        other.write_text(PRIVILEGED_POD.format(name="debug-other", image="evil/miner"))
        res = k.kubectl("create", "-f", str(approved))
        assert res.returncode == 1 and "needs a reviewer's approval (id apr_" in res.stderr, res.stderr
        approval_id = res.stderr.split("(id ")[1].split(")")[0]

        k.approve(approval_id)
        swapped = k.kubectl("create", "-f", str(other))
        assert swapped.returncode == 1, swapped.stdout
        assert "needs a reviewer's approval (id apr_" in swapped.stderr and approval_id not in swapped.stderr
        assert fake.call(fake.api.store.get, fake_kind("pods"), "default", "debug-other") is None
        # the request that was approved runs, once
        assert "pod/debug-approved created" in k.ok("create", "-f", str(approved))
    finally:
        k.close()


def test_exec_through_the_kubelet_behind_node_proxy_is_an_exec(tmp_path: Path, fake: FakeApiServer) -> None:
    """``nodes/NAME/proxy/run/NS/POD/CONTAINER?cmd=...`` has the node's kubelet
    run a command in a container: an exec by another door. The exec rules
    (the category and a pattern on the command) apply to it as to
    ``kubectl exec``: it is not a low-risk ``proxy nodes`` request."""
    k = Kube(
        tmp_path, fake,
        risk={"review_at": "high", "rules": [{"match": "exec", "action": "review"},
                                             {"pattern": r"^exec .* -- rm ", "action": "deny"}]},
        approval={"mode": "retry", "timeout": "60s"},
    )
    try:
        if k.kubectl("get", "pod", "web-0").returncode != 0:
            (tmp_path / "pod.yaml").write_text(POD)
            k.ok("apply", "-f", str(tmp_path / "pod.yaml"))
        (tmp_path / "empty.json").write_text("{}")
        before = len(fake.api.kubelet_runs)
        res = k.kubectl("create", "--raw", "/api/v1/nodes/fake-node/proxy/run/default/web-0/main?cmd=rm%20-rf%20/data",
                        "-f", str(tmp_path / "empty.json"))
        assert res.returncode == 1 and "request denied" in res.stderr, (res.stdout, res.stderr)
        res = k.kubectl("create", "--raw", "/api/v1/nodes/fake-node/proxy/run/default/web-0/uid-1/main?cmd=id",
                        "-f", str(tmp_path / "empty.json"))
        assert res.returncode == 1 and "needs a reviewer's approval" in res.stderr, (res.stdout, res.stderr)
        assert "exec into pod web-0 in default through the kubelet of node fake-node" in res.stderr
        assert len(fake.api.kubelet_runs) == before
        [session] = k.sessions("exec pods web-0 -n default -c main -- id")[:1]
        assert session["user"] == "alice"
    finally:
        k.close()


def test_kubelet_pod_list_behind_node_proxy_is_masked(kube: Kube) -> None:
    """The kubelet's ``/pods`` (through ``nodes/NAME/proxy``) is a PodList
    with every container's env values: masked like the API server's."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("apply", "-f", "-", input=POD)
    out = kube.ok("get", "--raw", "/api/v1/nodes/fake-node/proxy/pods")
    pods = json.loads(out)["items"]
    assert any(p["metadata"]["name"] == "web-0" for p in pods)
    assert "hunter2" not in out


def test_watch_over_a_websocket_is_not_relayed_unmasked(kube: Kube) -> None:
    """The API server serves a watch over a websocket too (each event a text
    frame; it takes whatever one subprotocol is offered). The gateway masks
    watch events as documents on the HTTP stream only: over a websocket a
    Secret's base64 data would pass with the content rules alone. Such a
    watch is refused with a Status; kubectl watches over HTTP."""
    if kube.kubectl("get", "secret", "wsdb").returncode != 0:
        kube.ok("create", "secret", "generic", "wsdb", "--from-literal=motd=ws-hunter2")
    raw_b64 = base64.b64encode(b"ws-hunter2").decode()
    token = kube.token("alice", ["dev"])
    ctx = ssl.create_default_context(cafile=str(kube.data_dir / "tls" / "ca.pem"))
    url = f"https://127.0.0.1:{kube.port}/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=2"

    async def watch() -> tuple[str, int]:
        seen = ""
        try:
            async with aiohttp.ClientSession() as http, http.ws_connect(
                url, protocols=("v4.channel.k8s.io",), ssl=ctx,
                headers={"Authorization": f"Bearer {token}", "Origin": "http://localhost"},
            ) as ws:
                while True:
                    msg = await ws.receive(timeout=10)
                    if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        return seen, 101
                    seen += msg.data if isinstance(msg.data, str) else msg.data.decode("latin-1")
        except aiohttp.WSServerHandshakeError as exc:
            return seen, exc.status

    seen, code = asyncio.run(watch())
    assert raw_b64 not in seen and "ws-hunter2" not in seen
    assert code == 400
    # a plain watch still works, masked
    res = kube.kubectl("get", "--raw", "/api/v1/namespaces/default/secrets?watch=1&timeoutSeconds=1")
    assert "wsdb" in res.stdout and raw_b64 not in res.stdout


def test_delete_with_a_body_is_judged_by_the_body_s_dry_run(tmp_path: Path, fake: FakeApiServer) -> None:
    """The API server reads a DELETE's options from its body when it has one,
    and then not from the query: ``?dryRun=All`` beside a body deletes for
    real, so it must not cap the risk; ``kubectl delete --dry-run=server``
    (dryRun in the body) is the dry run."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        k.ok("create", "ns", "dry-doomed")
        body = tmp_path / "options.json"
        body.write_text('{"kind":"DeleteOptions","apiVersion":"v1"}')
        res = k.kubectl("delete", "--raw", "/api/v1/namespaces/dry-doomed?dryRun=All", "-f", str(body))
        assert res.returncode == 1 and "needs a reviewer's approval" in res.stderr, (res.stdout, res.stderr)
        assert "dry-doomed" in k.ok("get", "ns", "dry-doomed")
        # a dry run as kubectl sends it runs without a reviewer, and deletes nothing
        assert "(server dry run)" in k.ok("delete", "ns", "dry-doomed", "--dry-run=server")
        assert "dry-doomed" in k.ok("get", "ns", "dry-doomed")
    finally:
        k.close()


def test_exec_command_text_is_what_the_api_server_runs(tmp_path: Path, fake: FakeApiServer) -> None:
    """The command text a reviewer approves (and rules match) is the argv the
    API server decodes from the query, decoded once: an argument with ``%27``
    in it was decoded twice and shown as a quote, so that ``sh -c "echo %27;
    rm ...; %27"`` read as an echo of a quoted string."""
    k = Kube(
        tmp_path, fake, risk={"review_at": "high", "rules": [{"match": "exec", "action": "review"}]},
        approval={"mode": "retry", "timeout": "60s"},
    )
    try:
        if k.kubectl("get", "pod", "web-0").returncode != 0:
            k.ok("apply", "-f", "-", input=POD)
        script = "echo %27; echo pwned; %27"
        res = k.kubectl("exec", "web-0", "--", "sh", "-c", script)
        assert res.returncode == 1 and "needs a reviewer's approval (id apr_" in res.stderr, res.stderr
        approval_id = res.stderr.split("(id ")[1].split(")")[0]

        assert k.approval_text(approval_id).endswith("-- sh -c 'echo %27; echo pwned; %27'")
    finally:
        k.close()


def test_privileged_debug_container_is_held(tmp_path: Path, fake: FakeApiServer) -> None:
    """``kubectl debug POD --profile=sysadmin`` adds a privileged ephemeral
    container (PATCH pods/NAME/ephemeralcontainers): a privileged container
    like any other, held as creating a privileged pod is."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        if k.kubectl("get", "pod", "web-0").returncode != 0:
            k.ok("apply", "-f", "-", input=POD)
        res = k.kubectl("debug", "web-0", "--image=busybox", "--profile=sysadmin")
        assert res.returncode == 1 and "needs a reviewer's approval" in res.stderr, (res.stdout, res.stderr)
        assert "privileged container" in res.stderr
        pod = fake.call(fake.api.store.get, fake_kind("pods"), "default", "web-0")
        assert not pod["spec"].get("ephemeralContainers")
        # a debug container without privileges is an ordinary write
        assert "Defaulting debug container name" in k.ok("debug", "web-0", "--image=busybox")
    finally:
        k.close()


def test_tar_running_a_program_is_no_file_transfer(kube: Kube) -> None:
    """An exec of ``tar cf - ...`` passes unmasked and unrecorded (kubectl
    cp), but tar options that run a program (``--use-compress-program``)
    make its output the program's: such an exec is masked like any other."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("apply", "-f", "-", input=POD)
    program = "--use-compress-program=sh -c 'echo key=AKIAIOSFODNN7EXAMPLE; cat >/dev/null'"
    res = kube.kubectl("exec", "web-0", "--", "tar", "cf", "-", program, "/etc/hostname")
    assert res.returncode == 0, res.stderr
    assert "key=" in res.stdout and "AKIAIOSFODNN7EXAMPLE" not in res.stdout


def test_a_body_with_a_key_given_twice_is_not_read_as_python_reads_it(tmp_path: Path, fake: FakeApiServer) -> None:
    """The API server decodes a key given twice into what the first one
    filled (Go's encoding/json: two objects merge), Python keeps the last:
    a ClusterRoleBinding whose second ``roleRef`` leaves out the name read
    as no cluster-admin binding to the gateway and bound cluster-admin on
    the server. Such a body is opaque: held as an uninspectable RBAC object."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        body = tmp_path / "crb.json"
        body.write_text(
            '{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding",'
            '"metadata":{"name":"dup-admin"},'
            '"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"},'
            '"roleRef":{"kind":"ClusterRole"},'
            '"subjects":[{"kind":"Group","name":"system:authenticated","apiGroup":"rbac.authorization.k8s.io"}]}'
        )
        res = k.kubectl("create", "--raw", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?fieldValidation=Ignore",
                        "-f", str(body))
        assert res.returncode == 1 and "needs a reviewer's approval" in res.stderr, (res.stdout, res.stderr)
        crb = BY_PATH[("rbac.authorization.k8s.io", "v1", "clusterrolebindings")]
        assert fake.call(fake.api.store.get, crb, "", "dup-admin") is None
    finally:
        k.close()


def _pb(num: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    n, length = len(payload), b""
    while True:
        length += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    return bytes([(num << 3) | 2]) + length + payload


def test_protobuf_role_ref_given_twice_is_read_as_the_server_reads_it(tmp_path: Path, fake: FakeApiServer) -> None:
    """A protobuf ClusterRoleBinding (what kubectl's typed create sends) whose
    roleRef comes twice: the server merges the two, the last name winning.
    The gateway read the first (``view``) and let a cluster-admin binding
    through as a plain rbac_change."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        group = b"rbac.authorization.k8s.io"
        raw = (
            _pb(1, _pb(1, b"pb-dup-admin"))
            + _pb(2, _pb(1, b"Group") + _pb(2, group) + _pb(3, b"system:authenticated"))
            + _pb(3, _pb(1, group) + _pb(2, b"ClusterRole") + _pb(3, b"view"))
            + _pb(3, _pb(3, b"cluster-admin"))
        )
        body = b"k8s\x00" + _pb(1, _pb(1, group + b"/v1") + _pb(2, b"ClusterRoleBinding")) + _pb(2, raw)
        code, raw = k.request(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", method="POST", body=body,
            headers={"Content-Type": "application/vnd.kubernetes.protobuf", "Accept": "application/json"},
        )  # fmt: skip
        text = raw.decode()
        assert code == 403 and "needs a reviewer's approval" in text, (code, text)
        crb = BY_PATH[("rbac.authorization.k8s.io", "v1", "clusterrolebindings")]
        assert fake.call(fake.api.store.get, crb, "", "pb-dup-admin") is None
    finally:
        k.close()


def test_yaml_body_read_as_the_api_server_reads_yaml(tmp_path: Path, fake: FakeApiServer) -> None:
    """The API server reads YAML bodies as YAML 1.1 with goyaml.v2's words:
    ``privileged: y`` is true there (and ``replicas: 0o0`` is 0). PyYAML
    read ``y`` as a string, and a privileged pod created from YAML ran
    without a reviewer."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        body = (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: yaml-priv}\n"
            b"spec: {containers: [{name: main, image: busybox, securityContext: {privileged: y}}]}\n"
        )
        code, raw = k.request(
            "/api/v1/namespaces/default/pods", method="POST", body=body,
            headers={"Content-Type": "application/yaml", "Accept": "application/json"},
        )
        text = raw.decode()
        assert code == 403 and "privileged container" in text, (code, text)
        assert fake.call(fake.api.store.get, fake_kind("pods"), "default", "yaml-priv") is None
    finally:
        k.close()


def test_capability_added_by_a_json_patch_is_held(tmp_path: Path, fake: FakeApiServer) -> None:
    """``kubectl patch --type=json`` adding SYS_ADMIN to a container's
    capabilities (the list, or one element of it) is a privileged pod
    spec, as the same change in a merge patch or an object is."""
    k = Kube(tmp_path, fake, risk={"review_at": "high"}, approval={"mode": "retry", "timeout": "60s"})
    try:
        dep = (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: caps}\n"
            "spec: {replicas: 1, selector: {matchLabels: {app: caps}}, template: {metadata: {labels: {app: caps}}, "
            "spec: {containers: [{name: main, image: nginx, securityContext: {capabilities: {add: [NET_BIND_SERVICE]}}}]}}}\n"
        )
        k.ok("apply", "-f", "-", input=dep)
        base = "/spec/template/spec/containers/0/securityContext/capabilities/add"
        for patch in (
            [{"op": "add", "path": base + "/-", "value": "SYS_ADMIN"}],
            [{"op": "replace", "path": base, "value": ["SYS_ADMIN"]}],
        ):
            res = k.kubectl("patch", "deploy", "caps", "--type=json", "-p", json.dumps(patch))
            assert res.returncode == 1 and "capabilities SYS_ADMIN" in res.stderr, (patch, res.stdout, res.stderr)
        dep_now = fake.call(fake.api.store.get, fake_kind("deployments"), "default", "caps")
        assert dep_now["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    finally:
        k.close()


def test_table_column_named_like_a_secret_is_masked(kube: Kube) -> None:
    """A custom resource's printer column showing a password: ``kubectl get``
    (a Table) showed it in clear though ``-o yaml`` masks the same field by
    its key. A cell under a column whose name names a secret is masked
    like that key's value, in lists and in watch events (only the first of
    which carries the column definitions)."""
    dbu = ("apiVersion: db.example.com/v1\nkind: DatabaseUser\nmetadata: {name: app}\n"
           "spec: {user: app_rw, password: tbl-hunter2-pw}\n")
    if kube.kubectl("get", "dbu", "app").returncode != 0:
        kube.ok("apply", "-f", "-", input=dbu)
    assert "tbl-hunter2-pw" not in kube.ok("get", "dbu", "app", "-o", "yaml")
    table = kube.ok("get", "dbu")
    assert "app_rw" in table and "tbl-hunter2-pw" not in table
    watch = subprocess.Popen(kube.argv("get", "dbu", "-w"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        kube.ok("apply", "-f", "-", input=dbu.replace("app}", "app2}").replace("tbl-hunter2-pw", "tbl-second-pw"))
        time.sleep(1.0)
    finally:
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
    assert "app2" in out
    assert "tbl-hunter2-pw" not in out and "tbl-second-pw" not in out


def test_logs_limit_bytes_spelled_with_an_escape_is_not_sent_on(kube: Kube, fake: FakeApiServer) -> None:
    """``limit%42ytes`` is ``limitBytes`` to the API server: the gateway
    applies it (to the masked log) and must not send it on, or the API
    server's cut leaves a piece of a key that no rule matches."""
    if kube.kubectl("get", "pod", "pay-1").returncode != 0:
        kube.ok("run", "pay-1", "--image=busybox")
    key = "AKIAIOSFODNN7EXAMPLE"
    fake.call(fake.api.store.append_log, "default", "pay-1", f"uploaded with {key} ok")
    raw = "".join(f"{entry}\n" for entry in fake.api.store.logs[("default", "pay-1")]).encode()
    offset = raw.index(key.encode()) + len(key) - 1  # one character short
    # (kubectl get --raw would respell it limitBytes)
    code, raw = kube.request(f"/api/v1/namespaces/default/pods/pay-1/log?limit%42ytes={offset}")
    assert code == 200, raw
    cut = raw.decode()
    assert key[:12] not in cut
    assert len(cut.encode()) == offset
    assert not any("imit%42ytes" in p or "limitBytes" in p for _, p, _ in fake.api.requests if "pay-1/log" in p)


def test_the_client_cannot_say_who_it_is_to_the_api_server(kube: Kube, fake: FakeApiServer) -> None:
    """Impersonation and front-proxy identity headers from the client never
    reach the API server: only the gateway's own Impersonate-* do."""
    claims = {"Impersonate-User": "mallory", "Impersonate-Group": "system:masters",
              "X-Remote-User": "mallory", "X-Remote-Group": "system:masters", "X-Remote-Extra-Scopes": "all"}
    for path in ("/api/v1/namespaces/default/configmaps", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1"):
        code, _ = kube.request(path, headers=claims)
        assert code == 200
    seen = [h for _, p, h in fake.api.requests if "/configmaps" in p][-2:]
    assert len(seen) == 2
    for h in seen:
        assert not any(k.lower().startswith("x-remote-") for k in h), h
        assert not any(v in ("mallory", "system:masters", "all") for v in h.values()), h
        assert h.getall("Impersonate-User") == ["alice"] and h.getall("Impersonate-Group") == ["dev"], h


def test_kubernetes_reserved_names_are_not_impersonated(kube: Kube, fake: FakeApiServer) -> None:
    """An identity provider's group called system:masters must not make its
    members cluster-admin, nor a subject called system:... act as one of
    Kubernetes' own users."""
    masters = kube.kubeconfig_for("carol", ["dev", "system:masters"])
    before = len(fake.api.requests)
    res = kube.kubectl("get", "ns", kubeconfig=masters)
    assert res.returncode == 0 and "kube-system" in res.stdout, res.stderr
    seen = [h for _, p, h in fake.api.requests[before:] if p.startswith("/api/v1/namespaces")]
    assert seen and all(h.getall("Impersonate-User") == ["carol"] for h in seen)
    assert all(h.getall("Impersonate-Group") == ["dev"] for h in seen)
    system = kube.kubeconfig_for("system:kube-controller-manager", ["dev"])
    before = len(fake.api.requests)
    res = kube.kubectl("get", "ns", kubeconfig=system)
    assert res.returncode != 0 and "is a name Kubernetes reserves" in res.stderr, res.stderr
    assert not any(p.startswith("/api/v1/namespaces") for _, p, _ in fake.api.requests[before:])


@pytest.mark.parametrize("path", ["/api/v1/x/../namespaces/default", "/api/v1/namespaces/./default",
                                  "/api/v1/x/%2e%2e/namespaces/default"])
def test_dot_segments_are_refused(kube: Kube, fake: FakeApiServer, path: str) -> None:
    """A proxy in front of the API server may resolve '..' before it routes:
    the gateway would have judged another request than the one that runs."""
    before = len(fake.api.requests)
    code, body = kube.request(path, method="DELETE")
    assert code == 400
    assert b"'..' segments is refused" in body
    assert len(fake.api.requests) == before
    assert "default" in kube.ok("get", "ns")


def test_exec_command_line_is_masked_in_the_recording(kube: Kube) -> None:
    """A credential on an exec's command line runs as sent; the recorded
    Command keeps it masked, as the output is."""
    if kube.kubectl("get", "pod", "web-0").returncode != 0:
        kube.ok("run", "web-0", "--image=busybox")
    marker = f"cmdline-{secrets.token_hex(4)}"
    res = kube.kubectl("exec", "web-0", "--", "sh", "-c", f"X=AKIAIOSFODNN7EXAMPLE; echo {marker} ${{#X}}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [marker, "20"]
    [session] = kube.sessions(marker)
    events = kube.events(session["session_id"])
    commands = [e for e in events if e["type"] == "command"]
    assert any(marker in e["text"] and "X=[" in e["text"] for e in commands), commands
    recorded = json.dumps(events) + "".join(
        base64.b64decode(e["data"]["base64"]).decode("utf-8", "replace") if isinstance(e["data"], dict)
        else str(e["data"])
        for e in events if e["type"] == "output"
    )  # fmt: skip
    assert "AKIAIOSFODNN7EXAMPLE" not in recorded, recorded


def test_held_exec_shown_to_reviewers_masked(tmp_path: Path, fake: FakeApiServer) -> None:
    """Retry mode: the approval a reviewer sees (and the store keeps) has a
    credential on the exec's command line masked; the retry still matches
    the approval, bound to the command as sent."""
    k = Kube(
        tmp_path, fake, risk={"review_at": "high", "rules": [{"match": "exec", "action": "review"}]},
        approval={"mode": "retry", "timeout": "60s"},
    )
    try:
        if k.kubectl("get", "pod", "web-0").returncode != 0:
            k.ok("apply", "-f", "-", input=POD)
        argv = ("exec", "web-0", "--", "sh", "-c", "X=AKIAIOSFODNN7EXAMPLE; echo len ${#X}")
        res = k.kubectl(*argv)
        assert res.returncode == 1 and "needs a reviewer's approval (id apr_" in res.stderr, res.stderr
        approval_id = res.stderr.split("(id ")[1].split(")")[0]

        shown = k.approval_text(approval_id)
        assert "AKIAIOSFODNN7EXAMPLE" not in shown and "X=[" in shown, shown
        k.approve(approval_id)
        res = k.kubectl(*argv)
        assert res.returncode == 0 and res.stdout.strip() == "len 20", res.stderr
    finally:
        k.close()
