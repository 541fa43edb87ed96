"""What the user typed before Enter in an interactive shell (sans-IO, best effort).

The gateway sees keystrokes, not the remote shell's line editor, so it keeps
its own model of the line: printable characters append, Backspace deletes,
Ctrl-U/Ctrl-C clear, Ctrl-W deletes a word, bracketed paste is taken as typed
text. Anything that moves the cursor or pulls text from elsewhere (arrow keys,
Tab completion, Ctrl-R history search, Ctrl-A/E) makes the line ``uncertain``:
its text is what the gateway saw typed, not necessarily what the shell runs.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 16 * 1024


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    uncertain: bool = False


@dataclass(frozen=True, slots=True)
class Enter:
    """Enter was pressed: ``line`` is what was typed; ``key`` the bytes of the key."""

    line: Line
    key: bytes


Piece = bytes | Enter


class LineTracker:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._uncertain = False
        self._esc = b""  # an escape sequence in progress
        self._last_cr = False

    @property
    def current(self) -> Line:
        return Line(self._buf.decode("utf-8", "replace"), self._uncertain)

    def feed(self, data: bytes) -> list[Piece]:
        """Split ``data`` into bytes to forward and Enter events, in order.
        Concatenating the bytes and the Enter keys gives ``data`` back."""
        out: list[Piece] = []
        start = 0
        for i, b in enumerate(data):
            if self._esc:
                self._escape_byte(b)
                continue
            if b in (0x0D, 0x0A):
                if b == 0x0A and self._last_cr:
                    self._last_cr = False
                    continue  # \r\n counts once
                self._last_cr = b == 0x0D
                if i > start:
                    out.append(data[start:i])
                out.append(Enter(self.current, data[i : i + 1]))
                self._reset()
                start = i + 1
                continue
            self._last_cr = False
            if b == 0x1B:
                self._esc = b"\x1b"
            elif b in (0x7F, 0x08):
                self._delete_char()
            elif b in (0x15, 0x03):  # Ctrl-U, Ctrl-C
                self._reset()
            elif b == 0x17:  # Ctrl-W
                self._delete_word()
            elif b in (0x09, 0x12, 0x01, 0x05, 0x02, 0x06, 0x10, 0x0E, 0x0B, 0x19, 0x14):
                self._uncertain = True  # Tab, ^R, ^A, ^E, ^B, ^F, ^P, ^N, ^K, ^Y, ^T
            elif b >= 0x20:
                if len(self._buf) < MAX_LINE:
                    self._buf.append(b)
                else:
                    self._uncertain = True
        if start < len(data):
            out.append(data[start:])
        return out

    def _reset(self) -> None:
        self._buf.clear()
        self._uncertain = False

    def _delete_char(self) -> None:
        if not self._buf:
            return
        # remove one UTF-8 character
        i = len(self._buf) - 1
        while i > 0 and self._buf[i] & 0xC0 == 0x80:
            i -= 1
        del self._buf[i:]

    def _delete_word(self) -> None:
        text = self._buf.rstrip(b" ")
        cut = text.rfind(b" ") + 1
        del self._buf[cut:]

    def _escape_byte(self, b: int) -> None:
        seq = self._esc + bytes([b])
        if len(seq) == 2:
            if b in (0x5B, 0x4F):  # CSI or SS3
                self._esc = seq
                return
            self._esc = b""
            self._uncertain = True  # Alt-<key>: readline word motions etc.
            return
        if seq[1] == 0x4F or 0x40 <= b <= 0x7E or len(seq) > 32:
            self._esc = b""
            if seq in (b"\x1b[200~", b"\x1b[201~"):
                return  # bracketed paste markers: the pasted text counts as typed
            self._uncertain = True
            return
        self._esc = seq
