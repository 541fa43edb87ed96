"""Legacy scp (``scp -O``: exec of ``scp -t`` / ``scp -f``) file auditing, sans-IO.

In the legacy protocol the *source* side sends control lines and file data:
``C<mode> <size> <name>\\n`` then ``size`` bytes and a status byte,
``D<mode> 0 <name>\\n`` / ``E\\n`` to enter and leave directories, ``T...\\n``
for times. The sink answers with single status bytes. ``ScpAudit`` watches
the source stream (client→target for uploads, target→client for downloads)
and reports each file with its path (relative to the command's target) and size. It only watches:
the bytes pass through unchanged. Control lines longer than ``MAX_LINE`` or
malformed ones raise ``ScpError``.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 8192


class ScpError(Exception):
    """The stream is not legacy scp."""


@dataclass(frozen=True, slots=True)
class ScpFile:
    path: str
    size: int
    mode: str


class ScpAudit:
    def __init__(self) -> None:
        self._line = bytearray()
        self._skip = 0  # file bytes still to pass (plus the status byte)
        self._dirs: list[str] = []

    def feed(self, data: bytes) -> list[ScpFile]:
        out: list[ScpFile] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                continue
            if not self._line and data[pos] == 0:
                pos += 1  # a stray OK status byte
                continue
            nl = data.find(b"\n", pos)
            end = n if nl < 0 else nl
            self._line += data[pos:end]
            if len(self._line) > MAX_LINE:
                raise ScpError("scp control line too long")
            pos = end
            if nl < 0:
                break
            pos += 1
            line = bytes(self._line)
            self._line.clear()
            found = self._control(line)
            if found is not None:
                out.append(found)
        return out

    def _control(self, line: bytes) -> ScpFile | None:
        if not line:
            raise ScpError("empty scp control line")
        kind = line[:1]
        if kind in (b"\x01", b"\x02", b"T"):
            return None  # warning/error message, or times
        if kind == b"E":
            if self._dirs:
                self._dirs.pop()
            return None
        if kind not in (b"C", b"D"):
            raise ScpError(f"unexpected scp control line {line[:20]!r}")
        parts = line[1:].split(b" ", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise ScpError("malformed scp control line")
        mode, size, name = parts[0].decode(), int(parts[1]), parts[2].decode("utf-8", "replace")
        path = "/".join([*self._dirs, name])
        if kind == b"D":
            self._dirs.append(name)
            return None
        self._skip = size + 1
        return ScpFile(path, size, mode)
