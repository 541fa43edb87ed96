"""The expensive, pure part of scoring one SQL text: fingerprint, parse,
classify.

``analyse(sql)`` depends on the text only (no connection, no cache, no
session), so it can run in the parse worker (``_parse_worker``) and its
result can be handed back to the scorer on the event loop. Parsing costs
about 1 µs per byte of SQL (libpg_query, then decoding the JSON tree and
walking it): a 1 MB multi-row INSERT is ~1 s of CPU that must not be spent
on the loop every session shares.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import parser as pg

from protocols.postgres._risk_classify import Classification, classify, lexer_trap, parse

TRACKED_KINDS = frozenset({"PrepareStmt", "ExecuteStmt", "DeallocateStmt"})
"""Statements that read or change the session's prepared statements."""


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the scorer needs from a parse. ``error`` is why the text is
    unparseable ("" if it parsed); ``tracked`` is whether a top-level
    statement is a PREPARE, EXECUTE or DEALLOCATE."""

    error: str
    fingerprint: str = ""
    found: Classification | None = None
    tracked: bool = False
    transient: bool = False
    """Not about the text: the parse worker failed. Used once, not kept."""

    def to_wire(self) -> list[object]:
        found = self.found
        if found is None:
            return [self.error, self.fingerprint, None, self.tracked]
        classified = [
            sorted(found.categories),
            found.score,
            list(found.reasons),
            found.fingerprint_stable,
        ]
        return [self.error, self.fingerprint, classified, self.tracked]

    @classmethod
    def from_wire(cls, raw: object) -> Analysis:
        """The inverse of ``to_wire``; ValueError if ``raw`` is not one."""
        if not isinstance(raw, list) or len(raw) != 4:
            raise ValueError("not an analysis")
        error, fingerprint, classified, tracked = raw
        found = None
        if classified is not None:
            if not isinstance(classified, list) or len(classified) != 4:
                raise ValueError("not a classification")
            categories, score, reasons, stable = classified
            found = Classification(
                frozenset(map(str, categories)), int(score), tuple(map(str, reasons)), bool(stable)
            )
        return cls(str(error), str(fingerprint), found, bool(tracked))


def analyse(sql: str) -> Analysis:
    """Fingerprint, parse and classify ``sql``, exactly as the scorer would
    on the event loop. Never raises."""
    if "\x00" in sql:
        return Analysis("NUL byte in query text")
    trap = lexer_trap(sql)
    if trap is not None:
        return Analysis(trap)
    try:
        fingerprint = pg.fingerprint(sql)
    except Exception as exc:
        return Analysis(parse_error(exc))
    try:
        statements = parse(sql)
    except Exception as exc:
        return Analysis(parse_error(exc), fingerprint)
    try:
        found = classify(statements)
    except Exception as exc:  # a classifier bug must not wave a query through
        return Analysis(f"risk scorer error: {type(exc).__name__}", fingerprint)
    tracked = any(s.kind in TRACKED_KINDS for s in statements)
    return Analysis("", fingerprint, found, tracked)


def parse_error(exc: Exception) -> str:
    if isinstance(exc, pg.ParseError):
        message = str(exc.args[0]) if exc.args else "syntax error"
        where = exc.args[1] if len(exc.args) > 1 else None
        at = f" at character {where}" if isinstance(where, int) and where > 0 else ""
        return f"unparseable SQL: {message}{at}"[:200]
    return f"unparseable SQL ({type(exc).__name__})"
