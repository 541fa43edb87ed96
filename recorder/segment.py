"""Low-level segment file I/O.

Kept apart from the writer so that tests can simulate a failing disk by
monkeypatching ``_write_all`` (tests run as root, so a read-only directory
does not fail writes) and so every syscall the recorder issues is in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written (os.write may write partially)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a fsynced file is useless if its name is lost)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFile:
    """One open .hrec file, append-only. Never reopened: O_EXCL at creation
    guarantees we never append to a file some earlier run left behind."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, _OPEN_FLAGS, 0o640)

    def write(self, data: bytes) -> None:
        _write_all(self.fd, data)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def probe_writable(directory: Path) -> None:
    """Create, write and remove a small file in directory; raises OSError on failure."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".probe-{os.getpid()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, b"probe")
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
