"""WebSocket frames (RFC 6455), sans-IO: a streaming frame parser and the
two relay directions of a tunnel.

* ``FrameParser``: bytes in, ``FrameHead`` / ``Payload`` / ``FrameEnd``
  events out; payloads come unmasked (the client's XOR key removed) and
  streamed, never buffered whole (control frames are at most 125 bytes).
* ``Downstream`` (upstream -> client): text messages go through a stream
  masker, so a value split across frames or reads is still masked, and are
  re-framed (a message may leave in other fragments than it came in, which
  RFC 6455 5.4 allows an intermediary when no extension is negotiated; the
  gateway strips ``Sec-WebSocket-Extensions`` from the upgrade request when
  it masks). Binary messages pass unchanged, or end the tunnel when the
  connection refuses what it cannot mask; control frames pass with their
  payloads (a close reason, ping data) content-masked. Without
  masking, the bytes are relayed untouched and only parsed for the recording.
* ``Upstream`` (client -> upstream): bytes are relayed untouched; payloads
  are unmasked and content-masked for the recording only.

Both give, per ``feed``, what to record: the payload bytes of data frames
(masked) and the masking counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from masking.stream import InjectedScrubber

Counts = dict[str, int]

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_KNOWN = frozenset({CONT, TEXT, BINARY, CLOSE, PING, PONG})


class WsError(Exception):
    """The peer broke RFC 6455 (or used an extension the gateway cannot mask)."""


class UnmaskableMessage(WsError):
    """A binary message where the connection refuses what it cannot mask
    (``unmaskable: refuse``): the tunnel ends with close code 1003. What the
    same read held before it is still delivered: ``out``, ``record`` and
    ``counts`` as ``Downstream.feed`` would have returned them."""

    def __init__(self, message: str, out: bytes, record: bytes, counts: Counts) -> None:
        super().__init__(message)
        self.out = out
        self.record = record
        self.counts = counts


@dataclass(slots=True)
class FrameHead:
    fin: bool
    rsv: int
    opcode: int
    length: int
    key: bytes
    """The 4-byte masking key (b'' when unmasked)."""


@dataclass(slots=True)
class Payload:
    data: bytes
    """Unmasked payload bytes."""


@dataclass(slots=True)
class FrameEnd:
    pass


WsEvent = FrameHead | Payload | FrameEnd
_END = FrameEnd()


def _xor(data: bytes, key: bytes, offset: int) -> bytes:
    if not key or not data:
        return data
    k = (key * 2)[offset % 4 : offset % 4 + 4]
    n = len(data)
    kk = (k * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(kk, "big")).to_bytes(n, "big")


class FrameParser:
    def __init__(self, max_length: int = 1 << 62) -> None:
        self._buf = bytearray()
        self._head: FrameHead | None = None
        self._left = 0
        self._offset = 0
        self._max = max_length

    def feed(self, data: bytes) -> list[WsEvent]:
        buf = self._buf
        buf += data
        events: list[WsEvent] = []
        while True:
            head = self._head
            if head is None:
                if len(buf) < 2:
                    return events
                b0, b1 = buf[0], buf[1]
                n = b1 & 0x7F
                need = 2 + (2 if n == 126 else 8 if n == 127 else 0) + (4 if b1 & 0x80 else 0)
                if len(buf) < need:
                    return events
                pos = 2
                if n == 126:
                    n = int.from_bytes(buf[2:4], "big")
                    pos = 4
                elif n == 127:
                    n = int.from_bytes(buf[2:10], "big")
                    pos = 10
                    if n >> 63:
                        raise WsError("invalid frame length")
                key = bytes(buf[pos : pos + 4]) if b1 & 0x80 else b""
                opcode = b0 & 0x0F
                fin = bool(b0 & 0x80)
                if opcode not in _KNOWN:
                    raise WsError(f"reserved opcode {opcode}")
                if opcode >= CLOSE and (n > 125 or not fin):
                    raise WsError("invalid control frame")
                if n > self._max:
                    raise WsError("frame too large")
                del buf[:need]
                self._head = head = FrameHead(fin, (b0 >> 4) & 0x7, opcode, n, key)
                self._left = n
                self._offset = 0
                events.append(head)
            if self._left:
                if not buf:
                    return events
                take = min(self._left, len(buf))
                chunk = bytes(buf[:take])
                del buf[:take]
                events.append(Payload(_xor(chunk, head.key, self._offset)))
                self._offset += take
                self._left -= take
                if self._left:
                    return events
            events.append(_END)
            self._head = None


def frame(fin: bool, opcode: int, payload: bytes, rsv: int = 0) -> bytes:
    """An unmasked frame (server to client)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    if n < 126:
        head = bytes((b0, n))
    elif n < 1 << 16:
        head = bytes((b0, 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, 127)) + n.to_bytes(8, "big")
    return head + payload


def _add(counts: Counts, more: Counts) -> None:
    for k, n in more.items():
        counts[k] = counts.get(k, 0) + n


class _Direction:
    """Message tracking shared by both directions."""

    def __init__(self, masker: Any) -> None:
        self.parser = FrameParser()
        self._stream = masker.stream() if masker is not None and masker.active else None
        self._msg = 0
        """Opcode of the data message in progress (TEXT or BINARY), 0 = none."""
        self._frame: FrameHead | None = None
        self._control: list[bytes] = []

    def _start(self, head: FrameHead) -> None:
        if head.opcode >= CLOSE:
            self._control = []
        elif head.opcode == CONT:
            if not self._msg:
                raise WsError("continuation frame without a message")
        else:
            if self._msg:
                raise WsError("new message before the previous one ended")
            self._msg = head.opcode
        self._frame = head

    def _mask(self, data: bytes, counts: Counts) -> bytes:
        stream = self._stream
        if stream is None:
            return data
        before = dict(stream.counts)
        out = bytes(stream.feed(data))
        if stream.counts != before:
            _add(counts, {k: n - before.get(k, 0) for k, n in stream.counts.items() if n != before.get(k, 0)})
        return out

    def _flush(self, counts: Counts) -> bytes:
        stream = self._stream
        if stream is None:
            return b""
        before = dict(stream.counts)
        out = bytes(stream.flush())
        _add(counts, {k: n - before.get(k, 0) for k, n in stream.counts.items() if n != before.get(k, 0)})
        return out


class Upstream(_Direction):
    """Client -> upstream: relayed untouched; ``feed`` returns (record, counts):
    the data payloads, unmasked, content-masked (each message flushed at its end)."""

    def feed(self, data: bytes) -> tuple[bytes, Counts]:
        rec: list[bytes] = []
        counts: Counts = {}
        for ev in self.parser.feed(data):
            if isinstance(ev, FrameHead):
                self._start(ev)
            elif isinstance(ev, Payload):
                assert self._frame is not None
                if self._frame.opcode < CLOSE:
                    rec.append(self._mask(ev.data, counts))
            else:
                head = self._frame
                assert head is not None
                if head.opcode < CLOSE and head.fin:
                    rec.append(self._flush(counts))
                    self._msg = 0
                self._frame = None
        return b"".join(rec), counts


class Downstream(_Direction):
    """Upstream -> client. ``feed`` returns (to the client, record, counts).

    ``mask``: text messages are masked and re-framed (extensions must not have
    been negotiated: a frame with RSV bits is refused). Otherwise the bytes go
    on as they came and payloads are only recorded."""

    def __init__(self, masker: Any, mask: bool, refuse_binary: bool = False) -> None:
        super().__init__(masker if mask else None)
        self.mask = mask and self._stream is not None
        self._masker = masker if self.mask else None
        self._rec_stream: Any = None
        """The stream masker of a binary message's recorded copy."""
        self._scrub: InjectedScrubber | None = None
        """A binary message, passed as it came but for the injected secrets."""
        self._refuse_binary = refuse_binary and self.mask
        self._sent_first = False
        self._pending: list[bytes] = []

    def _mask_control(self, opcode: int, payload: bytes, counts: Counts) -> bytes:
        """A control frame's payload is text the client sees too (a close
        reason, a ping's data): content-masked like a text message, the
        close code kept, cut to the 125 bytes a control frame holds."""
        masker = self._masker
        if masker is None or not payload:
            return payload
        keep = payload[:2] if opcode == CLOSE else b""
        text = payload[len(keep) :]
        if not text:
            return payload
        out, found = masker.mask_bytes(text)
        if not found:
            return payload
        _add(counts, dict(found))
        masked = bytes(out)[: 125 - len(keep)]
        if opcode == CLOSE:  # the reason must stay UTF-8
            masked = masked.decode("utf-8", "ignore").encode()
        return keep + masked

    def _scrubbed(self, data: bytes, final: bool, counts: Counts) -> bytes:
        """The injected secrets blanked out of a binary message (same length)."""
        scrub = self._scrub
        assert scrub is not None
        piece = scrub.feed(data, final)
        if scrub.counts:
            _add(counts, scrub.counts)
            scrub.counts = {}
        return piece

    def _emit(self, out: list[bytes], fin: bool) -> None:
        payload = b"".join(self._pending)
        self._pending = []
        if not payload and not fin:
            return
        out.append(frame(fin, CONT if self._sent_first else self._msg, payload))
        self._sent_first = True

    def feed(self, data: bytes) -> tuple[bytes, bytes, Counts]:
        if not self.mask:
            rec: list[bytes] = []
            for ev in self.parser.feed(data):
                if isinstance(ev, FrameHead):
                    self._frame = ev
                elif isinstance(ev, Payload) and self._frame is not None and self._frame.opcode < CLOSE:
                    rec.append(ev.data)
            return data, b"".join(rec), {}
        out: list[bytes] = []
        record: list[bytes] = []
        counts: Counts = {}
        for ev in self.parser.feed(data):
            if isinstance(ev, FrameHead):
                if ev.rsv:
                    raise WsError("frame with RSV bits (an extension the gateway cannot mask)")
                if ev.opcode == BINARY and self._refuse_binary:
                    raise UnmaskableMessage(
                        "binary message (cannot be masked)", b"".join(out), b"".join(record), counts
                    )
                self._start(ev)
            elif isinstance(ev, Payload):
                head = self._frame
                assert head is not None
                if head.opcode >= CLOSE:
                    self._control.append(ev.data)
                    continue
                if self._msg == TEXT:
                    piece = self._mask(ev.data, counts)
                    record.append(piece)
                else:  # binary: passed as it came, its recorded copy masked by content
                    masker = self._masker
                    assert masker is not None  # self.mask
                    if self._rec_stream is None:
                        self._rec_stream = masker.stream()
                        if masker.injects:
                            self._scrub = InjectedScrubber(masker)
                    record.append(bytes(self._rec_stream.feed(ev.data)))
                    piece = ev.data if self._scrub is None else self._scrubbed(ev.data, False, counts)
                self._pending.append(piece)
            else:
                head = self._frame
                assert head is not None
                self._frame = None
                if head.opcode >= CLOSE:
                    if self._pending:
                        self._emit(out, False)
                    payload = self._mask_control(head.opcode, b"".join(self._control), counts)
                    out.append(frame(True, head.opcode, payload))
                    self._control = []
                elif head.fin:
                    if self._msg == TEXT:
                        tail = self._flush(counts)
                        self._pending.append(tail)
                        record.append(tail)
                    elif self._rec_stream is not None:
                        record.append(bytes(self._rec_stream.flush()))
                        self._rec_stream = None
                        if self._scrub is not None:
                            self._pending.append(self._scrubbed(b"", True, counts))
                            self._scrub = None
                    self._emit(out, True)
                    self._msg = 0
                    self._sent_first = False
        if self._pending:
            self._emit(out, False)
        return b"".join(out), b"".join(record), counts
