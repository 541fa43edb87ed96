"""Where result columns come from: table OID and column number -> names.

A RowDescription names each column as the query labelled it (``ssn AS x``,
SQLAlchemy's ``people_ssn``) but also carries, for a column that is a plain
reference to a table column (through aliases, subqueries and CTEs), the
table's OID and the column's number. Column rules (``fields: [ssn]``,
``people.ssn``) must hold whatever the label: the gateway looks those
numbers up in the database's catalog and masks by the column's own name and
table as well.

The lookups run on a connection of the gateway's own per database (the
connection's stored credentials, ``application_name`` ``hoopd-catalog``),
opened on first need and closed when idle; the session whose result needs
names waits for them (its server stream is paused at that RowDescription).
Answers are kept for ``TTL`` seconds; a table the catalog does not know
(created in a transaction not yet committed, or dropped meanwhile) for
``MISSING_TTL``. ``forget`` drops a database's answers: sessions call it
after statements that can rename columns (ALTER ..., DO, CALL).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import _messages as m
from . import _wire as w
from ._upstream import UpstreamError, UpstreamProtocol, connect

log = logging.getLogger("hoopd.postgres.catalog")

TTL = 60.0
"""Seconds a table's column names are trusted (DDL run elsewhere, not seen
by the gateway, is picked up after at most this long)."""
MISSING_TTL = 2.0
IDLE_CLOSE = 60.0
"""The lookup connection of a database is closed after this long unused."""
MAX_TABLES = 20_000
"""Tables remembered per database (oldest forgotten first)."""
MAX_DATABASES = 64
BATCH = 200
"""OIDs asked in one lookup query."""

Origin = tuple[str, str]
"""(table name, column name) of a result column."""


class CatalogError(Exception):
    """The column names could not be learned (lookup connection or query failed)."""


@dataclass(slots=True)
class Table:
    name: str
    columns: dict[int, str]
    expires: float


@dataclass
class Database:
    """What the gateway knows of one database's tables, and the
    RowDescriptions planned with it (shared by the sessions on it)."""

    name: str
    tables: OrderedDict[int, Table] = field(default_factory=OrderedDict)
    row_descriptions: dict[bytes, tuple[Any, Any, float]] = field(default_factory=dict)
    """RowDescription bytes -> (columns, masking plan, valid until)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    conn: UpstreamProtocol | None = None
    idle: asyncio.TimerHandle | None = None

    def origin(self, table_oid: int, column: int) -> Origin | None:
        """The names of a table column, as last learned (even if expired)."""
        table = self.tables.get(table_oid)
        if table is None or not table.name:
            return None
        name = table.columns.get(column)
        return None if name is None else (table.name, name)

    def missing(self, oids: Iterable[int], now: float) -> list[int]:
        """The OIDs among ``oids`` not learned or no longer trusted."""
        tables = self.tables
        out: list[int] = []
        for oid in oids:
            table = tables.get(oid)
            if (table is None or table.expires <= now) and oid not in out:
                out.append(oid)
        return out

    def valid_until(self, oids: Iterable[int]) -> float:
        """Until when names learned for all of ``oids`` are trusted."""
        until = float("inf")
        for oid in oids:
            table = self.tables.get(oid)
            until = min(until, table.expires if table is not None else 0.0)
        return until

    def forget(self) -> None:
        self.tables.clear()
        self.row_descriptions.clear()


class Catalog:
    """Column names by table OID for every database of one connection."""

    def __init__(self, upstream: Any, count: Callable[[str], None] = lambda result: None) -> None:
        self.upstream = upstream
        self._count = count
        """Called with "ok" or "failed" per lookup (a metric)."""
        self._dbs: OrderedDict[str, Database] = OrderedDict()

    def database(self, name: str) -> Database:
        db = self._dbs.get(name)
        if db is None:
            db = self._dbs[name] = Database(name)
            while len(self._dbs) > MAX_DATABASES:
                # (a session may still use it: its lookup connection closes when idle)
                self._dbs.popitem(last=False)
        else:
            self._dbs.move_to_end(name)
        return db

    async def learn(self, db: Database, oids: list[int]) -> None:
        """Look up ``oids`` (raises CatalogError). Tables the catalog does
        not have are remembered as unknown for MISSING_TTL."""
        timeout = float(self.upstream.connect_timeout)
        async with db.lock:
            oids = db.missing(oids, time.monotonic())  # another session may have learned them
            if not oids:
                return
            try:
                await asyncio.wait_for(self._learn(db, oids), timeout)
            except (TimeoutError, OSError, UpstreamError, ValueError) as exc:
                # (ValueError: an answer that is not what the query returns)
                _close(db)
                self._count("failed")
                detail = str(exc) or type(exc).__name__
                raise CatalogError(detail) from None
            finally:
                _idle_later(db)
            self._count("ok")

    async def _learn(self, db: Database, oids: list[int]) -> None:
        for i in range(0, len(oids), BATCH):
            part = oids[i : i + BATCH]
            rows = await self._query(db, _lookup_sql(part))
            now = time.monotonic()
            found: dict[int, Table] = {}
            for oid_b, rel_b, num_b, att_b in rows:
                if oid_b is None or rel_b is None:
                    continue
                oid = int(oid_b)
                table = found.get(oid)
                if table is None:
                    table = found[oid] = Table(rel_b.decode("utf-8", "replace"), {}, now + TTL)
                if num_b is not None and att_b is not None:
                    table.columns[int(num_b)] = att_b.decode("utf-8", "replace")
            for oid in part:
                table = found.get(oid) or Table("", {}, now + MISSING_TTL)
                db.tables[oid] = table
                db.tables.move_to_end(oid)
            while len(db.tables) > MAX_TABLES:
                db.tables.popitem(last=False)
            # plans made with the old names must be made again
            db.row_descriptions.clear()

    async def _query(self, db: Database, sql: str) -> list[list[bytes | None]]:
        conn = db.conn
        if conn is None or conn.closed or conn.transport is None or conn.transport.is_closing():
            startup = {
                "user": self.upstream.user,
                "database": db.name,
                "application_name": "hoopd-catalog",
            }
            conn, _ = await connect(self.upstream, startup)
            db.conn = conn
        assert conn.transport is not None
        conn.transport.write(w.query(sql))
        rows: list[list[bytes | None]] = []
        error = ""
        while True:
            t, msg = await conn.read_message()
            if t == w.DATA_ROW:
                rows.append(m.data_row_values(msg, 0, len(msg)))
            elif t == w.ERROR:
                fields = m.error_fields(msg, 0, len(msg))
                error = f"{fields.get('C', '')}: {fields.get('M', '')}"
            elif t == w.READY:
                break
        if error:
            raise UpstreamError(f"the catalog lookup failed ({error})")
        return rows

    def close(self) -> None:
        for db in self._dbs.values():
            _close(db)


def _lookup_sql(oids: list[int]) -> str:
    # OIDs are ints from the server's own RowDescription: safe as literals
    wanted = ",".join(str(int(o)) for o in oids)
    return (
        "SELECT c.oid, c.relname, a.attnum, a.attname FROM pg_catalog.pg_class c "
        "LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
        f"AND NOT a.attisdropped WHERE c.oid IN ({wanted})"
    )


def _idle_later(db: Database) -> None:
    if db.idle is not None:
        db.idle.cancel()
    if db.conn is not None:
        db.idle = asyncio.get_running_loop().call_later(IDLE_CLOSE, _close, db)


def _close(db: Database) -> None:
    if db.idle is not None:
        db.idle.cancel()
        db.idle = None
    conn, db.conn = db.conn, None
    if conn is not None and conn.transport is not None and not conn.transport.is_closing():
        conn.transport.write(w.terminate())
        conn.transport.close()
