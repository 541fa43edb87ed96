"""What a ``COPY ... TO STDOUT`` statement returns, read with pglast.

CopyOutResponse names no columns, so column masking of COPY data needs the
columns learned another way: a *probe* sent to the server before the COPY
(``_copy_probe``). This module reads the statement to say what to probe --

- ``COPY tbl TO``: the table's columns as COPY writes them (not dropped,
  not generated -- PostgreSQL 15 leaves generated columns out of a COPY
  without a column list, where ``SELECT *`` would list them), read from
  ``pg_attribute`` for the relation name resolved exactly as COPY resolves
  it (``regclass``: search_path, quoting);
- ``COPY tbl (a, b) TO``: ``SELECT a, b FROM tbl``, described;
- ``COPY (query) TO``: the query, described (Describe never runs it);

-- and the format options that shape the rows (``_copy_format``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._copy_format import CopyFormat

PROBE_DESCRIBE, PROBE_CATALOG = range(2)

CATALOG_SQL = (
    "SELECT a.attname, CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END"
    " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
    " WHERE a.attrelid = $1::pg_catalog.regclass AND a.attnum > 0"
    " AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum"
)
"""The columns ``COPY tbl TO`` writes, in order, with domain types as their
base type (as RowDescription reports them)."""


class CopyUnsupported(Exception):
    """The COPY cannot be masked by column (the message says why)."""


@dataclass(frozen=True, slots=True)
class CopyTarget:
    probe: int
    """PROBE_DESCRIBE: describe ``sql``; PROBE_CATALOG: run CATALOG_SQL with
    ``sql`` (the relation name) as its parameter."""
    sql: str
    binary: bool
    fmt: CopyFormat
    encoding: str = ""
    """The ENCODING option ('' when absent: the client encoding)."""


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _opt_value(arg: Any) -> Any:
    """A DefElem argument as a Python value (None: given without a value)."""
    if arg is None:
        return None
    for attr in ("sval", "boolval", "ival", "fval"):
        if hasattr(arg, attr):
            return getattr(arg, attr)
    return type(arg).__name__


def _truthy(value: Any) -> bool:
    if value is None or value is True:
        return True
    if isinstance(value, str):
        return value.lower() in ("true", "on", "1", "match", "yes")
    return bool(value)


def copy_target(sql: str) -> CopyTarget:
    """Read one COPY ... TO STDOUT statement. Raises CopyUnsupported when it
    cannot be read (the caller refuses the COPY: fail closed)."""
    from pglast import parse_sql
    from pglast.stream import RawStream

    try:
        stmts = parse_sql(sql)
    except Exception as exc:
        raise CopyUnsupported(f"the statement could not be parsed ({str(exc)[:80]})") from None
    if len(stmts) != 1 or type(stmts[0].stmt).__name__ != "CopyStmt":
        raise CopyUnsupported("not a single COPY statement")
    node: Any = stmts[0].stmt
    if node.is_from or node.filename is not None or node.is_program:
        raise CopyUnsupported("not a COPY ... TO STDOUT")
    opts: dict[str, Any] = {}
    for opt in node.options or ():
        opts[str(opt.defname).lower()] = _opt_value(opt.arg)
    fmt_name = str(opts.get("format") or "text").lower()
    binary = fmt_name == "binary"
    header = "header" in opts and _truthy(opts["header"])
    try:
        if fmt_name == "csv":
            fmt = CopyFormat.make_csv(
                delimiter=_one_byte(opts.get("delimiter", ","), "DELIMITER"),
                null=str(opts.get("null", "")).encode(),
                quote=_one_byte(opts.get("quote", '"'), "QUOTE"),
                escape=_one_byte(opts["escape"], "ESCAPE") if "escape" in opts else None,
                header=header,
            )
        else:
            fmt = CopyFormat.text(
                delimiter=_one_byte(opts.get("delimiter", "\t"), "DELIMITER"),
                null=str(opts.get("null", "\\N")).encode(),
                header=header,
            )
    except (TypeError, ValueError) as exc:
        raise CopyUnsupported(str(exc)) from None
    encoding = str(opts.get("encoding") or "")
    if node.query is not None:
        return CopyTarget(PROBE_DESCRIBE, RawStream()(node.query), binary, fmt, encoding)
    relation = RawStream()(node.relation)
    if node.attlist:
        cols = ", ".join(_quote_ident(a.sval) for a in node.attlist)
        return CopyTarget(PROBE_DESCRIBE, f"SELECT {cols} FROM {relation}", binary, fmt, encoding)
    return CopyTarget(PROBE_CATALOG, relation, binary, fmt, encoding)


def _one_byte(value: Any, what: str) -> bytes:
    data = str(value).encode()
    if len(data) != 1:
        raise ValueError(f"COPY {what} must be a single one-byte character")
    return data


__all__ = [
    "CATALOG_SQL",
    "PROBE_CATALOG",
    "PROBE_DESCRIBE",
    "CopyTarget",
    "CopyUnsupported",
    "copy_target",
]
