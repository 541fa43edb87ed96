"""A body that masking cannot read is relayed to the client untouched
under ``unmaskable: pass`` (the operator's choice), but its recorded copy
kept the values masking rules hit: an ``application/octet-stream`` answer
with an e-mail address was recorded with the address in clear, while a
binary *request* body was recorded content-masked. The recorded copy is
now content-masked too; the client still gets every byte as sent."""

from __future__ import annotations

import subprocess

from tests.http.conftest import KEYS, Env
from tests.http.recordings import session_events, sessions_with


def test_passed_binary_body_is_recorded_masked(env: Env) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-H", f"Authorization: Bearer {KEYS['alice'][0]}",
         env.url("api", "/binary?rec=1")],
        capture_output=True, timeout=15,
    )  # fmt: skip
    assert out.stdout == b"\x00\x01 alice@example.com"  # unmaskable: pass
    sid = sessions_with(env.recordings, "GET /binary?rec=1")[-1]
    rec = b"".join(
        o.data for o in session_events(env.recordings, sid, "output") if o.stream.value == "stdout"
    )
    body = rec.partition(b"\r\n\r\n")[2]
    assert body == b"\x00\x01 [EMAIL]", rec


def test_large_passed_body_is_recorded_to_the_cap(env: Env) -> None:
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "30", "-H", f"Authorization: Bearer {KEYS['alice'][0]}",
         env.url("api", "/big?n=300000")],
        capture_output=True, timeout=35,
    )  # fmt: skip
    assert len(out.stdout) == 300000
    sid = sessions_with(env.recordings, "GET /big?n=300000")[-1]
    rec = b"".join(
        o.data for o in session_events(env.recordings, sid, "output") if o.stream.value == "stdout"
    )
    body = rec.partition(b"\r\n\r\n")[2]
    assert len(body) == 64 * 1024 and body == out.stdout[: len(body)]


async def test_passed_binary_websocket_message_is_recorded_masked(env: Env) -> None:
    import asyncio

    import aiohttp

    from tests.http.conftest import auth

    payload = b"\x00\x01 mail alice@example.com \xff"
    async with (
        aiohttp.ClientSession(headers=auth("alice")) as s,
        s.ws_connect(env.url("api", "/ws?binrec=1")) as ws,
    ):
        await ws.send_bytes(payload)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == payload  # unmaskable: pass
    sid = sessions_with(env.recordings, "GET /ws?binrec=1")[-1]
    outputs = [e for e in session_events(env.recordings, sid, "output") if e.command_seq]
    got = b"".join(e.data for e in outputs if e.stream.value == "stdout")
    sent = b"".join(e.data for e in outputs if e.stream.value == "stdin")
    assert b"alice@example.com" not in got and b"alice@example.com" not in sent
    assert b"\x00\x01 mail [EMAIL] \xff" in got
