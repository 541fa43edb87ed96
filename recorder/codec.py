"""Event <-> frame payload encoding.

An event frame's payload is msgpack ``[seq, ts_ns, body]`` where body is the
event's ``to_record()`` mapping plus the reserved key ``"t"`` (its type name).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from hoopd.model import Event, Output, Stream, event_from_record
from recorder.format import bin_header

TYPE_KEY = "t"


def event_body(event: Event) -> dict[str, Any]:
    """The mapping recorded for an event (to_record() plus its type name)."""
    # Output is by far the most frequent event (every chunk of terminal or
    # result data), so it gets a hand-inlined copy of Output.to_record();
    # tests check both produce the same mapping.
    if type(event) is Output:
        body: dict[str, Any] = {
            TYPE_KEY: "output",
            "stream": event.stream._value_,
            "data": event.data,
        }
        if event.command_seq:
            body["command_seq"] = event.command_seq
        if event.masked:
            body["masked"] = dict(event.masked)
        return body
    body = event.to_record()
    body[TYPE_KEY] = event.type_name
    return body


def _uint(n: int) -> bytes:
    """msgpack's smallest encoding of a non-negative int (as Packer writes it)."""
    if n < 0x80:
        return bytes((n,))
    if n < 0x100:
        return b"\xcc" + bytes((n,))
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def _fixstr(s: str) -> bytes:
    raw = s.encode()
    assert len(raw) < 32
    return bytes((0xA0 | len(raw),)) + raw


def _output_map_start(stream: Stream, with_command_seq: bool) -> bytes:
    # {"t": "output", "stream": <value>, "data": ...[, "command_seq": n]}
    return b"".join((
        b"\x84" if with_command_seq else b"\x83",
        _fixstr(TYPE_KEY), _fixstr("output"), _fixstr("stream"), _fixstr(stream.value),
        _fixstr("data"),
    ))


_OUTPUT_START = {s: _output_map_start(s, False) for s in Stream}
_OUTPUT_START_CSEQ = {s: _output_map_start(s, True) for s in Stream}
_COMMAND_SEQ_KEY = _fixstr("command_seq")
_UINT64_END = 1 << 64
_SEQ32_TS64 = struct.Struct(">BBIBQ").pack
_BIN16 = struct.Struct(">BH").pack


# The writer's hot path (ChainWriter.append_events) builds an Output frame's
# hash input ``prev_hash + type byte + payload prefix`` with one struct call;
# the prefix is the same bytes as output_payload_parts' for the usual case:
# 0x100 <= seq < 2**32, 2**32 <= ts_ns < 2**64 and 0x100 <= len(data) <
# 0x10000. Tables per (seq < 0x10000 or not) and (has a command_seq or not),
# by stream: (pack, map start, seq's msgpack marker); pack takes (prev, frame
# type, 0x93, marker, seq, 0xCF, ts_ns, map start, 0xC5, len(data)) and the
# prefix is its result from byte 33 on (prev_hash is always a 32-byte
# digest: '32s' would pad a shorter one).
HashInputPacker = tuple[Callable[..., bytes], bytes, int]


def _hash_input_table(wide_seq: bool, cseq: bool) -> dict[Stream, HashInputPacker]:
    starts = _OUTPUT_START_CSEQ if cseq else _OUTPUT_START
    seq_code, marker = ("I", 0xCE) if wide_seq else ("H", 0xCD)
    return {
        s: (struct.Struct(f">32sBBB{seq_code}BQ{len(start)}sBH").pack, start, marker)
        for s, start in starts.items()
    }


OUTPUT_HASH_INPUT = _hash_input_table(wide_seq=True, cseq=False)
OUTPUT_HASH_INPUT_CSEQ = _hash_input_table(wide_seq=True, cseq=True)
OUTPUT_HASH_INPUT_SEQ16 = _hash_input_table(wide_seq=False, cseq=False)
OUTPUT_HASH_INPUT_SEQ16_CSEQ = _hash_input_table(wide_seq=False, cseq=True)


def command_seq_suffix(cseq: int) -> bytes:
    """The payload bytes after an Output's data when it has a command_seq."""
    return _COMMAND_SEQ_KEY + _uint(cseq)


def output_payload_parts(seq: int, ts_ns: int, event: Output) -> tuple[bytes, bytes] | None:
    """The payload of an Output event as ``prefix + event.data + suffix``,
    byte-identical to ``make_payload_packer().pack([seq, ts_ns,
    event_body(event)])``; returns (prefix, suffix), or None where only the
    packer will do (masked counts, unusual values).

    Output frames carry nearly every byte a session moves; building their
    payload by hand avoids a dict and a copy of the data per frame, and lets
    the chain hash and the file write take the data without joining it first.
    """
    if event.masked or type(event.data) is not bytes:
        return None
    n = len(event.data)
    cseq = event.command_seq
    if 0x10000 <= seq < 0x100000000 and 0x100000000 <= ts_ns < _UINT64_END:
        seq_ts = _SEQ32_TS64(0x93, 0xCE, seq, 0xCF, ts_ns)  # the usual case: one call
    elif 0 <= seq < _UINT64_END and 0 <= ts_ns < _UINT64_END:
        seq_ts = b"\x93" + _uint(seq) + _uint(ts_ns)
    else:
        return None
    if 0x100 <= n < 0x10000:
        bin_head = _BIN16(0xC5, n)  # the usual chunk size: one call
    elif n < 0x100000000:
        bin_head = bin_header(n)
    else:
        return None
    if not cseq:
        return seq_ts + _OUTPUT_START[event.stream] + bin_head, b""
    if not 0 < cseq < _UINT64_END:
        return None
    return seq_ts + _OUTPUT_START_CSEQ[event.stream] + bin_head, command_seq_suffix(cseq)


def make_payload_packer() -> msgpack.Packer:
    # use_bin_type: bytes stay bin, str stays str, so Output.data round-trips.
    return msgpack.Packer(use_bin_type=True)


def decode_body(body: Mapping[str, Any]) -> Event:
    """Rebuild an event from an (upgraded, current-version) body mapping."""
    rec = dict(body)
    type_name = rec.pop(TYPE_KEY)
    return event_from_record(type_name, rec)


def unpack_payload(payload: bytes) -> tuple[int, int, Any]:
    """Split a frame payload into (seq, ts_ns, body)."""
    seq, ts_ns, body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    if not isinstance(seq, int) or not isinstance(ts_ns, int):
        raise ValueError("payload seq/ts are not integers")
    return seq, ts_ns, body
