"""An upstream that answers the same bytes again (an API's small JSON
documents): the gateway remembers what it made of a whole response and does
it again (``exchange.Replay``). The client, the recording and the session's
byte count must see exactly what the first answer gave them, every time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hoopd.identity.apikeys import hash_api_key
from tests.helpers import Daemon, free_port
from tests.http.conftest import KEYS
from tests.http.recordings import session_events, sessions_with


def _answer(doc: dict[str, object]) -> bytes:
    body = json.dumps(doc).encode()
    return (
        b"HTTP/1.1 200 OK\r\nDate: Sun, 29 Nov 2026 09:00:00 GMT\r\nX-Owner: ops@example.com\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body


PATHS = ("/item", "/item", "/other", "/item", "/other", "/other", "/item")
ITEM = _answer({"id": 42, "owner": "ops@example.com", "tags": ["a"]})
OTHER = _answer({"id": 7, "owner": "dev@example.org", "note": "call +1 415 555 0100"})


async def _canned_upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request head with fixed bytes, in one write."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(OTHER if b" /other " in head else ITEM)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def test_the_same_answer_again_reaches_client_and_recording_the_same(tmp_path: Path) -> None:
    upstream = await asyncio.start_server(_canned_upstream, "127.0.0.1", 0)
    up_port = upstream.sockets[0].getsockname()[1]
    port = free_port()
    config = {
        "identity": {
            "api_keys": [{"name": "alice", "sha256": hash_api_key(KEYS["alice"][0]), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": "api",
                "protocol": "http",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"url": f"http://127.0.0.1:{up_port}"},
                "allow_groups": ["dev"],
                "masking": {"recognizers": {"personal": True}},
            }
        ],
    }
    daemon = await asyncio.to_thread(lambda: Daemon(tmp_path, config).start())
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # an answer is traced the second time it comes, replayed from the third on
        got = [await _get(reader, writer, p) for p in PATHS]
        writer.close()
        await writer.wait_closed()
    finally:
        await asyncio.to_thread(daemon.stop)
        upstream.close()
    item, other = got[0], got[2]
    assert got == [item if p == "/item" else other for p in PATHS]
    for answer in (item, other):
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"@example." not in answer and b"555 0100" not in answer
    # masked in place: the upstream's formatting is kept around the value
    assert b'"owner": "[EMAIL]"' in item and b"X-Owner: [EMAIL]" in item
    assert b'"owner": "[EMAIL]"' in other and b"[PHONE]" in other

    sid = sessions_with(daemon.recordings, "GET /other")[0]
    outputs = [o for o in session_events(daemon.recordings, sid, "output") if o.stream == "stdout"]
    # every answer recorded as the client got it, with what its body masking replaced
    assert [o.data for o in outputs] == got
    assert [o.command_seq for o in outputs] == list(range(1, len(PATHS) + 1))
    item_counts, other_counts = dict(outputs[0].masked), dict(outputs[2].masked)
    assert item_counts and other_counts
    expected = [item_counts if p == "/item" else other_counts for p in PATHS]
    assert [dict(o.masked) for o in outputs] == expected
    results = session_events(daemon.recordings, sid, "result")
    assert [(r.command_seq, r.status) for r in results] == [(i, "200") for i in range(1, len(PATHS) + 1)]
    # the session's byte count: the bodies the client got, each time
    bodies = sum(len(a.partition(b"\r\n\r\n")[2]) for a in got)
    assert session_events(daemon.recordings, sid, "session_end")[0].bytes_out == bodies
