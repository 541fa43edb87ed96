"""WebSocket frames, sans-IO: any split gives the same result, garbage only
raises WsError, text messages come out masked whatever their fragmentation."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.http import ws
from tests.support.chunks import split

MASKER = build_masker(
    MaskingConfig.model_validate({"recognizers": {"personal": True}}), b"0123456789abcdef0123456789abcdef"
)
TEXTS = ["hello", "mail alice@example.com now", "é日本", "", "AKIAIOSFODNN7EXAMPLE", "x" * 300]


def client_frame(fin: bool, opcode: int, payload: bytes, key: bytes) -> bytes:
    """A masked (client to server) frame."""
    raw = ws.frame(fin, opcode, payload)
    n = len(payload)
    head_len = len(raw) - n
    head = bytearray(raw[:head_len])
    head[1] |= 0x80
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes(head) + key + masked


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[int, bytes, list[int]]]:
    """(opcode, payload, fragment sizes) per message; pings between some."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["text", "binary", "ping"]))
        if kind == "text":
            payload = " ".join(draw(st.lists(st.sampled_from(TEXTS), max_size=4))).encode()
            out.append((ws.TEXT, payload, draw(st.lists(st.integers(1, 20), max_size=4))))
        elif kind == "binary":
            out.append((ws.BINARY, draw(st.binary(max_size=200)), draw(st.lists(st.integers(1, 50), max_size=3))))
        else:
            out.append((ws.PING, draw(st.binary(max_size=20)), []))
    return out


def encode(msgs: list[tuple[int, bytes, list[int]]], key: bytes = b"") -> bytes:
    out = []
    for opcode, payload, sizes in msgs:
        parts, rest = [], payload
        for n in sizes:
            if rest:
                parts.append(rest[:n])
                rest = rest[n:]
        parts.append(rest)
        for i, part in enumerate(parts):
            op = opcode if i == 0 else ws.CONT
            fin = i == len(parts) - 1
            out.append(client_frame(fin, op, part, key) if key else ws.frame(fin, op, part))
    return b"".join(out)


def reassemble(data: bytes) -> list[tuple[int, bytes]]:
    """Messages (opcode, payload) and control frames, in order."""
    parser = ws.FrameParser()
    out: list[tuple[int, bytes]] = []
    msg_op, buf, control, head = 0, b"", b"", None
    for ev in parser.feed(data):
        if isinstance(ev, ws.FrameHead):
            head = ev
            if ev.opcode in (ws.TEXT, ws.BINARY):
                msg_op, buf = ev.opcode, b""
            control = b""
        elif isinstance(ev, ws.Payload):
            assert head is not None
            if head.opcode >= ws.CLOSE:
                control += ev.data
            else:
                buf += ev.data
        else:
            assert head is not None
            if head.opcode >= ws.CLOSE:
                out.append((head.opcode, control))
            elif head.fin:
                out.append((msg_op, buf))
    return out


@settings(max_examples=200, deadline=None)
@given(messages(), st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_parser_split_anywhere(msgs: list[tuple[int, bytes, list[int]]], cuts: list[int], masked: bool) -> None:
    data = encode(msgs, os.urandom(4) if masked else b"")
    want = [(op, p) for op, p, _ in msgs]
    assert reassemble(data) == want
    parser = ws.FrameParser()
    events: list[ws.WsEvent] = []
    for piece in split(data, cuts):
        events += parser.feed(piece)
    payload = b"".join(e.data for e in events if isinstance(e, ws.Payload))
    assert payload == b"".join(p for _, p, _ in msgs)


@settings(max_examples=200, deadline=None)
@given(messages(), st.lists(st.integers(0, 10_000), max_size=8))
def test_downstream_masks_text_messages_whatever_the_split(
    msgs: list[tuple[int, bytes, list[int]]], cuts: list[int]
) -> None:
    data = encode(msgs)
    down = ws.Downstream(MASKER, True)
    out, rec = b"", b""
    counts: dict[str, int] = {}
    for piece in split(data, cuts):
        o, r, c = down.feed(piece)
        out += o
        rec += r
        for k, n in c.items():
            counts[k] = counts.get(k, 0) + n
    want = [(op, MASKER.mask_bytes(p)[0] if op == ws.TEXT else p) for op, p, _ in msgs]
    assert reassemble(out) == want
    data_msgs = [w for w in want if w[0] < ws.CLOSE]
    assert rec == b"".join(p for _, p in data_msgs)
    emails = sum(p.count(b"alice@example.com") for op, p, _ in msgs if op == ws.TEXT)
    assert counts.get("email", 0) == emails


@settings(max_examples=100, deadline=None)
@given(messages(), st.lists(st.integers(0, 10_000), max_size=8))
def test_upstream_records_unmasked_payloads_masked(
    msgs: list[tuple[int, bytes, list[int]]], cuts: list[int]
) -> None:
    data = encode(msgs, os.urandom(4))
    up = ws.Upstream(MASKER)
    rec = b"".join(up.feed(piece)[0] for piece in split(data, cuts))
    assert rec == b"".join(MASKER.mask_bytes(p)[0] for op, p, _ in msgs if op < ws.CLOSE)


@given(st.binary(max_size=300), st.lists(st.integers(0, 1000), max_size=5))
def test_garbage_only_raises_wserror(data: bytes, cuts: list[int]) -> None:
    for direction in (ws.Downstream(MASKER, True), ws.Downstream(MASKER, False), ws.Upstream(MASKER)):
        try:
            for piece in split(data, cuts):
                direction.feed(piece)  # type: ignore[attr-defined]
        except ws.WsError:
            pass


def test_compressed_frames_are_refused_when_masking() -> None:
    with pytest.raises(ws.WsError):
        ws.Downstream(MASKER, True).feed(ws.frame(True, ws.TEXT, b"x", rsv=4))
    out, _, _ = ws.Downstream(MASKER, False).feed(ws.frame(True, ws.TEXT, b"x", rsv=4))
    assert out == ws.frame(True, ws.TEXT, b"x", rsv=4)  # masking off: relayed as it came


def test_binary_refused_after_what_came_before_it() -> None:
    """refuse_binary: a binary message raises, carrying the (masked) frames
    the same read held before it, so those still reach the client."""
    data = ws.frame(True, ws.TEXT, b"to bob@example.com") + ws.frame(True, ws.BINARY, b"\x00 bob@example.com")
    down = ws.Downstream(MASKER, True, refuse_binary=True)
    with pytest.raises(ws.UnmaskableMessage) as caught:
        down.feed(data)
    assert caught.value.out == ws.frame(True, ws.TEXT, b"to [EMAIL]")
    assert caught.value.record == b"to [EMAIL]" and caught.value.counts
    passed, _, _ = ws.Downstream(MASKER, True).feed(data)  # the default: pass
    assert passed.endswith(ws.frame(True, ws.BINARY, b"\x00 bob@example.com"))


INJECTING = build_masker(MaskingConfig(), b"0123456789abcdef0123456789abcdef", literals=["Hdr/Key+v=1 &z"])


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 40), st.lists(st.integers(1, 30), max_size=4), st.lists(st.integers(0, 400), max_size=6))
def test_binary_messages_pass_without_the_injected_secret(
    before: int, frames_at: list[int], cuts: list[int]
) -> None:
    """A binary message is passed as it came (unmaskable: pass) but for the
    credential the gateway injects upstream, blanked out with as many '*',
    however the message is fragmented and the bytes split."""
    secret = b"Hdr/Key+v=1 &z"
    payload = b"\x00\xff" * before + b"key=" + secret + b"\x01" + secret
    data = encode([(ws.BINARY, payload, frames_at)], b"")
    down = ws.Downstream(INJECTING, True)
    out = b""
    counts: dict[str, int] = {}
    for piece in split(data, cuts):
        got, _, c = down.feed(piece)
        out += got
        for k, n in c.items():
            counts[k] = counts.get(k, 0) + n
    assert reassemble(out) == [(ws.BINARY, payload.replace(secret, b"*" * len(secret)))]
    assert counts == {"injected_credential": 2}
