"""A transport with no socket behind it, for driving the gateway's protocol
objects in-process (tests and the in-process benchmarks)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class MemoryTransport(asyncio.Transport):
    """Accepts everything: written bytes go to ``on_write`` when given, else
    they are kept in ``data``. Flow control calls are no-ops."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None) -> None:
        super().__init__()
        self.on_write = on_write
        self.data = bytearray()
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.on_write is not None:
            self.on_write(bytes(data))
        else:
            self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 50000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True


class ReadingSwitches:
    """Only the reading switches of a transport, each call noted in
    ``calls`` ("pause", "resume"): for what pauses and resumes reading."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closing = False

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def is_closing(self) -> bool:
        return self.closing
