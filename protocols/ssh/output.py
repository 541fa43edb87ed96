"""Masked output streams for SSH channels.

Every stdout/stderr stream goes through its own ``StreamMasker``. The masker
holds back the end of a line until it knows no secret is cut in half; for a
terminal that would delay prompts and the echo of every typed key, so:

* output that only echoes what the user just typed (plus control sequences)
  is released at once (``expect_echo``);
* anything else that stays held is released after ``flush_after`` seconds of
  quiet (``options.output_flush``), so prompts and progress bars appear.

A secret the target prints slowly (one character per more than
``flush_after``) can therefore be split across two flushes and escape
masking; see docs/ssh.md. Exec channels without a terminal use
``flush_after=None`` by default (``options.exec_output_flush``): no timer,
held output waits for more output or the end of the stream.

The call into the masking package is isolated here (``make_stream``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

_STYLE = rb"\x1b\[[0-9;:]*[mK]"
_STYLED_WORD = re.compile(rb"[!-~]+(?:(?:" + _STYLE + rb")+[!-~]+)+")
_STYLES = re.compile(_STYLE)
"""Colour (SGR) and erase-in-line sequences inside a word: ``grep --color``
highlighting part of a token writes ``tok\x1b[01;31m\x1b[Ken\x1b[m\x1b[K...``,
which the terminal shows as the whole token but no masking pattern matches.
A word whose text without them holds a secret loses them (and its colour)."""
_CONTROL = re.compile(rb"\x1b\[[0-9;?<=>]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b.|[\x00-\x1f\x7f]")
ECHO_MAX = 512


def make_stream(masker: Any) -> Any:
    """A fresh stream masker from the connection's compiled masker, or None
    when nothing could match (no scanning needed)."""
    if masker is None or not getattr(masker, "active", False):
        return None
    if not getattr(masker, "scans_content", True):
        return None
    return masker.stream()


class MaskedStream:
    """One direction of output (stdout or stderr) of one channel."""

    def __init__(
        self,
        masker: Any,
        emit: Callable[[bytes, dict[str, int] | None], None],
        flush_after: float | None,
    ) -> None:
        self._sm = make_stream(masker)
        self._emit = emit
        self._flush_after = flush_after
        self._timer: asyncio.TimerHandle | None = None
        self._last_feed = 0.0
        self._counted = 0
        self._typed = bytearray()
        self._expect_echo = False
        self._masker = masker

    # -- echo ----------------------------------------------------------------
    def typed(self, data: bytes) -> None:
        """The user typed ``data`` (PTY sessions): its echo may pass at once."""
        self._expect_echo = True
        self._typed += _CONTROL.sub(b"", data)
        if len(self._typed) > ECHO_MAX:
            del self._typed[: len(self._typed) - ECHO_MAX]

    def _is_echo(self, data: bytes) -> bool:
        """Is ``data`` (only) the echo of keys typed and not yet echoed?"""
        if not self._expect_echo or len(data) > ECHO_MAX:
            return False
        visible = _CONTROL.sub(b"", data)
        if not visible:
            return True  # cursor movement, erase, CR/LF after typing
        if not self._typed.startswith(visible):
            # Not the echo (in order) of what is pending: the output has moved
            # on; keys that were never echoed (a password) are forgotten.
            self._typed.clear()
            return False
        del self._typed[: len(visible)]
        return True

    # -- data ----------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        sm = self._sm
        if sm is None:
            self._emit(data, None)
            return
        if b"\x1b[" in data:
            data = _STYLED_WORD.sub(self._unstyle_secret, data)
        out = sm.feed(data)
        if sm.held:
            if self._is_echo(data):
                out += sm.flush()
            else:
                self._last_feed = asyncio.get_running_loop().time()
                if self._timer is None and self._flush_after is not None:
                    self._arm(self._flush_after)
        if self._expect_echo and not self._typed:
            self._expect_echo = False
        if out:
            self._emit(out, self._new_counts())

    def _unstyle_secret(self, m: re.Match[bytes]) -> bytes:
        plain = _STYLES.sub(b"", m[0])
        try:
            _, counts = self._masker.mask_bytes(plain)
        except Exception:  # never let a check break the stream: mask what we can
            return plain
        return plain if counts else m[0]

    def flush(self) -> None:
        """Release everything held (end of stream, or before the gateway writes
        a message of its own)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sm is None:
            return
        out = self._sm.flush()
        if out:
            self._emit(out, self._new_counts())

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        assert self._flush_after is not None
        quiet = asyncio.get_running_loop().time() - self._last_feed
        if quiet + 0.0005 < self._flush_after:
            self._arm(self._flush_after - quiet)
            return
        self.flush()

    def _new_counts(self) -> dict[str, int] | None:
        counts = self._sm.counts if self._sm is not None else None
        if not counts:
            return None
        total = sum(counts.values())
        if total == self._counted:
            return None
        self._counted = total
        # report the running totals' increase since last time
        prev = getattr(self, "_prev", {})
        delta = {k: v - prev.get(k, 0) for k, v in counts.items() if v != prev.get(k, 0)}
        self._prev = dict(counts)
        return delta


class RecordBuffer:
    """Coalesces recorded output of a non-terminal channel into larger Output
    events (at most ``limit`` bytes or ``delay`` seconds old), so bulk output
    costs the recorder one frame per ~256 KiB instead of one per SSH packet.
    Terminal output is recorded chunk by chunk (replay needs its timing)."""

    def __init__(self, record: Callable[[Any], None], command_seq: int,
                 limit: int = 256 * 1024, delay: float = 0.1) -> None:
        from hoopd.model import Output

        self._output = Output
        self._record = record
        self._seq = command_seq
        self._limit = limit
        self._delay = delay
        self._stream: Any = None
        self._buf: list[bytes] = []
        self._size = 0
        self._masked: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, stream: Any, data: bytes, masked: dict[str, int] | None) -> None:
        if self._stream is not stream and self._buf:
            self.flush()
        self._stream = stream
        self._buf.append(data)
        self._size += len(data)
        if masked:
            for k, v in masked.items():
                self._masked[k] = self._masked.get(k, 0) + v
        if self._size >= self._limit:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf:
            return
        data = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
        self._buf, self._size = [], 0
        masked, self._masked = self._masked, {}
        self._record(self._output(self._stream, data, self._seq, masked))
