"""A body that masking cannot read is relayed to the client untouched
under ``unmaskable: pass`` (the operator's choice), but its recorded copy
kept the values masking rules hit: an ``application/octet-stream`` answer
with an e-mail address was recorded with the address in clear, while a
binary *request* body was recorded content-masked. The recorded copy is
now content-masked too; the client still gets every byte as sent."""

from __future__ import annotations

from tests.http.conftest import Env
from tests.http.recordings import session_events, sessions_with
from tests.http.test_proxy import curl


def test_passed_binary_body_is_recorded_masked(env: Env) -> None:
    out = curl(env.url("api", "/binary?rec=1"), timeout=10)
    assert out.stdout == b"\x00\x01 alice@example.com"  # unmaskable: pass
    sid = sessions_with(env.recordings, "GET /binary?rec=1")[-1]
    rec = b"".join(
        o.data for o in session_events(env.recordings, sid, "output") if o.stream.value == "stdout"
    )
    body = rec.partition(b"\r\n\r\n")[2]
    assert body == b"\x00\x01 [EMAIL]", rec


def test_large_passed_body_is_recorded_to_the_cap(env: Env) -> None:
    out = curl(env.url("api", "/big?n=300000"))
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
