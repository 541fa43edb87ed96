"""Stream masking for byte streams (SSH/exec output, HTTP bodies).

Guarantee: for any chunking of the input, ``b"".join(feed(c) for c in chunks) +
flush()`` equals ``Masker.mask_bytes(b"".join(chunks))``, and the masker holds
back a bounded number of bytes:

* single-line rules: bytes after the last newline, at most ``window + 19``
  (``window`` = the longest match of any active single-line rule, +16 bytes of
  boundary context, +3 to avoid splitting a UTF-8 character);
* while a PEM private key header is open: until the key's END line (or the end
  of its base64 body) has arrived, at most ``pem_window + 96`` bytes (16 KiB).

Emitted chunks never end inside a UTF-8 character (unless the input is not
UTF-8 and only at ``flush``). ``flush()`` ends the stream: whatever is held is
masked as the end of input and returned; the masker can then be reused for a
new stream. A protocol that needs low latency on an idle interactive stream may
call ``flush()`` at a quiet point, accepting that a value split exactly across
that point is seen as two values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import _CTX, PEM_TAIL, Counts, apply_edits
from .literals import INJECTED_ID

if TYPE_CHECKING:
    from .engine import Masker


def _utf8_cut(buf: bytes, lo: int, cut: int) -> int:
    """Move ``cut`` back (at most 3 bytes, not below ``lo``) so it does not split a character."""
    n = len(buf)
    if cut >= n:
        # end of buffer: is the tail an incomplete sequence?
        for back in range(1, 4):
            i = n - back
            if i < lo:
                break
            c = buf[i]
            if c & 0xC0 == 0x80:
                continue
            need = (
                2 if c & 0xE0 == 0xC0 else 3 if c & 0xF0 == 0xE0 else 4 if c & 0xF8 == 0xF0 else 1
            )
            return i if need > back else n
        return n
    back = 0
    while cut > lo and back < 3 and buf[cut] & 0xC0 == 0x80:
        cut -= 1
        back += 1
    return cut


class StreamMasker:
    def __init__(self, masker: Masker) -> None:
        self._m = masker
        self._buf = b""
        self._pos = 0  # scan position in _buf
        self._out = 0  # first byte of _buf not yet emitted
        self.counts: Counts = {}
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def held(self) -> int:
        """Bytes received but not yet emitted."""
        return len(self._buf) - self._out

    @property
    def max_hold(self) -> int:
        """Upper bound of ``held`` after any ``feed``."""
        m = self._m
        return max(m.window + _CTX + 3, (m.pem_window + PEM_TAIL + 3) if m.pem_window else 0)

    def _add(self, counts: Counts) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def feed(self, data: bytes) -> bytes:
        self.bytes_in += len(data)
        m = self._m
        if not m.scans_content:
            self.bytes_out += len(data)
            return bytes(data)
        buf = self._buf + data if self._buf else bytes(data)
        n = len(buf)
        hard = n - m.window - _CTX
        nl = buf.rfind(b"\n", self._pos)
        limit = max(hard, nl + 1, self._pos)
        edits, resume = m._find(buf, self._pos, False, limit)
        lo = edits[-1][1] if edits else self._out
        emit = _utf8_cut(buf, max(lo, self._out), resume)
        out, counts = apply_edits(buf, edits, self._out, emit)
        self._add(counts)
        # keep a little context before the emitted point for boundary checks
        keep_from = max(0, emit - _CTX)
        self._buf = buf[keep_from:]
        self._pos = resume - keep_from
        self._out = emit - keep_from
        self.bytes_out += len(out)
        return out

    def flush(self) -> bytes:
        m = self._m
        buf = self._buf
        if not buf or not m.scans_content:
            self._buf = b""
            self._pos = self._out = 0
            return b""
        edits, _ = m._find(buf, self._pos, True, len(buf))
        out, counts = apply_edits(buf, edits, self._out, len(buf))
        self._add(counts)
        self._buf = b""
        self._pos = self._out = 0
        self.bytes_out += len(out)
        return out


class InjectedScrubber:
    """Bytes relayed as they are (a binary body no rule can read) with the
    secrets the gateway injects upstream blanked out: each match replaced by
    as many ``*``, so the length holds (a ``Content-Length`` stays true) and
    the client never sees the upstream's credential echoed back. Holds back
    one match's length less one byte until more comes (or ``final``)."""

    def __init__(self, masker: Masker) -> None:
        self._m = masker
        self._hold = max(masker.injected_max_len - 1, 0)
        self._tail = b""
        self.counts: Counts = {}

    def feed(self, data: bytes, final: bool = False) -> bytes:
        buf = self._tail + data if self._tail else bytes(data)
        n = len(buf)
        cut = n if final else max(n - self._hold, 0)
        # a match starting before cut ends in buf: it is at most hold + 1 long
        spans = self._m.injected_spans(buf, cut)
        if spans:
            out = bytearray(buf)
            for s, e in spans:
                out[s:e] = b"*" * (e - s)
            self.counts[INJECTED_ID] = self.counts.get(INJECTED_ID, 0) + len(spans)
            cut = max(cut, spans[-1][1])
            buf = bytes(out)
        self._tail = buf[cut:]
        return buf[:cut]
