"""JSON may hold a lone surrogate escape (``"\\ud800"``: allowed by JSON's
grammar, not encodable as UTF-8; a user can store one in any field). When
masking changed such a document, the walk raised UnicodeEncodeError: a
client's JSON request body with one (and an e-mail address) got no answer
at all, the connection dropped; a response with one got a 502 ("'utf-8'
codec can't encode characters") instead of the masked document. Now the
lone escape is read as U+FFFD and the document masked as any other."""

from __future__ import annotations

import json

from tests.http.conftest import KEYS, Env, exchange
from tests.http.recordings import session_events, sessions_with

BODY = b'{"email": "alice@example.com", "nick": "\\ud800", "home_ssn": "x"}'


def test_request_body_with_a_lone_surrogate_is_answered_and_recorded_masked(env: Env) -> None:
    data = exchange(
        env,
        f"POST /echo/lone HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\nConnection: close\r\n\r\n".encode()
        + BODY,
    )
    assert data.startswith(b"HTTP/1.1 200"), data
    assert json.loads(data.partition(b"\r\n\r\n")[2])["body_len"] == len(BODY)  # sent as it came
    sid = sessions_with(env.recordings, "POST /echo/lone")[-1]
    rec = b"".join(
        o.data for o in session_events(env.recordings, sid, "output") if o.stream.value == "stdin"
    )
    assert b"alice@example.com" not in rec and b'"x"' not in rec, rec
    assert b"[EMAIL]" in rec


def test_response_with_a_lone_surrogate_is_masked(env: Env) -> None:
    data = exchange(
        env,
        f"GET /lone-surrogate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS['alice'][0]}\r\n"
        "Connection: close\r\n\r\n".encode(),
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    doc = json.loads(body)
    assert doc["email"] == "[EMAIL]" and "123" not in doc["home_ssn"]
    assert doc["nick"] == "x\ufffd"


def test_only_lone_escapes_are_replaced() -> None:
    from protocols.http.bodies import replace_lone_surrogates as fix

    assert fix(rb'"\ud800"') == rb'"\ufffd"'
    assert fix(rb'"\ud83d\ude00"') == rb'"\ud83d\ude00"'  # a pair is one character
    assert fix(rb'"\\ud800"') == rb'"\\ud800"'  # an escaped backslash, then text
    assert fix(rb'"\\\ud800"') == rb'"\\\ufffd"'
    assert fix(rb'"\udc00\uD800"') == rb'"\ufffd\ufffd"'
