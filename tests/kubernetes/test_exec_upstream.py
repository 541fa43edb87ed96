"""What the API server answers to exec itself, outside stdout/stderr: the
upgrade response (101 or a refusal) and the status channel (3). The real
kubectl through ``hoopd serve`` against the fake API server, whose upstream
token (``upstream-sa-token``) must never reach the client."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kubernetes.fakeapi import FakeApiServer
from tests.kubernetes.test_kubectl import Kube, fake_kind

TOKEN = "upstream-sa-token"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeApiServer]:
    with FakeApiServer(tmp_path_factory.mktemp("fake-tls")) as server:
        yield server


@pytest.fixture(scope="module", params=["default", "off"])
def kube(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeApiServer) -> Iterator[Kube]:
    extra = {} if request.param == "default" else {"masking": {"enabled": False}}
    k = Kube(tmp_path_factory.mktemp(f"kube-{request.param}"), fake, **extra)
    try:
        for pod in ("web-0", "echo-status"):
            if k.kubectl("get", "pod", pod).returncode != 0:
                k.ok("run", pod, "--image=busybox")
        yield k
    finally:
        k.close()


def upgrade_head(kube: Kube, pod: str) -> str:
    """The gateway's answer to an exec upgrade, as a websocket client reads
    it: the head and, for a refusal, its whole body (by Content-Length)."""
    ctx = ssl.create_default_context(cafile=str(kube.data_dir / "tls" / "ca.pem"))
    token = kube.token("alice", ["dev"])
    req = (
        f"GET /api/v1/namespaces/default/pods/{pod}/exec?command=true&stdout=true HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{kube.port}\r\nAuthorization: Bearer {token}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", kube.port), timeout=20) as raw, ctx.wrap_socket(
        raw, server_hostname="127.0.0.1"
    ) as sock:
        sock.sendall(req.encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < content_length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.decode("latin-1")


def content_length(data: bytes) -> int:
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name == "content-length":
            return int(value)
    return 0


def direct_kubectl(fake: FakeApiServer, workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl straight at the fake API server (with the gateway's token):
    what a user without the gateway sees."""
    config = workdir / "direct-kubeconfig"
    if not config.exists():
        config.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "direct",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url, "certificate-authority": str(fake.ca)}}],
            "users": [{"name": "sa", "user": {"token": TOKEN}}],
            "contexts": [{"name": "direct", "context": {"cluster": "fake", "user": "sa", "namespace": "default"}}],
        }))  # fmt: skip
    argv = ["kubectl", "--kubeconfig", str(config), "--cache-dir", str(workdir / "direct-cache"), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def output_text(data: object) -> str:
    """An exported Output's data (text, or ``{"base64": ...}`` for bytes that are not)."""
    if isinstance(data, dict):
        return base64.b64decode(data["base64"]).decode("utf-8", "replace")
    return str(data)


def assert_no_token_recorded(kube: Kube, text: str) -> None:
    sessions = kube.sessions(text)
    assert sessions
    for session in sessions:
        assert TOKEN not in json.dumps(kube.events(session["session_id"]))


UNSCHEDULED = """
apiVersion: v1
kind: Pod
metadata: {name: unscheduled}
spec:
  nodeName: ""
  containers: [{name: main, image: busybox}]
"""


@pytest.mark.parametrize(
    ("args", "printed"),
    [
        (("exec", "nope", "--", "true"), 'Error from server (NotFound): pods "nope" not found'),
        (("exec", "web-0", "-c", "nope", "--", "true"),
         "Error from server (BadRequest): container nope is not valid for pod web-0"),
        (("exec", "unscheduled", "--", "true"),
         "Error from server (BadRequest): pod unscheduled does not have a host assigned"),
        (("attach", "-q", "unscheduled"),
         "Error from server (BadRequest): pod unscheduled does not have a host assigned"),
    ],
)  # fmt: skip
def test_refused_exec_prints_the_api_servers_status(
    kube: Kube, fake: FakeApiServer, tmp_path: Path, args: tuple[str, ...], printed: str
) -> None:
    """An exec the API server refuses (kubectl tries the websocket, then
    SPDY): kubectl prints the API server's own Status, as without the
    gateway, and the recording holds the refused exec with that Status."""
    if kube.kubectl("get", "pod", "unscheduled").returncode != 0:
        kube.ok("apply", "-f", "-", input=UNSCHEDULED)
    res = kube.kubectl(*args)
    direct = direct_kubectl(fake, tmp_path, *args)
    assert (direct.returncode, direct.stderr.strip()) == (1, printed), direct.stderr
    assert (res.returncode, res.stderr, res.stdout) == (1, direct.stderr, direct.stdout)
    pod = next(a for a in args[1:] if not a.startswith("-"))
    if pod == "nope":
        return  # kubectl reads the pod first: no exec was sent
    text = f"{args[0]} pods {pod} -n default" + (" -c nope" if "-c" in args else "")
    [websocket, spdy] = kube.sessions(text)[-2:]
    events = kube.events(websocket["session_id"])
    body = "".join(output_text(e["data"]) for e in events if e["type"] == "output" and e["stream"] == "body")
    status = json.loads(body)
    assert (status["kind"], status["code"], status["message"]) == ("Status", 400, printed.partition("): ")[2])
    [result] = [e for e in events if e["type"] == "result"]
    assert result["status"] == "400"
    [command] = [e for e in kube.events(spdy["session_id"]) if e["type"] == "command"]
    assert command["attrs"]["transport"] == "spdy"


def test_kubelets_text_refusal_is_printed_as_without_the_gateway(
    kube: Kube, fake: FakeApiServer, tmp_path: Path
) -> None:
    """A container that is not running: the kubelet answers the exec with a
    text body, which the API server relays; kubectl prints it after
    "unable to upgrade connection", through the gateway as without it."""
    if kube.kubectl("get", "pod", "stopped").returncode != 0:
        kube.ok("run", "stopped", "--image=busybox")

    def stop() -> None:
        pod = fake.api.store.get(fake_kind("pods"), "default", "stopped")
        assert pod is not None
        pod["status"]["containerStatuses"][0]["state"] = {"terminated": {"exitCode": 0}}

    fake.call(stop)
    res = kube.kubectl("exec", "stopped", "--", "true")
    direct = direct_kubectl(fake, tmp_path, "exec", "stopped", "--", "true")
    assert direct.stderr == 'error: unable to upgrade connection: container not found ("stopped")\n', direct.stderr
    assert (res.returncode, res.stderr) == (1, direct.stderr)


def test_refused_exec_upgrade_status_is_masked(kube: Kube) -> None:
    """A 403 to the upgrade that quotes the credential in its Status and a
    header: kubectl prints the API server's message with the upstream token
    masked (masking on or off), in the websocket answer and in the one
    repeated for kubectl's SPDY retry; the header is not relayed."""
    res = kube.kubectl("exec", "echo-status", "--", "true")
    assert res.returncode == 1
    assert res.stderr == (
        "Error from server (Forbidden): credential 'Bearer [REDACTED]' may not exec in echo-status\n"
    ), res.stderr
    head = upgrade_head(kube, "echo-status")
    assert head.startswith("HTTP/1.1 403"), head
    assert "may not exec in echo-status" in head and "Bearer [REDACTED]" in head, head
    assert TOKEN not in head and "X-Echo-Authorization" not in head, head
    assert_no_token_recorded(kube, "exec pods echo-status")
    events = kube.events(kube.sessions("exec pods echo-status -n default -- true")[0]["session_id"])
    [result] = [e for e in events if e["type"] == "result"]
    assert result["status"] == "403" and "may not exec" in result["error"], result
    body = "".join(output_text(e["data"]) for e in events if e["type"] == "output" and e["stream"] == "body")
    assert "credential 'Bearer [REDACTED]' may not exec in echo-status" in body, body


def test_exec_upgrade_of_a_missing_pod_is_the_api_servers_404(kube: Kube) -> None:
    """A pod gone between kubectl's read of it and the exec (or a client that
    does not read it first): the upgrade's answer is the API server's 404
    Status, not the gateway's."""
    head = upgrade_head(kube, "gone")
    assert head.startswith("HTTP/1.1 404"), head
    status = json.loads(head.partition("\r\n\r\n")[2])
    assert (status["reason"], status["message"]) == ("NotFound", 'pods "gone" not found'), status


def test_exec_upgrade_101_headers_are_the_gateways(kube: Kube) -> None:
    """The upstream's 101 carries a mirrored Authorization header; the 101
    the client gets is the gateway's own handshake."""
    head = upgrade_head(kube, "web-0")
    assert head.startswith("HTTP/1.1 101"), head
    assert TOKEN not in head and "X-Echo-Authorization" not in head, head


def test_exec_status_channel_is_masked(kube: Kube) -> None:
    """kubectl prints the message of a failed exec's Status (channel 3): the
    upstream token it quotes is [REDACTED], masking on or off, and content
    rules apply to it like to stdout (a runtime's "executable not found"
    quotes the command)."""
    res = kube.kubectl("exec", "web-0", "--", "echo-credential")
    assert res.returncode != 0
    assert "exec refused for credential 'Bearer [REDACTED]'" in res.stderr, res.stderr
    assert TOKEN not in res.stdout + res.stderr
    assert_no_token_recorded(kube, "echo-credential")
    if kube.daemon.config["connections"][0].get("masking", {}).get("enabled", True):
        res = kube.kubectl("exec", "web-0", "--", "AKIAIOSFODNN7EXAMPLE")
        assert res.returncode != 0
        assert "No such file or directory" in res.stderr, res.stderr
        assert "AKIAIOSFODNN7EXAMPLE" not in res.stderr.replace("exec web-0 -- AKIAIOSFODNN7EXAMPLE", "")
        assert "[AWS_ACCESS_KEY_ID]" in res.stderr, res.stderr


def test_exec_exit_code_survives_status_masking(kube: Kube) -> None:
    res = kube.kubectl("exec", "web-0", "--", "sh", "-c", "exit 7")
    assert res.returncode == 7, res.stderr
    assert "command terminated with exit code 7" in res.stderr


def test_warning_header_kubectl_prints_is_masked(kube: Kube) -> None:
    """kubectl prints a response's ``Warning`` header (an admission webhook's
    warning) on stderr: content rules and the upstream token apply to it as
    to a body."""
    res = kube.kubectl("get", "--raw", "/warning")
    assert res.returncode == 0, res.stderr
    assert "Warning: env DB_PASSWORD has a literal value" in res.stderr, res.stderr
    assert TOKEN not in res.stderr and "Bearer [REDACTED]" in res.stderr, res.stderr
    if kube.daemon.config["connections"][0].get("masking", {}).get("enabled", True):
        assert "hunter2" not in res.stderr and "AKIAIOSFODNN7EXAMPLE" not in res.stderr, res.stderr
        assert "password=[SECRET]" in res.stderr and "[AWS_ACCESS_KEY_ID]" in res.stderr, res.stderr


def test_exec_text_frame_is_masked_in_the_recording(kube: Kube) -> None:
    """A text frame from the upstream (no channel protocol sends one; kubectl
    fails on it without showing it) is recorded and relayed masked like
    output."""
    res = kube.kubectl("exec", "web-0", "--", "echo-text")
    assert "unexpected message type" in res.stderr, res.stderr
    assert TOKEN not in res.stdout + res.stderr
    [session] = kube.sessions("-- echo-text")
    events = kube.events(session["session_id"])
    recorded = json.dumps(events) + "".join(
        output_text(e["data"]) for e in events if e["type"] == "output"
    )
    assert "debug: key" in recorded
    assert TOKEN not in recorded and "Bearer [REDACTED]" in recorded, recorded
    if kube.daemon.config["connections"][0].get("masking", {}).get("enabled", True):
        assert "AKIAIOSFODNN7EXAMPLE" not in recorded, recorded


class BrokenUpstream:
    """A plain-HTTP "API server" that answers every request with a head the
    gateway cannot parse, quoting the request's Authorization in it (a
    misconfigured proxy in front of the API server)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ca = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                cred = next(
                    (line.split(b":", 1)[1].strip() for line in data.split(b"\r\n")
                     if line.lower().startswith(b"authorization:")), b"",
                )  # fmt: skip
                if self.kind == "status":
                    conn.sendall(b"HTTP/1.1 OOPS " + cred + b"\r\n\r\n")
                elif self.kind == "no-upgrade":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Debug " + cred + b"\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("kind", ["status", "header"])
def test_an_unparsable_upstream_head_is_not_quoted_unmasked(
    kind: str, fake: FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The 503 the gateway answers for a head it cannot parse says why, with
    a piece of the bad line: the upstream token in it is masked, in what
    kubectl prints and in the recording."""
    broken = BrokenUpstream(kind)
    workdir = tmp_path_factory.mktemp("kube-broken")
    # Kube writes the token to workdir/sa-token before the daemon starts
    k = Kube(workdir, fake, upstream={"url": broken.url, "token": f"file:{workdir / 'sa-token'}"})
    try:
        res = k.kubectl("get", "--raw", "/api/v1/namespaces")
        assert res.returncode != 0
        assert "ServiceUnavailable" in res.stderr and "bad " in res.stderr, res.stderr
        assert "[REDACTED]" in res.stderr and TOKEN not in res.stderr, res.stderr
        assert_no_token_recorded(k, "namespaces")
    finally:
        k.close()
        broken.close()


def test_an_upgrade_answered_without_an_upgrade_is_a_502(
    fake: FakeApiServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An upstream (a proxy that does not pass upgrades) answering the exec
    with a 200: the client gets a 502 Status, not a 200 it would take for
    success."""
    broken = BrokenUpstream("no-upgrade")
    workdir = tmp_path_factory.mktemp("kube-no-upgrade")
    k = Kube(workdir, fake, upstream={"url": broken.url, "token": f"file:{workdir / 'sa-token'}"})
    try:
        head = upgrade_head(k, "web-0")
        assert head.startswith("HTTP/1.1 502"), head
        status = json.loads(head.partition("\r\n\r\n")[2])
        assert status["message"].startswith("hoopd: the API server answered the exec upgrade with 200"), status
    finally:
        k.close()
        broken.close()
