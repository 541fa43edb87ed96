"""Background tasks that are neither garbage-collected mid-flight nor
allowed to fail silently (asyncio keeps only weak references to tasks), and
the loop time a connection's reads may take before it gives way."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("hoopd.aio")
_tasks: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _tasks.add(task)
    task.add_done_callback(_done)
    return task


def _done(task: asyncio.Task[Any]) -> None:
    _tasks.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task %s failed", task.get_name(), exc_info=exc)


SLICE_SECONDS = 0.02
"""Loop time a connection's reads may take before it stops reading until the
loop has gone round. libuv reads a readable socket up to 32 times (256 KiB
each) in one loop iteration, and the relays mask each read there: one peer
sending data dense with masked values (e-mails in a text body at ~4 MB/s,
rows at ~1.5 MB/s) held every other session of the listener for seconds."""


class ReadTime:
    """The loop time one connection's reads took since it last gave way."""

    __slots__ = ("_busy",)

    def __init__(self) -> None:
        self._busy = 0.0

    def spent(self, seconds: float) -> bool:
        """Count one read; True once the reads took ``SLICE_SECONDS``: time
        to give the loop a turn (the count starts again)."""
        self._busy += seconds
        if self._busy < SLICE_SECONDS:
            return False
        self._busy = 0.0
        return True
