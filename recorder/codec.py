"""Event <-> frame payload encoding.

An event frame's payload is msgpack ``[seq, ts_ns, body]`` where body is the
event's ``to_record()`` mapping plus the reserved key ``"t"`` (its type name).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from hoopd.model import Event, Output, event_from_record

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
