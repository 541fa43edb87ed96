"""Recording of the request side of an exchange: the request head as the
client sent it (credentials redacted) and the first ``record_body_bytes`` of
its body, masked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hoopd.model import Output, Stream

from .bodies import mask_request_body
from .h1 import RequestHead

if TYPE_CHECKING:
    from .proxy import ClientConnection


WHOLE_BODY_FACTOR = 4
"""A whole request body up to this many times the cap is masked as one
(JSON key and path rules apply) before it is cut to the cap."""


class RequestRecorder:
    """Records the request line, headers (credentials redacted) and the first
    ``record_body_bytes`` of the body, masked."""

    def __init__(
        self,
        client: ClientConnection,
        seq: int,
        head: RequestHead,
        ctype: str,
        cenc: str,
        text_charset: str = "",
    ) -> None:
        self.client = client
        self.seq = seq
        self.head = head
        self.ctype = ctype
        self.cenc = cenc
        self.text_charset = text_charset  # bodies.foreign_charset: not recorded when masking
        self.left = client.proxy.options.record_body_bytes
        self.stream: Any = None
        self.total = 0

    def start(self, body: bytes, complete: bool, raw_head: bytes) -> None:
        """``raw_head``: the head as recorded (``Prepared.recorded_head``)."""
        proxy = self.client.proxy
        session = self.client.session
        assert session is not None
        counts: dict[str, int] = {}
        data = body
        self.total = len(body)
        if (
            data
            and self.left > 0
            and complete
            and not self.text_charset
            and len(body) <= WHOLE_BODY_FACTOR * self.left
        ):
            # a whole body is masked as one (JSON by key and path too), then
            # cut to the cap; a far larger one goes by content (below)
            data, counts = mask_request_body(
                proxy.masker if proxy.masking else None, data, self.ctype, self.cenc, proxy.docs
            )
            data = self._cut(data)
        elif data:
            data = self._stream_mask(data)
        session.record(Output(Stream.STDIN, raw_head + data, self.seq, counts))

    def _stream_mask(self, data: bytes) -> bytes:
        """What of ``data`` is recorded (at most ``left`` bytes). Masked text
        is cut after masking, never before: a value cut at the cap would
        match no rule and be recorded in part (``alice@ex``, a card
        number's first twelve digits)."""
        if self.left <= 0:
            return b""
        proxy = self.client.proxy
        if proxy.masking and self.text_charset:
            # the maskers read ASCII-compatible bytes only: record none of it
            self.left = 0
            return b"[body in charset " + self.text_charset.encode() + b" not recorded]"
        if not proxy.masking or self.cenc:
            part = data[: self.left]
            self.left -= len(part)
            return part if not self.cenc else b""
        stream = self.stream
        if stream is None:
            stream = self.stream = proxy.masker.stream()
        # no more input than the cap and what the stream may hold back: the
        # output cut at the cap needs no more, and masking costs by the byte
        limit = self.left + 2 * stream.max_hold
        if len(data) <= limit:
            return self._cut(bytes(stream.feed(data)))
        out = self._cut(bytes(stream.feed(data[:limit])))
        self.left = 0  # the stream did not see the rest: nothing more of it
        self.stream = None
        return out

    def _cut(self, out: bytes) -> bytes:
        part = out[: self.left]
        self.left -= len(part)
        return part

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if self.left <= 0:
            return
        out = self._stream_mask(data)
        if out:
            session = self.client.session
            assert session is not None
            session.record(Output(Stream.STDIN, out, self.seq))

    def finish(self) -> None:
        if self.stream is not None:
            tail = self._cut(bytes(self.stream.flush()))
            session = self.client.session
            if tail and session is not None:
                session.record(Output(Stream.STDIN, tail, self.seq, dict(self.stream.counts)))
            self.stream = None
