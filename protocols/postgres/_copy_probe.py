"""The probe that learns the columns of a ``COPY ... TO STDOUT``, sans-IO.

Sent to the server before the client's Query (which waits, like a held
statement, with later client bytes stashed in order), as one extended
batch of its own::

    describe: Parse(S, sql) Describe(S) Close(S) Sync
    catalog:  Parse(S, CATALOG_SQL) Bind(S, S, [relation]) Execute(S)
              Close(portal S) Close(S) Sync

``S`` is a gateway-named statement (and portal), so the client's unnamed
statement and portal -- and any of its named ones -- are left alone (each
probe starts with a Close of its own names: one after an error in an earlier
probe was skipped by the server); Parse
and Describe never run the query. Inside a transaction block Sync does not
commit; in an aborted one the server answers 25P02 and the client's COPY
fails the same way on its own. Every answer up to the probe's ReadyForQuery
is swallowed by the relay (``Probe.message``): the client never sees them.
"""

from __future__ import annotations

import asyncio
import struct

from . import _messages as m
from . import _wire as w
from ._copy_stmt import CATALOG_SQL, PROBE_CATALOG, CopyTarget
from ._messages import Column

PROBE_NAME = "_hoopd_copy_probe"
ASYNC_TYPES = frozenset({w.NOTICE, w.NOTIFICATION, w.PARAMETER_STATUS})
"""Backend messages that may arrive at any time: passed to the client."""


def _close(kind: bytes, name: str) -> bytes:
    return w.message(w.C, kind + w.cstr(name))


def _describe(name: str) -> bytes:
    return w.message(w.D, b"S" + w.cstr(name))


def _bind_text(portal: str, stmt: str, param: str) -> bytes:
    value = param.encode()
    body = (
        w.cstr(portal)
        + w.cstr(stmt)
        + b"\0\0"
        + struct.pack("!hi", 1, len(value))
        + value
        + b"\0\0"
    )
    return w.message(w.B, body)


class Probe:
    """One probe: its bytes, and its answers as they arrive."""

    __slots__ = ("columns", "done", "error", "future", "target")

    def __init__(self, target: CopyTarget) -> None:
        self.target = target
        self.columns: list[Column] | None = None
        self.error: dict[str, str] | None = None
        self.done = False
        self.future: asyncio.Future[None] | None = None

    def request(self) -> bytes:
        t = self.target
        # A failed Bind (no such relation) skips the rest of a batch, the
        # closing Close too: each probe first closes what an earlier one may
        # have left (closing an unknown name is not an error).
        head = _close(b"P", PROBE_NAME) + _close(b"S", PROBE_NAME)
        if t.probe == PROBE_CATALOG:
            self.columns = []
            return head + b"".join(
                (
                    w.message(w.P, w.cstr(PROBE_NAME) + w.cstr(CATALOG_SQL) + b"\0\0"),
                    _bind_text(PROBE_NAME, PROBE_NAME, t.sql),
                    w.execute(PROBE_NAME),
                    _close(b"P", PROBE_NAME),
                    _close(b"S", PROBE_NAME),
                    w.sync(),
                )
            )
        return head + b"".join(
            (w.parse(PROBE_NAME, t.sql), _describe(PROBE_NAME), _close(b"S", PROBE_NAME), w.sync())
        )

    def message(self, t: int, buf: bytes, s: int, e: int) -> bytes | None:
        """Take one backend message of the probe's answer. Returns the
        ReadyForQuery status when it ends the probe, else None."""
        if t == w.ROW_DESCRIPTION:
            self.columns = m.row_description(buf, s, e)
        elif t == w.DATA_ROW:
            values = m.data_row_values(buf, s, e)
            if self.columns is not None and len(values) == 2 and None not in values:
                name, oid = values
                assert name is not None and oid is not None
                self.columns.append(
                    Column(
                        name.decode("utf-8", "replace"),
                        0,
                        len(self.columns) + 1,
                        int(oid),
                        -1,
                        -1,
                        0,
                    )
                )
        elif t == w.ERROR:
            self.error = m.error_fields(buf, s, e)
            self.columns = None
        elif t == w.READY:
            self.done = True
            if self.future is not None and not self.future.done():
                self.future.set_result(None)
            return m.ready_status(buf, s, e)
        return None

    def cancel(self) -> None:
        """The waiter is gone (the connection closed): answers are still
        swallowed when they come."""
        if self.future is not None and not self.future.done():
            self.future.cancel()


__all__ = ["ASYNC_TYPES", "PROBE_NAME", "Probe"]
