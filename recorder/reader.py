"""Streaming reader for recording files.

Frames are read with ``msgpack.Unpacker`` straight from the file. A file that
ends in the middle of a frame (crash, kill -9, full disk) yields every
complete frame; the remaining bytes are reported as a torn tail, after
checking that they really are a prefix of a frame the writer could have
produced (otherwise they are reported as damage, see ``tail_problem``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from hoopd.model import Event
from recorder.codec import decode_body, unpack_payload
from recorder.compat import upgrade_body
from recorder.format import (
    EVENT,
    FIXARRAY3,
    FRAME_TYPES,
    HASH_BIN_HEADER,
    HASH_LEN,
    HEADER,
    SEGMENT_RE,
    bin_header,
)

# Bigger than any frame the writer produces (Output chunks are small); a
# corrupted length beyond it is rejected instead of buffered.
MAX_FRAME_BYTES = 256 * 1024 * 1024
READ_SIZE = 1 << 20
_BIN_WIDTH = {0xC4: 1, 0xC5: 2, 0xC6: 4}


class MalformedFrame(Exception):
    """Bytes that are not a frame this format could contain."""


def make_unpacker(f: BinaryIO) -> msgpack.Unpacker:
    return msgpack.Unpacker(
        f, read_size=READ_SIZE, max_buffer_size=MAX_FRAME_BYTES, raw=False, strict_map_key=False
    )


def segment_files(session_dir: Path) -> list[tuple[int, Path]]:
    """(segment number, path) of every segment file, sorted by number."""
    found = []
    for entry in os.scandir(session_dir):
        m = SEGMENT_RE.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), Path(entry.path)))
    return sorted(found)


def list_session_dirs(recordings_dir: Path) -> list[Path]:
    """Session directories (those containing at least one segment file)."""
    out = []
    for entry in sorted(os.scandir(recordings_dir), key=lambda e: e.name):
        if entry.is_dir() and any(SEGMENT_RE.match(n) for n in os.listdir(entry.path)):
            out.append(Path(entry.path))
    return out


def frame_size(payload_len: int) -> int:
    """Canonical encoded size of a frame with a payload of that length."""
    return 2 + len(bin_header(payload_len)) + payload_len + len(HASH_BIN_HEADER) + HASH_LEN


def tail_problem(tail: bytes) -> str | None:
    """None if ``tail`` is a proper prefix of a frame the writer could have
    written (a torn write), else why not (the file was damaged/tampered).

    This is what keeps a flipped length byte in the last frame from passing
    as a harmless torn tail: a genuinely torn frame never contains a complete
    payload followed by anything but the start of the hash field.
    """
    n = len(tail)
    if n == 0:
        return None
    if tail[0] != FIXARRAY3:
        return "bytes after the last frame do not start a frame"
    if n >= 2 and tail[1] not in FRAME_TYPES:
        return "unknown frame type in trailing bytes"
    if n < 3:
        return None
    width = _BIN_WIDTH.get(tail[2])
    if width is None:
        return "trailing frame has no binary payload"
    if n < 3 + width:
        return None
    length = int.from_bytes(tail[3 : 3 + width], "big")
    if bin_header(length)[0] != tail[2]:
        return "trailing frame has a non-canonical length"
    start = 3 + width
    payload = tail[start : start + length]
    if len(payload) < length:
        return _partial_payload_problem(payload)
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return "trailing frame payload is not one msgpack value"
    if payload[0] != FIXARRAY3 or not isinstance(obj, list):
        return "trailing frame payload is not [seq, ts, body]"
    rest = tail[start + length :]
    if len(rest) >= len(HASH_BIN_HEADER) + HASH_LEN or not HASH_BIN_HEADER.startswith(rest[:2]):
        return "trailing frame has a malformed hash field"
    return None


def _partial_payload_problem(part: bytes) -> str | None:
    """A cut payload must be a strict prefix of one msgpack array of 3."""
    if not part:
        return None
    if part[0] != FIXARRAY3:
        return "trailing frame payload is not [seq, ts, body]"
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=MAX_FRAME_BYTES)
    unpacker.feed(part)
    try:
        unpacker.unpack()
    except msgpack.OutOfData:
        return None  # incomplete, as a torn write would leave it
    except Exception:
        return "trailing frame payload is not valid msgpack"
    return "trailing frame is longer than its contents (length field altered?)"


@dataclass
class FileFrames:
    """Iterates the raw frames of one file; afterwards ``error``/``torn_at``
    tell how the file ended."""

    path: Path
    frames: int = 0
    end_offset: int = 0  # offset after the last complete frame
    torn_at: int | None = None  # offset of a torn (partial) last frame
    error: str | None = None  # malformed content (not a torn write)
    error_frame: int | None = None

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            unpacker = make_unpacker(f)
            offset = 0
            while True:
                try:
                    frame = unpacker.unpack()
                except msgpack.OutOfData:
                    break
                except Exception as exc:
                    self._fail(f"undecodable bytes: {exc}", offset)
                    return
                try:
                    ftype, payload, digest = _check_frame(frame)
                except MalformedFrame as exc:
                    self._fail(str(exc), offset)
                    return
                offset = unpacker.tell()
                self.frames += 1
                self.end_offset = offset
                yield ftype, payload, digest
            if offset < size:
                f.seek(offset)
                problem = tail_problem(f.read())
                if problem is None:
                    self.torn_at = offset
                else:
                    self._fail(problem, offset)

    def _fail(self, message: str, offset: int) -> None:
        self.error = message
        self.error_frame = self.frames
        self.end_offset = offset


def _check_frame(frame: Any) -> tuple[int, bytes, bytes]:
    if not isinstance(frame, list) or len(frame) != 3:
        raise MalformedFrame("frame is not a 3-element array")
    ftype, payload, digest = frame
    if type(ftype) is not int or ftype not in FRAME_TYPES:
        raise MalformedFrame(f"unknown frame type {ftype!r}")
    if not isinstance(payload, bytes) or not isinstance(digest, bytes):
        raise MalformedFrame("frame payload/hash are not binary")
    if len(digest) != HASH_LEN:
        raise MalformedFrame("frame hash has the wrong length")
    return ftype, payload, digest


@dataclass(frozen=True)
class RecordedEvent:
    seq: int
    ts_ns: int
    event: Event


@dataclass
class SessionReader:
    """Best-effort reading of a session's events for replay (verification is
    separate: see recorder.verify). Damaged frames end reading of their file."""

    session_dir: Path
    problems: list[str] = field(default_factory=list)
    headers: list[dict[str, Any]] = field(default_factory=list)

    def events(self) -> Iterator[RecordedEvent]:
        version = 1
        for _, path in segment_files(self.session_dir):
            frames = FileFrames(path)
            for ftype, payload, _digest in frames:
                try:
                    seq, ts_ns, body = unpack_payload(payload)
                    if ftype == HEADER:
                        self.headers.append(body)
                        version = int(body.get("version", 1))
                    elif ftype == EVENT:
                        yield RecordedEvent(seq, ts_ns, decode_body(upgrade_body(version, body)))
                except (ValueError, KeyError, TypeError) as exc:
                    self.problems.append(f"{path.name}: frame {frames.frames - 1}: {exc}")
            if frames.error:
                self.problems.append(f"{path.name}: frame {frames.error_frame}: {frames.error}")
            elif frames.torn_at is not None:
                self.problems.append(f"{path.name}: torn tail at byte {frames.torn_at}")
