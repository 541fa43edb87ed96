"""What the user typed before Enter in an interactive shell (sans-IO, best effort).

The gateway sees keystrokes, not the remote shell's line editor, so it keeps
its own model of the line: printable characters append, Backspace deletes,
Ctrl-U/Ctrl-C clear, Ctrl-W deletes a word, bracketed paste is taken as typed
text. Anything that moves the cursor or pulls text from elsewhere (arrow keys,
Tab completion, Ctrl-R history search, Ctrl-A/E) makes the line ``uncertain``:
its text is what the gateway saw typed, not necessarily what the shell runs.

Once a line is uncertain only Enter or Ctrl-C makes the next one certain
again: after a cursor motion Ctrl-U and Ctrl-W kill only what is left of the
cursor, and the rest stays. Control keys the tracker does not model (undo,
the Ctrl-X prefix, Ctrl-V literal-next, Ctrl-]...) make the line uncertain.
Besides Enter, these keys hand a line to the shell: Ctrl-X Ctrl-E (bash
opens an editor on it and runs what the editor leaves), Ctrl-O (bash's
operate-and-get-next: the line runs and the next history line is put in
the buffer) and Ctrl-D on a non-empty line (in a canonical tty, as in
``sh``/dash, the line is read without a newline; it stays in the buffer, as
the reader keeps it too, and the text that follows joins it).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 16 * 1024
MAX_WIDTH = 1024
"""Columns of the terminal drawn_lines models at most."""
_HARMLESS = frozenset({0x00, 0x07, 0x0C, 0x1A, 0x1C})
"""Control keys that leave the line as it is: Ctrl-@ (set mark), Ctrl-G,
Ctrl-L (redraw), Ctrl-Z and Ctrl-\\ (signals)."""


@dataclass(frozen=True, slots=True)
class Line:
    text: str
    uncertain: bool = False


@dataclass(frozen=True, slots=True)
class Enter:
    """Enter was pressed: ``line`` is what was typed; ``key`` the bytes of the key."""

    line: Line
    key: bytes
    partial: bool = False
    """Ctrl-D: the line may have been read without its end (a canonical tty);
    judge it, but the shell may also just have ignored the key."""
    editor: bool = False
    """Ctrl-X Ctrl-E (edit-and-execute-command): the shell opens an editor
    on the line and runs what it is left holding."""


Piece = bytes | Enter


class LineTracker:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._uncertain = False
        self._esc = b""  # an escape sequence in progress
        self._last_cr = False
        self._literal = False  # after Ctrl-V / Ctrl-Q: the next byte is inserted as it is
        self._paste = False  # inside a bracketed paste
        self._ctrl_x = False  # the last key was Ctrl-X (a prefix)

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
            if self._literal:
                self._literal = False
                self._uncertain = True
                if b >= 0x20 and b != 0x7F:
                    self._append(b)
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
            ctrl_x, self._ctrl_x = self._ctrl_x, b == 0x18
            if ctrl_x and b == 0x05:  # Ctrl-X Ctrl-E: edit, then run
                if i > start:
                    out.append(data[start:i])
                out.append(Enter(Line(self._buf.decode("utf-8", "replace"), True), data[i : i + 1], editor=True))
                self._reset()
                start = i + 1
                continue
            if b == 0x1B:
                self._esc = b"\x1b"
            elif b >= 0x20 and b != 0x7F:
                self._append(b)
            elif b == 0x0F:  # Ctrl-O: operate-and-get-next runs the line
                if i > start:
                    out.append(data[start:i])
                out.append(Enter(self.current, data[i : i + 1]))
                self._reset()
                self._uncertain = True  # the next history line is in the buffer
                start = i + 1
            elif b == 0x04:  # Ctrl-D
                if self._buf:
                    if i > start:
                        out.append(data[start:i])
                    out.append(Enter(self.current, data[i : i + 1], partial=True))
                    start = i + 1
            elif self._paste and b != 0x03:
                # pasted control keys may be inserted, not obeyed (a shell
                # without bracketed paste obeys them: the keys that run a
                # line are judged above all the same)
                self._uncertain = True
            elif b in (0x7F, 0x08):
                self._delete_char()
            elif b == 0x03:  # Ctrl-C: the shell discards the line
                self._reset()
            elif b == 0x15:  # Ctrl-U: kills what is left of the cursor
                self._buf.clear()
            elif b == 0x17:  # Ctrl-W
                self._delete_word()
            elif b in (0x16, 0x11):  # Ctrl-V, Ctrl-Q: literal next
                self._literal = True
                self._uncertain = True
            elif b not in _HARMLESS:
                self._uncertain = True  # Tab, ^R, ^A, ^E, ^K, ^Y, undo, ^X...
        if start < len(data):
            out.append(data[start:])
        return out

    def clear(self) -> None:
        """The shell dropped the line (a refused one): start afresh."""
        self._reset()
        self._literal = False

    def _append(self, b: int) -> None:
        if len(self._buf) < MAX_LINE:
            self._buf.append(b)
        else:
            self._uncertain = True

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
                self._paste = seq == b"\x1b[200~"
                return  # bracketed paste markers: the pasted text counts as typed
            self._uncertain = True
            return
        self._esc = seq


def drawn_lines(output: bytes, width: int, max_rows: int = 64) -> list[str]:
    """The lines a terminal ``width`` columns wide shows after ``output``
    (from a line's start), as the shell's line editor drew them: characters
    overwrite, CR/BS and cursor keys (CSI A B C D G) move, CSI K/P/@/X/J
    erase, delete and insert; rows the terminal wrapped are joined. A line
    editor redraws only what changed (``xm -rf d``, Home, Ctrl-D, ``r`` is
    drawn as ``\\r``, 4 x CSI C, CSI P, CSI @, ``r``), so the text of the
    output alone does not show the line that runs."""
    width = min(max(width, 1), MAX_WIDTH)  # the client declares it: bound it
    rows: list[list[str]] = [[]]
    wrapped: list[bool] = [False]
    r = c = 0
    text = output.decode("utf-8", "replace")
    i, n = 0, len(text)

    def row_at(k: int) -> list[str]:
        while len(rows) <= k:
            rows.append([])
            wrapped.append(False)
        return rows[k]

    while i < n:
        ch = text[i]
        i += 1
        if ch == "\x1b":
            if i < n and text[i] == "[":
                j = i + 1
                while j < n and not ("\x40" <= text[j] <= "\x7e"):
                    j += 1
                if j >= n:
                    break
                params, final = text[i + 1 : j], text[j]
                i = j + 1
                nums = [int(p[:6]) if p.isdigit() else 0 for p in params.lstrip("?").split(";")[:4]]
                num = min(max(nums[0], 1), width) if nums else 1  # CSI 999999999 @ is a row at most
                row = row_at(r)
                c = min(c, width)
                if final == "C":
                    c = min(c + num, width - 1)
                elif final == "D":
                    c = max(c - num, 0)
                elif final == "G":
                    c = min(num - 1, width - 1)
                elif final == "A":
                    r = max(r - num, 0)
                elif final == "B":
                    r += min(num, max_rows)
                    row_at(r)
                elif final in "Hf":
                    r, c = len(rows), min(max(nums[1] if len(nums) > 1 else 1, 1) - 1, width - 1)
                    row_at(r)
                elif final == "K":
                    mode = nums[0] if nums else 0
                    if mode == 0:
                        del row[c:]
                    elif mode == 1:
                        row[: c + 1] = [" "] * min(c + 1, len(row))
                    else:
                        row.clear()
                elif final == "J" and nums and nums[0] in (2, 3):
                    rows, wrapped, r, c = [[]], [False], 0, 0
                elif final == "J":
                    del row[c:]
                    del rows[r + 1 :], wrapped[r + 1 :]
                elif final == "P":
                    del row[c : c + num]
                elif final == "@":
                    if c < len(row):
                        row[c:c] = [" "] * num
                        del row[width:]
                elif final == "X":
                    for k in range(c, min(c + num, len(row))):
                        row[k] = " "
            elif i < n and text[i] == "]":  # OSC: up to BEL or ST
                j = i
                while j < n and text[j] != "\x07" and text[j : j + 2] != "\x1b\\":
                    j += 1
                i = j + (1 if j < n and text[j] == "\x07" else 2)
            elif i < n and text[i] in "()":
                i += 2
            else:
                i += 1
            continue
        if ch == "\r":
            c = 0
        elif ch == "\n":
            r += 1
            row_at(r)
        elif ch == "\b":
            c = max(min(c, width - 1) - 1, 0)
        elif ch == "\t":
            c = min((c // 8 + 1) * 8, width - 1)
        elif ch >= " " and ch != "\x7f":
            if c >= width:  # the pending wrap of the last column
                wrapped[r] = True
                r, c = r + 1, 0
            row = row_at(r)
            if len(row) < c:
                row.extend(" " * (c - len(row)))
            if c < len(row):
                row[c] = ch
            else:
                row.append(ch)
            c += 1
        if len(rows) > max_rows:
            cut = len(rows) - max_rows
            del rows[:cut], wrapped[:cut]
            r = max(r - cut, 0)
    lines: list[str] = []
    joined = ""
    for row, wrap in zip(rows, wrapped, strict=True):
        joined += "".join(row)
        if not wrap:
            lines.append(joined.rstrip())
            joined = ""
    if joined:
        lines.append(joined.rstrip())
    return [line for line in lines if line.strip()]
