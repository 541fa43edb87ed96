"""What a request may act as is judged reading by reading; a hostile
request must not make that cost more than it costs the client. A body of
4000 lines ``name="_method"`` (no blank line after any) made the body
scan backtrack over the rest of the body from every one of them: 7 s on
the event loop, every session of the daemon stalled. And an override
field listing thousands of methods was judged once per method. The scan
is now linear (bounded patterns), and more than ``MAX_READINGS`` (8)
method readings or ``MAX_TARGETS`` (2) target overrides get 400."""

from __future__ import annotations

import threading
import time

from tests.http.conftest import Env, raw_request
from tests.http.test_proxy import curl


def _request(env: Env, head: str, body: bytes = b"") -> bytes:
    return raw_request(env, "POST", "/api/scan", headers=head, body=body, timeout=30)


def test_a_hostile_body_does_not_stall_the_daemon(env: Env) -> None:
    body = (b'name="_method"\n' * 4300)[:64000]
    got: list[bytes] = []
    worker = threading.Thread(
        target=lambda: got.append(
            _request(env, "Content-Type: multipart/form-data; boundary=x\r\n", body)
        )
    )
    started = time.monotonic()
    worker.start()
    time.sleep(0.05)
    other = curl("-o", "/dev/null", "-w", "%{time_total}", env.url("api", "/echo/meanwhile"))
    worker.join(30)
    assert float(other.stdout) < 1.0, other.stdout  # another session was served meanwhile
    assert time.monotonic() - started < 2.0
    assert got and got[0].startswith(b"HTTP/1.1 200"), got


def test_too_many_method_readings_are_refused(env: Env) -> None:
    before = len(env.upstream.requests)
    values = ",".join(f"M{i}" for i in range(3000))
    started = time.monotonic()
    data = _request(env, f"X-HTTP-Method-Override: {values}\r\n")
    assert data.startswith(b"HTTP/1.1 400"), data
    assert b"method readings" in data
    body = "&".join(f"_method=M{i}" for i in range(40)).encode()
    data = _request(env, "Content-Type: application/x-www-form-urlencoded\r\n", body)
    assert data.startswith(b"HTTP/1.1 400"), data
    assert time.monotonic() - started < 2.0
    assert len(env.upstream.requests) == before
