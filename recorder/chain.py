"""Per-session hash chain and segment files (writer thread only).

A ChainWriter owns the chain value, the current segment file and a list of
encoded-but-unwritten frame pieces. Appending a frame is the hot path: it
hashes and appends four byte strings to a list; ``flush`` turns the list into
one write() syscall per batch.

The frames of a run go through the optional C accelerator
(recorder/_chainfast.c, built by setup.py when a compiler and OpenSSL's
headers are there) when it is importable and HOOPD_PURE_PYTHON is not set:
plain Outputs by a dedicated path, the other event types of
codec.EVENT_LAYOUTS by a general encoder. The Python loop
(``_append_events_py``) is the fallback and the reference, and handles every
item the accelerator hands back (SessionStart, unusual values).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from hashlib import sha256
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoopd.model import Event, Output
from recorder.codec import (
    EVENT_LAYOUTS,
    LAYOUT_SAMPLES,
    OUTPUT_HASH_INPUT,
    OUTPUT_HASH_INPUT_CSEQ,
    OUTPUT_HASH_INPUT_SEQ16,
    OUTPUT_HASH_INPUT_SEQ16_CSEQ,
    Layout,
    command_seq_suffix,
    event_body,
    make_payload_packer,
    output_payload_parts,
)
from recorder.format import (
    CHECKPOINT,
    CK_CLOSE,
    CK_PERIODIC,
    CK_ROTATE,
    EVENT,
    FORMAT_NAME,
    FORMAT_VERSION,
    HASH_BIN_HEADER,
    HASH_NAME,
    HEADER,
    TYPE_BYTES,
    checkpoint_sig_input,
    frame_head,
    genesis_hash,
    new_hash,
    segment_name,
    valid_session_id,
)
from recorder.segment import SegmentFile, fsync_dir

log = logging.getLogger(__name__)

FsyncMode = Literal["always", "interval", "never"]

_FLUSH_BYTES = 1 << 20  # bound the memory a busy session buffers between flushes
_HEAD_CACHE_MAX = 4096
_EVENT_BYTE = TYPE_BYTES[EVENT]
_HASH_OVERHEAD = len(HASH_BIN_HEADER) + 32
_UINT64_END = 1 << 64

# Payload map starts by stream, for the accelerator (the same bytes as the
# OUTPUT_HASH_INPUT* tables').
_STARTS = {s: start for s, (_, start, _) in OUTPUT_HASH_INPUT.items()}
_STARTS_CSEQ = {s: start for s, (_, start, _) in OUTPUT_HASH_INPUT_CSEQ.items()}

AppendFn = Callable[..., tuple[int, bytes, int, int, int, int]]


def _checked_layouts(fast: AppendFn) -> dict[type[Event], Layout]:
    """EVENT_LAYOUTS without any layout whose C encoding of a sample event
    differs from the Python encoder's (a to_record() changed without its
    layout): those events stay on the Python path, which is the reference."""
    layouts = dict(EVENT_LAYOUTS)
    pack = make_payload_packer().pack
    for event in LAYOUT_SAMPLES:
        cls = type(event)
        if cls not in layouts:
            continue
        payload = pack([1, 1 << 40, event_body(event)])
        frame = b"".join((
            frame_head(EVENT, len(payload)), payload, HASH_BIN_HEADER,
            sha256(bytes(32) + _EVENT_BYTE + payload).digest(),
        ))
        buf: list[bytes] = []
        fast([(1, 1 << 40, event)], 0, bytes(32), 0, 0, 0, 1 << 62, 1 << 62, buf, Output,
             _STARTS, _STARTS_CSEQ, {cls: layouts[cls]})
        if b"".join(buf) != frame:
            log.warning("recorder: %s events stay on the Python path: the C encoding of a "
                        "sample differs from event_body()'s", cls.__name__)
            del layouts[cls]
    return layouts


_append_outputs: AppendFn | None = None
_LAYOUTS: dict[type[Event], Layout] = {}
if os.environ.get("HOOPD_PURE_PYTHON", "") in ("", "0"):
    with contextlib.suppress(ImportError):
        from recorder._chainfast import append_outputs as _append_outputs
    if _append_outputs is not None:
        _LAYOUTS = _checked_layouts(_append_outputs)


def accelerated() -> bool:
    """Whether append_events uses the C accelerator (recorder._chainfast)."""
    return _append_outputs is not None


class UnencodableEvent(Exception):
    """An event the payload encoder rejected (a bug in whoever produced it)."""

    def __init__(self, event: Event, cause: Exception) -> None:
        super().__init__(f"cannot encode {type(event).__name__}: {cause}")
        self.event = event


class ChainWriter:
    def __init__(
        self,
        *,
        directory: Path,
        session_id: str,
        key: Ed25519PrivateKey,
        key_fingerprint: str,
        rotate_bytes: int,
        checkpoint_frames: int,
        fsync: FsyncMode,
        dirty: list[ChainWriter],
        on_written: Callable[[int, int], None],
    ) -> None:
        self.session_id = session_id
        self.dir = directory / session_id
        self._key = key
        self._fingerprint = key_fingerprint
        self._rotate_bytes = rotate_bytes
        self._checkpoint_frames = max(1, checkpoint_frames)
        self._fsync_mode = fsync
        self._dirty = dirty  # shared with the Recorder: chains with unflushed frames
        self._on_written = on_written  # observer.frames_written
        self._pack = make_payload_packer().pack
        self._heads: dict[int, bytes] = {}  # payload length -> event frame head
        self.prev = genesis_hash(session_id)
        self.segment = 0
        self.file: SegmentFile | None = None
        self.failed = False
        self.last_seq = 0  # seq of the last event appended
        self.nframes = 0  # frames appended in the whole session
        self.ckpt_frame = 0  # nframes at the last checkpoint
        self.file_start_seq = 0  # last_seq when the current file was opened
        self.flushed_frames = 0
        self.size = 0  # bytes of the current file, including buffered ones
        self.flushed_size = 0
        self.buf: list[bytes] = []
        self.opened_at = time.monotonic()
        self.last_checkpoint = time.monotonic()
        self.unsynced = False

    # ------------------------------------------------------------ queries
    @property
    def unsigned_frames(self) -> int:
        return self.nframes - self.ckpt_frame

    @property
    def events_in_file(self) -> int:
        return self.last_seq - self.file_start_seq

    # ----------------------------------------------------------- appending
    def _append(self, frame_type: int, payload: bytes) -> None:
        h = new_hash()
        h.update(self.prev)
        h.update(TYPE_BYTES[frame_type])
        h.update(payload)
        self.prev = digest = h.digest()
        head = frame_head(frame_type, len(payload))
        buf = self.buf
        if not buf:
            self._dirty.append(self)
        buf += (head, payload, HASH_BIN_HEADER, digest)
        self.nframes += 1
        self.size += len(head) + len(payload) + _HASH_OVERHEAD

    def append_events(self, items: Iterable[tuple[int, int, Event]]) -> None:
        """Append (seq, ts_ns, event) frames: see _append_events_py, which
        this is equivalent to. With the accelerator, its C loop takes the
        Output frames it handles and stops where a checkpoint or flush is
        due (done here as the Python loop does) or at a stretch of items it
        leaves to the Python loop."""
        fast = _append_outputs
        layouts = _LAYOUTS
        if fast is None:
            self._append_events_py(items)
            return
        if type(items) is not list:
            items = list(items)
        i, n = 0, len(items)
        while i < n:
            was_empty = not self.buf
            ckpt_due = self.ckpt_frame + self._checkpoint_frames
            flush_due = min(self.flushed_size + _FLUSH_BYTES, self._rotate_bytes)
            i, prev, nframes, size, last_seq, j = fast(
                items, i, self.prev, self.nframes, self.size, self.last_seq,
                ckpt_due, flush_due, self.buf, Output, _STARTS, _STARTS_CSEQ, layouts,
            )
            if nframes != self.nframes:
                self._store(prev, nframes, size, last_seq)
                if was_empty:
                    self._dirty.append(self)
                if nframes >= ckpt_due or size >= flush_due:
                    self._checkpoint_or_flush()
                    continue
            if i < j:  # items the C loop leaves to this one
                self._append_events_py(items[i:j])
                i = j

    def _checkpoint_or_flush(self) -> None:
        """After a frame that made a checkpoint or a flush due."""
        if self.nframes >= self.ckpt_frame + self._checkpoint_frames:
            self.checkpoint(CK_PERIODIC)
        if self.size >= self._rotate_bytes:
            self.rotate()
        elif self.size - self.flushed_size >= _FLUSH_BYTES:
            self.flush()

    def _append_events_py(self, items: Iterable[tuple[int, int, Event]]) -> None:
        """Hot path: append (seq, ts_ns, event) frames, the same as
        _append(EVENT, ...) for each, with the chain state kept in locals
        across a run of one session's events (the writer thread hands over
        each run it finds in its queue).

        Output events (almost all frames) are encoded by hand around their
        data: the data is hashed and queued for writing without first being
        copied into a payload. An event that cannot be encoded raises
        UnencodableEvent; the frames before it stay appended.
        """
        prev = self.prev
        buf = self.buf
        nframes = self.nframes
        size = self.size
        last_seq = self.last_seq
        heads = self._heads
        pack_payload = self._pack
        ckpt_due = self.ckpt_frame + self._checkpoint_frames
        flush_due = min(self.flushed_size + _FLUSH_BYTES, self._rotate_bytes)
        dirty = not buf
        wide, wide_cseq = OUTPUT_HASH_INPUT, OUTPUT_HASH_INPUT_CSEQ
        narrow, narrow_cseq = OUTPUT_HASH_INPUT_SEQ16, OUTPUT_HASH_INPUT_SEQ16_CSEQ
        for seq, ts_ns, event in items:
            try:
                if (
                    type(event) is Output
                    and 0x100 <= seq < 0x100000000
                    and 0x100000000 <= ts_ns < _UINT64_END
                    and type(data := event.data) is bytes
                    and 0x100 <= len(data) < 0x10000
                    and not event.masked
                    and 0 <= (cseq := event.command_seq) < _UINT64_END
                ):
                    # The usual frame: hash input and payload prefix from one
                    # struct call (see codec.OUTPUT_HASH_INPUT).
                    if seq >= 0x10000:
                        table = wide_cseq if cseq else wide
                    else:
                        table = narrow_cseq if cseq else narrow
                    pack, start, marker = table[event.stream]
                    hin = pack(prev, EVENT, 0x93, marker, seq, 0xCF, ts_ns, start, 0xC5, len(data))
                    h = sha256(hin)
                    h.update(data)
                    if cseq:
                        suffix = command_seq_suffix(cseq)
                        h.update(suffix)
                    else:
                        suffix = b""
                    prefix = hin[33:]
                else:
                    parts = output_payload_parts(seq, ts_ns, event) if type(event) is Output else None
                    if parts is not None:
                        prefix, suffix = parts
                        data = event.data  # type: ignore[attr-defined]
                    else:
                        prefix = pack_payload([seq, ts_ns, event_body(event)])
                        data = suffix = b""
                    h = sha256(prev + _EVENT_BYTE + prefix)
                    h.update(data)
                    if suffix:
                        h.update(suffix)
            except Exception as exc:
                # Whatever the encoder raises (an AttributeError from a str
                # where a Stream belongs as much as an OverflowError), the
                # event cannot be recorded: the state stays at the frame
                # before it and its session is failed, not the writer thread.
                self._store(prev, nframes, size, last_seq)
                raise UnencodableEvent(event, exc) from exc
            n = len(prefix) + len(data) + len(suffix)
            head = heads.get(n)
            if head is None:
                if len(heads) >= _HEAD_CACHE_MAX:
                    heads.clear()
                head = heads[n] = frame_head(EVENT, n)
            prev = digest = h.digest()
            if dirty:
                self._dirty.append(self)
                dirty = False
            buf += (head, prefix, data, suffix, HASH_BIN_HEADER, digest)
            last_seq = seq
            nframes += 1
            size += len(head) + n + _HASH_OVERHEAD
            if nframes >= ckpt_due or size >= flush_due:
                self._store(prev, nframes, size, last_seq)
                self._checkpoint_or_flush()
                prev, buf, nframes, size = self.prev, self.buf, self.nframes, self.size
                ckpt_due = self.ckpt_frame + self._checkpoint_frames
                flush_due = min(self.flushed_size + _FLUSH_BYTES, self._rotate_bytes)
                dirty = not buf
        self._store(prev, nframes, size, last_seq)

    def _store(self, prev: bytes, nframes: int, size: int, last_seq: int) -> None:
        self.prev = prev
        self.nframes = nframes
        self.size = size
        self.last_seq = last_seq

    def checkpoint(self, kind: str) -> None:
        sig = self._key.sign(
            checkpoint_sig_input(self.session_id, self.segment, self.last_seq, kind, self.prev)
        )
        body = {"kind": kind, "segment": self.segment, "sig": sig}
        self._append(CHECKPOINT, self._pack([self.last_seq, time.time_ns(), body]))
        self.ckpt_frame = self.nframes
        self.last_checkpoint = time.monotonic()

    def checkpoint_periodic(self) -> None:
        self.checkpoint(CK_PERIODIC)

    def _write_header(self, ts_ns: int) -> None:
        body = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "session_id": self.session_id,
            "segment": self.segment,
            "prev_hash": self.prev,
            "hash": HASH_NAME,
            "key": self._fingerprint,
        }
        self._append(HEADER, self._pack([self.last_seq, ts_ns, body]))
        self.file_start_seq = self.last_seq

    # --------------------------------------------------------------- files
    def open(self, ts_ns: int) -> None:
        if not valid_session_id(self.session_id):
            raise ValueError(f"invalid session id {self.session_id!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._open_segment(1, ts_ns)
        if self._fsync_mode != "never":
            fsync_dir(self.dir.parent)

    def _open_segment(self, segment: int, ts_ns: int) -> None:
        """Create the segment file and make its header durable immediately.

        The header must reach the file before the previous segment's rotate
        checkpoint does: then "segment N ends with a rotate checkpoint but
        N+1 is missing" can only mean a file was removed (see the spec).
        """
        self.file = SegmentFile(self.dir / segment_name(segment))
        self.segment = segment
        self.size = self.flushed_size = 0
        self.opened_at = time.monotonic()
        self._write_header(ts_ns)
        self.flush()
        if self._fsync_mode != "never":
            self.file.fsync()
            fsync_dir(self.dir)

    def rotate(self) -> None:
        old = self.file
        assert old is not None
        self.flush()
        self.checkpoint(CK_ROTATE)
        pending, self.buf = self.buf, []  # the rotate checkpoint, for the old file
        self._forget_dirty()
        self.flushed_frames = self.nframes  # reported below, when written
        self._open_segment(self.segment + 1, time.time_ns())
        data = b"".join(pending)
        old.write(data)
        self._on_written(1, len(data))
        if self._fsync_mode != "never":
            old.fsync()
        old.close()

    def flush(self) -> None:
        """Write buffered frames with one syscall."""
        if not self.buf or self.file is None:
            return
        data = b"".join(self.buf)
        self.buf.clear()
        self._forget_dirty()
        self.file.write(data)
        frames = self.nframes - self.flushed_frames
        self.flushed_frames = self.nframes
        self.flushed_size = self.size
        self.unsynced = True
        self._on_written(frames, len(data))

    def _forget_dirty(self) -> None:
        with contextlib.suppress(ValueError):
            self._dirty.remove(self)

    def fsync(self) -> None:
        if self.unsynced and self.file is not None and self._fsync_mode != "never":
            self.file.fsync()
        self.unsynced = False

    def close(self) -> None:
        if self.file is None:
            return
        self.checkpoint(CK_CLOSE)
        self.flush()
        if self._fsync_mode != "never":
            self.file.fsync()
        self.file.close()
        self.file = None

    def abandon(self) -> None:
        """After an I/O error: drop buffered frames, close the fd, write nothing more."""
        self.failed = True
        self.buf.clear()
        self._forget_dirty()
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
