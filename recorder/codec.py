"""Event <-> frame payload encoding.

An event frame's payload is msgpack ``[seq, ts_ns, body]`` where body is the
event's ``to_record()`` mapping plus the reserved key ``"t"`` (its type name).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from hoopd.model import (
    ApprovalEvent,
    Command,
    CommandKind,
    CommandResult,
    Decision,
    ErrorEvent,
    Event,
    Output,
    Resize,
    SessionEnd,
    Stream,
    Verdict,
    event_from_record,
)
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


# Layouts of event bodies for the C accelerator's general encoder
# (recorder/_chainfast.c, append_general): per event type, the body map's
# entries in the order event_body() builds them, each a field
# (packed key, attribute, how, arg). The HOW_* codes are the C enum's.
HOW_CONST = 0  # arg: the packed value (the type name entry)
HOW_VALUE = 1  # the attribute as the packer packs it
HOW_ENUM = 2  # attribute._value_, for a member of exactly the StrEnum arg
HOW_DICT = 3  # dict(attribute)
HOW_LIST = 4  # list(attribute)
HOW_NONZERO = 5  # attribute, left out when 0 (Output.command_seq)
HOW_NONEMPTY = 6  # dict(attribute), left out when empty (Output.masked)
HOW_DATA = 7  # Output.data (bytes): its own buffer piece when large

LayoutField = tuple[bytes, str | None, int, Any]
Layout = tuple[LayoutField, ...]


def _field(attr: str, how: int = HOW_VALUE, arg: Any = None) -> LayoutField:
    return (_fixstr(attr), attr, how, arg)


def _type_entry(cls: type[Event]) -> LayoutField:
    return (_fixstr(TYPE_KEY), None, HOW_CONST, _fixstr(cls.type_name))


def _layout(cls: type[Event], *fields: LayoutField) -> tuple[type[Event], Layout]:
    """A non-Output event: to_record()'s entries, then the type name."""
    return cls, (*fields, _type_entry(cls))


# Keep in step with the to_record() methods of hoopd.model: the recorder
# checks every layout against event_body() and the packer when it imports
# the accelerator (chain._checked_layouts) and drops one that disagrees,
# and tests/recorder/test_chainfast.py compares whole files.
EVENT_LAYOUTS: dict[type[Event], Layout] = dict((
    (Output, (
        _type_entry(Output), _field("stream", HOW_ENUM, Stream), _field("data", HOW_DATA),
        _field("command_seq", HOW_NONZERO), _field("masked", HOW_NONEMPTY),
    )),
    _layout(Command, _field("seq"), _field("kind", HOW_ENUM, CommandKind), _field("text"),
            _field("attrs", HOW_DICT)),
    _layout(Decision, _field("command_seq"), _field("verdict", HOW_ENUM, Verdict),
            _field("risk"), _field("reasons", HOW_LIST), _field("rule_ids", HOW_LIST),
            _field("approval_id"), _field("approver"), _field("break_glass")),
    _layout(CommandResult, _field("command_seq"), _field("status"), _field("duration_ms"),
            _field("rows"), _field("error")),
    _layout(SessionEnd, _field("reason"), _field("error"), _field("bytes_in"),
            _field("bytes_out")),
    _layout(ApprovalEvent, _field("approval_id"), _field("command_seq"), _field("state"),
            _field("command_hash"), _field("reviewer"), _field("comment")),
    _layout(Resize, _field("cols"), _field("rows")),
    _layout(ErrorEvent, _field("message"), _field("code")),
))

# Events with every optional entry present and absent, for the check of
# EVENT_LAYOUTS against event_body() (and for tests).
LAYOUT_SAMPLES: tuple[Event, ...] = (
    Output(Stream.STDOUT, b"x" * 300, 3, {"r": 2}),
    Output(Stream.STDIN, b"y"),
    Command(7, CommandKind.HTTP, "GET /", {"method": "GET", "body": {"length": 3}}),
    Decision(7, Verdict.DENY, 80, ("a", "b"), ("r1",), "ap", "me", True),
    Decision(0, Verdict.ALLOW),
    CommandResult(7, "200", 1.5, 3, "e"),
    CommandResult(7, "200"),
    SessionEnd("client_closed", "e", 1, 2),
    ApprovalEvent("ap", 7, "pending", "h", "r", "c"),
    Resize(80, 24),
    ErrorEvent("m", "c"),
)


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
