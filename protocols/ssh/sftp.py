"""SFTP (version 3, draft-ietf-secsh-filexfer-02) packet auditing, sans-IO.

The gateway passes SFTP bytes through unchanged; these classes only watch.
``SftpFramer`` splits one direction of the byte stream into packets (bytes in,
packets out, any chunking gives the same packets). ``SftpAudit`` pairs client
requests with server replies and reports file operations: opens (with the
bytes read and written through the handle, reported at close), removes,
renames, mkdir/rmdir, setstat and symlinks.

A malformed stream (a packet longer than ``MAX_PACKET`` or a truncated field)
raises ``SftpError``; the handler then closes the channel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_PACKET = 1024 * 1024 + 1024
"""OpenSSH sends at most 256 KiB; leave room for other implementations."""

# request types
INIT, VERSION, OPEN, CLOSE, READ, WRITE = 1, 2, 3, 4, 5, 6
LSTAT, FSTAT, SETSTAT, FSETSTAT, OPENDIR, READDIR = 7, 8, 9, 10, 11, 12
REMOVE, MKDIR, RMDIR, REALPATH, STAT, RENAME, READLINK, SYMLINK = 13, 14, 15, 16, 17, 18, 19, 20
EXTENDED = 200
# reply types
STATUS, HANDLE, DATA, NAME, ATTRS, EXTENDED_REPLY = 101, 102, 103, 104, 105, 201

PFLAG_READ, PFLAG_WRITE, PFLAG_APPEND, PFLAG_CREAT, PFLAG_TRUNC = 1, 2, 4, 8, 16
STATUS_NAMES = {
    0: "ok", 1: "eof", 2: "no such file", 3: "permission denied", 4: "failure",
    5: "bad message", 6: "no connection", 7: "connection lost", 8: "unsupported",
}


class SftpError(Exception):
    """The stream is not SFTP."""


@dataclass(frozen=True, slots=True)
class Packet:
    type: int
    body: bytes
    """Everything after the type byte (request id first, except INIT/VERSION)."""

    @property
    def request_id(self) -> int | None:
        if self.type in (INIT, VERSION) or len(self.body) < 4:
            return None
        return int(struct.unpack_from(">I", self.body)[0])


class SftpFramer:
    """Bytes in, packets out. DATA and WRITE payloads are not kept: only their
    first ``keep`` bytes (the headers) are, so memory stays bounded by one
    header, not by one packet."""

    HEADER_KEEP = 4096

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # bytes of the current packet still to skip (payload not kept)
        self._partial: tuple[int, bytes, int] | None = None

    def feed(self, data: bytes) -> list[Packet]:
        out: list[Packet] = []
        view = memoryview(data)
        pos = 0
        n = len(view)
        while pos < n:
            if self._need:
                take = min(self._need, n - pos)
                self._need -= take
                pos += take
                if not self._need and self._partial is not None:
                    ptype, body, _ = self._partial
                    self._partial = None
                    out.append(Packet(ptype, body))
                continue
            if len(self._buf) < 5:
                take = min(5 - len(self._buf), n - pos)
                self._buf += view[pos : pos + take]
                pos += take
                if len(self._buf) < 5:
                    break
            length = int.from_bytes(self._buf[:4], "big")
            if length < 1 or length > MAX_PACKET:
                raise SftpError(f"bad SFTP packet length {length}")
            have = len(self._buf) - 4
            keep = min(length, self.HEADER_KEEP) if self._buf[4] in (DATA, WRITE) else length
            if have < keep:
                take = min(keep - have, n - pos)
                self._buf += view[pos : pos + take]
                pos += take
                have += take
                if have < keep:
                    break
            body = bytes(self._buf[4 : 4 + keep])
            self._buf.clear()
            rest = length - keep
            if rest:
                self._need = rest
                self._partial = (body[0], body[1:], length)
                continue
            out.append(Packet(body[0], body[1:]))
        return out


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise SftpError("truncated SFTP packet")
        value = int(struct.unpack_from(">I", self.data, self.pos)[0])
        self.pos += 4
        return value

    def u64(self) -> int:
        if self.pos + 8 > len(self.data):
            raise SftpError("truncated SFTP packet")
        value = int(struct.unpack_from(">Q", self.data, self.pos)[0])
        self.pos += 8
        return value

    def string(self, limit: int = 65536) -> bytes:
        size = self.u32()
        if size > limit or self.pos + size > len(self.data):
            raise SftpError("truncated SFTP string")
        value = self.data[self.pos : self.pos + size]
        self.pos += size
        return value

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")


@dataclass
class FileOp:
    """One audited operation. ``op``: open, remove, rename, mkdir, rmdir,
    setstat, symlink. ``status`` is empty until the reply (or close) arrives."""

    op: str
    path: str
    target: str = ""
    mode: str = ""
    """For open: read, write, append, create/truncate flags as text."""
    bytes_read: int = 0
    bytes_written: int = 0
    status: str = ""
    done: bool = False
    token: object = None
    """Left for the caller (the recorded Command)."""
    attrs: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        text = f"sftp {self.op} {self.path}"
        if self.target:
            text += f" -> {self.target}"
        if self.mode:
            text += f" ({self.mode})"
        return text


def _mode(pflags: int) -> str:
    words = []
    if pflags & PFLAG_READ:
        words.append("read")
    if pflags & PFLAG_WRITE:
        words.append("write")
    if pflags & PFLAG_APPEND:
        words.append("append")
    if pflags & PFLAG_CREAT:
        words.append("create")
    if pflags & PFLAG_TRUNC:
        words.append("truncate")
    return ",".join(words) or "none"


class SftpAudit:
    """Feed client bytes with ``client_data`` and server bytes with
    ``server_data``; each returns ``(started, finished)`` lists of FileOps."""

    MAX_INFLIGHT = 4096

    def __init__(self) -> None:
        self._client = SftpFramer()
        self._server = SftpFramer()
        self._pending: dict[int, tuple[str, FileOp | None, bytes]] = {}
        self._handles: dict[bytes, FileOp] = {}
        self._reads: dict[int, bytes] = {}

    def client_data(self, data: bytes) -> tuple[list[FileOp], list[FileOp]]:
        started: list[FileOp] = []
        finished: list[FileOp] = []
        for pkt in self._client.feed(data):
            self._request(pkt, started, finished)
        return started, finished

    def server_data(self, data: bytes) -> tuple[list[FileOp], list[FileOp]]:
        finished: list[FileOp] = []
        for pkt in self._server.feed(data):
            self._reply(pkt, finished)
        return [], finished

    def close(self) -> list[FileOp]:
        """The channel ended: report open files that were never closed."""
        left = []
        for op in self._handles.values():
            if not op.done:
                op.done = True
                op.status = op.status or "not closed"
                left.append(op)
        self._handles.clear()
        self._pending.clear()
        return left

    def _track(self, rid: int, kind: str, op: FileOp | None, handle: bytes = b"") -> None:
        if len(self._pending) >= self.MAX_INFLIGHT:
            raise SftpError("too many SFTP requests in flight")
        self._pending[rid] = (kind, op, handle)

    def _request(self, pkt: Packet, started: list[FileOp], finished: list[FileOp]) -> None:
        if pkt.type == INIT:
            return
        r = _Reader(pkt.body)
        rid = r.u32()
        t = pkt.type
        if t == OPEN:
            path = r.text()
            op = FileOp("open", path, mode=_mode(r.u32()))
            started.append(op)
            self._track(rid, "open", op)
        elif t == CLOSE:
            handle = r.string()
            self._track(rid, "close", self._handles.get(handle), handle)
        elif t == READ:
            handle = r.string()
            r.u64()
            r.u32()
            self._reads[rid] = handle
            self._track(rid, "read", None, handle)
        elif t == WRITE:
            handle = r.string()
            r.u64()
            size = r.u32()  # data length (the data itself is not kept)
            writing = self._handles.get(handle)
            if writing is not None:
                writing.bytes_written += size
            self._track(rid, "write", None, handle)
        elif t in (REMOVE, RMDIR, MKDIR, SETSTAT):
            op = FileOp({REMOVE: "remove", RMDIR: "rmdir", MKDIR: "mkdir", SETSTAT: "setstat"}[t], r.text())
            started.append(op)
            self._track(rid, "op", op)
        elif t in (RENAME, SYMLINK):
            a, b = r.text(), r.text()
            op = FileOp("rename" if t == RENAME else "symlink", a, b)
            started.append(op)
            self._track(rid, "op", op)
        elif t == EXTENDED:
            name = r.string().decode("ascii", "replace")
            if name in ("posix-rename@openssh.com", "hardlink@openssh.com"):
                a, b = r.text(), r.text()
                op = FileOp("rename" if name.startswith("posix") else "hardlink", a, b)
                started.append(op)
                self._track(rid, "op", op)
            else:
                self._track(rid, "other", None)
        else:
            self._track(rid, "other", None)

    def _reply(self, pkt: Packet, finished: list[FileOp]) -> None:
        if pkt.type == VERSION:
            return
        r = _Reader(pkt.body)
        rid = r.u32()
        entry = self._pending.pop(rid, None)
        handle = self._reads.pop(rid, None)
        if entry is None:
            return
        kind, op, h = entry
        t = pkt.type
        if t == DATA and handle is not None:
            size = r.u32()
            op2 = self._handles.get(handle)
            if op2 is not None:
                op2.bytes_read += size
        elif t == HANDLE and kind == "open" and op is not None:
            new_handle = r.string()
            if len(self._handles) < self.MAX_INFLIGHT:
                self._handles[new_handle] = op
        elif t == STATUS:
            code = r.u32()
            status = STATUS_NAMES.get(code, f"status {code}")
            if kind == "open" and op is not None:  # open failed
                op.status, op.done = status, True
                finished.append(op)
            elif kind == "close":
                closed = self._handles.pop(h, None)
                if closed is not None:
                    closed.status, closed.done = status, True
                    finished.append(closed)
            elif kind == "op" and op is not None:
                op.status, op.done = status, True
                finished.append(op)
