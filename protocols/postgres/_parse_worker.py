"""The parse worker: a child process that analyses long SQL texts so the
event loop does not.

Scoring a statement parses it (``_analysis.analyse``): about 1 µs of CPU per
byte, most of it in code that holds the GIL (decoding libpg_query's JSON
tree and walking it), so a thread would still stall every session on the
loop for the length of a bulk INSERT. The gateway hands texts longer than
``risk.OFFLOAD_MIN_CHARS`` to this process instead, one at a time, and
holds only the session that sent them while it works.

Wire (the child's stdin and stdout): each request is a 4-byte big-endian
length and the UTF-8 text; each answer a 4-byte length and the msgpack of
``Analysis.to_wire()``. Anything else from the child -- an early exit, a
malformed answer, no answer within the deadline -- kills it; the text is
then reported unparseable (the policy decides; the default is review), the
failure is logged, and the next text starts a new child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import msgpack

from protocols.postgres._analysis import Analysis, analyse

log = logging.getLogger("hoopd.postgres")

_LEN = struct.Struct(">I")
BASE_DEADLINE = 30.0
"""Seconds any analysis may take, plus ``DEADLINE_PER_MB`` per MB of text
(parsing runs at about 1 MB/s on one core; these leave room for a busy
machine)."""
DEADLINE_PER_MB = 10.0
_MAX_ANSWER = 16 * 1024 * 1024


class ParseWorker:
    """One child process, started on first use, serving one request at a time."""

    def __init__(self, on_failure: Callable[[str], None] | None = None) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._on_failure = on_failure
        """Told ``timeout`` or ``worker_failed`` when a text goes unanalysed."""

    async def analyse(self, sql: str) -> Analysis:
        """``analyse(sql)``, computed in the child. Never raises (except
        CancelledError): a failed child yields an unparseable analysis."""
        data = sql.encode("utf-8", "surrogatepass")
        deadline = BASE_DEADLINE + DEADLINE_PER_MB * len(data) / 1e6
        async with self._lock:
            try:
                async with asyncio.timeout(deadline):
                    return await self._ask(data)
            except asyncio.CancelledError:
                self._kill()  # its answer would be read as the next text's
                raise
            except TimeoutError:
                why, reason = f"parsing took longer than {deadline:.0f} s", "timeout"
            except (OSError, EOFError, ValueError, asyncio.IncompleteReadError) as exc:
                why = f"the parse worker failed ({type(exc).__name__}: {exc})"
                reason = "worker_failed"
            log.warning("SQL not analysed: %s; it counts as unparseable", why)
            self._kill()
            if self._on_failure is not None:
                self._on_failure(reason)
            return Analysis(why, transient=True)

    async def _ask(self, data: bytes) -> Analysis:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await _spawn()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(_LEN.pack(len(data)) + data)
        await proc.stdin.drain()
        (size,) = _LEN.unpack(await proc.stdout.readexactly(_LEN.size))
        if size > _MAX_ANSWER:
            raise ValueError(f"an answer of {size} bytes")
        raw = msgpack.unpackb(await proc.stdout.readexactly(size), use_list=True)
        return Analysis.from_wire(raw)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    @property
    def pid(self) -> int | None:
        """The child's process id, if one is running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    async def close(self) -> None:
        """Stop the child (a later ``analyse`` starts a new one)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the child exits at end of input
        try:
            await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _spawn() -> asyncio.subprocess.Process:
    # The package may be importable only through this process's sys.path
    # (a source checkout, PYTHONPATH): hand the child the same path.
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, sys.path)])}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "protocols.postgres._parse_worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=_MAX_ANSWER + _LEN.size,
    )


def serve(rfile: BinaryIO, wfile: BinaryIO) -> int:
    """The child's loop: answer requests until end of input."""
    while True:
        head = rfile.read(_LEN.size)
        if len(head) < _LEN.size:
            return 0
        (size,) = _LEN.unpack(head)
        body = rfile.read(size)
        if len(body) < size:
            return 0
        answer = msgpack.packb(analyse(body.decode("utf-8", "surrogatepass")).to_wire())
        wfile.write(_LEN.pack(len(answer)) + answer)
        wfile.flush()


if __name__ == "__main__":
    raise SystemExit(serve(sys.stdin.buffer, sys.stdout.buffer))
