"""The postgres relay in-process: a real gateway (recorder, scorer,
masking) and client handshake, the upstream login replaced by a fake one,
in-memory transports. Used by tests/postgres/test_relay_paths.py and by
bench/postgres, which load this package from their own checkout while
importing hoopd from the tree they measure (so hoopd is imported late, and
only what older trees also have is used)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from .chunks import split
from .transports import MemoryTransport


async def fake_connect(upstream: Any, startup: dict[str, str]) -> tuple[Any, Any]:
    """Stands in for ``protocols.postgres._client.connect``: an upstream
    protocol on a MemoryTransport, logged in."""
    from protocols.postgres._upstream import LoginResult, UpstreamProtocol

    up = UpstreamProtocol()
    up.connection_made(MemoryTransport())
    return up, LoginResult(parameters=[("server_version", "15.8")], backend_pid=1, backend_key=2)


INPROC_TABLES = {16397: ("pgbench_accounts", {1: "aid", 2: "bid", 3: "abalance", 4: "filler"})}
"""The table the in-process RowDescriptions name (table OID 16397)."""


def prime_catalog(conn: Any) -> None:
    """Give the connection's catalog (``protocols.postgres._catalog``, when
    its handler asks one: column rules) the tables of INPROC_TABLES for good,
    as a lookup would have: no result waits for a lookup connection, which
    the fake upstream does not have. Trees without a catalog: nothing."""
    db = getattr(conn, "_db", None)
    if db is None:
        return
    from protocols.postgres._catalog import Table

    for oid, (name, columns) in INPROC_TABLES.items():
        db.tables[oid] = Table(name, dict(columns), float("inf"))


def spy_events(recording: Any) -> list[Any]:
    """Every event the recording is given from now on, in order (and still recorded)."""
    events: list[Any] = []
    write = recording.write

    def spy(event: Any) -> None:
        events.append(event)
        write(event)

    recording.write = spy
    return events


async def open_client(handler: Any, keep_handshake: bool = False) -> tuple[Any, MemoryTransport, list[Any]]:
    """A client connection through the startup handshake of an ``auth: none``
    connection whose ``connect`` is fake_connect: (connection, its transport
    with the handshake's bytes cleared unless ``keep_handshake``, the events
    recorded from then on)."""
    from protocols.postgres import _client
    from protocols.postgres import _wire as w

    conn = _client.ClientConnection(handler)
    sink = MemoryTransport()
    conn.connection_made(sink)
    conn.data_received(w.startup_message({"user": "x", "database": "postgres"}))
    for _ in range(200):
        if conn._relay:
            break
        await asyncio.sleep(0.005)
    assert conn._relay and conn.session is not None and conn.up is not None
    prime_catalog(conn)
    events = spy_events(conn.session.recording)
    if not keep_handshake:
        sink.data.clear()
    return conn, sink, events


def play(
    conn: Any,
    groups: Sequence[Sequence[Sequence[Any]]],
    answer: Callable[[Any], bytes],
    cuts: list[int],
    joined: bool,
    close: bool = True,
) -> None:
    """Send each group of simple queries (one ``SELECT i`` per statement;
    ``joined``: a group's queries in one write), then the upstream's answers
    to them split at ``cuts``; then (``close``) the client goes away."""
    from protocols.postgres import _wire as w

    for qs in groups:
        sent = [w.query("; ".join(f"SELECT {i}" for i in range(len(stmts)))) for stmts in qs]
        for data in [b"".join(sent)] if joined else sent:
            conn.data_received(data)
        for chunk in split(b"".join(answer(stmts) for stmts in qs), cuts):
            if chunk:
                conn.up.data_received(chunk)
    if close:
        conn.connection_lost(None)


async def fake_catalog_connect(upstream: Any, startup: dict[str, str]) -> tuple[Any, Any]:
    """Stands in for ``protocols.postgres._catalog.connect``: a lookup
    connection that answers each catalog query a loop turn later, naming
    the tables of INPROC_TABLES (any other OID: not in the catalog)."""
    import re

    from protocols.postgres import _wire as w
    from protocols.postgres._upstream import LoginResult, UpstreamProtocol

    up = UpstreamProtocol()

    def answer(data: bytes) -> None:
        m = re.search(rb"IN \(([0-9,]+)\)", data)
        rows = []
        for oid in (m.group(1).split(b",") if m else []):
            name, columns = INPROC_TABLES.get(int(oid), ("", {}))
            for num, col in columns.items():
                rows.append(w.data_row([oid, name.encode(), str(num).encode(), col.encode()]))
        reply = b"".join(rows) + w.command_complete(f"SELECT {len(rows)}") + w.ready_for_query(b"I")
        asyncio.get_running_loop().call_soon(up.data_received, reply)

    up.connection_made(MemoryTransport(answer))
    return up, LoginResult()


def event_records(events: list[Any]) -> list[list[Any]]:
    """[type name, record] per event, comparable across runs: durations
    zeroed, data as hex."""
    out = []
    for ev in events:
        rec = ev.to_record()
        if "duration_ms" in rec:
            rec["duration_ms"] = 0.0
        if isinstance(rec.get("data"), bytes):
            rec["data"] = rec["data"].hex()
        out.append([ev.type_name, rec])
    return out
