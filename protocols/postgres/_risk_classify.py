"""Classify parsed SQL: walk pglast's JSON parse tree and collect risk
categories with short human reasons.

The walk visits every node, so a DELETE inside a CTE, a dangerous function in
a subquery, or a statement inside a rule body is found wherever it sits. It
also records whether the result depends on anything the pglast fingerprint
ignores (literals, schema and role names, function bodies); such results may
only be cached by exact text, never by fingerprint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pglast import parser as pg

from protocols.postgres._lexer_trap import lexer_trap
from protocols.postgres._risk_catalog import (
    CATEGORY_SCORES,
    DROP_CATEGORIES,
    TRUSTED_LANGUAGES,
    function_risk,
    is_sensitive_setting,
    runs_dynamic_sql,
)

MAX_REASONS = 24
"""Reasons kept per assessment; a huge script keeps its first ones."""
MAX_DEPTH = 3
"""How deep function bodies and dynamic SQL constants are parsed."""

Node = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Classification:
    categories: frozenset[str]
    score: int
    reasons: tuple[str, ...]
    fingerprint_stable: bool
    """True when an equal fingerprint always yields this same result."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One top-level statement: its node type, JSON node and source text."""

    kind: str
    node: Node
    text: str


def parse(sql: str) -> list[Statement]:
    """Parse into statements. Raises ``ValueError`` (or pglast's
    ``ParseError``, a subclass of Exception) on anything unparseable."""
    if "\x00" in sql:
        # libpg_query reads a C string: everything after a NUL would be unseen.
        raise ValueError("NUL byte in query text")
    trap = lexer_trap(sql)
    if trap is not None:
        raise ValueError(trap)
    tree = json.loads(pg.parse_sql_json(sql))
    raw = sql.encode("utf-8")
    out = []
    for raw_stmt in tree.get("stmts", ()):
        start = raw_stmt.get("stmt_location", 0)
        length = raw_stmt.get("stmt_len", 0)
        chunk = raw[start : start + length] if length else raw[start:]
        ((kind, node),) = raw_stmt["stmt"].items()
        out.append(Statement(kind, node, chunk.decode("utf-8", "replace").strip()))
    return out


def score_of(categories: frozenset[str] | set[str]) -> int:
    return max((CATEGORY_SCORES.get(c, 50) for c in categories), default=0)


def _sval(node: Any) -> str | None:
    if isinstance(node, dict):
        inner = node.get("String")
        if isinstance(inner, dict):
            value = inner.get("sval")
            return value if isinstance(value, str) else None
    return None


def _const_str(node: Any) -> str | None:
    if isinstance(node, dict):
        const = node.get("A_Const")
        if isinstance(const, dict):
            sval = const.get("sval")
            if isinstance(sval, dict):
                value = sval.get("sval")
                return value if isinstance(value, str) else None
    return None


def _is_constant(node: Any) -> bool:
    """A WHERE that cannot depend on the row: a literal, or a comparison of
    two literals (``1=1``). Deliberately value-blind, so equal fingerprints
    agree: ``WHERE false`` counts too."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    ((kind, body),) = node.items()
    if kind == "A_Const":
        return True
    if kind == "TypeCast":
        return _is_constant(body.get("arg"))
    if kind == "A_Expr":
        # 1=1, 1 IN (1, 2), 1 BETWEEN 0 AND 2, 1 IS DISTINCT FROM 2 ...
        return _is_constant_or_absent(body.get("lexpr")) and _is_constant_or_absent(body.get("rexpr"))
    if kind == "BoolExpr":
        args = body.get("args") or []
        if body.get("boolop") == "OR_EXPR":
            # value-blind: one constant operand may make it true for every row
            return any(_is_constant(a) for a in args)
        return bool(args) and all(_is_constant(a) for a in args)  # AND, NOT
    if kind in ("NullTest", "BooleanTest"):
        return _is_constant(body.get("arg"))
    if kind == "List":
        items = body.get("items") or []
        return bool(items) and all(_is_constant(i) for i in items)
    return False


def _is_constant_or_absent(node: Any) -> bool:
    """An operand of an A_Expr: constant, or missing (prefix operators)."""
    return node is None or _is_constant(node)


class _Walk:
    __slots__ = ("categories", "depth", "reasons", "stable")

    def __init__(self, depth: int = 0) -> None:
        self.categories: set[str] = set()
        self.reasons: list[str] = []
        self.stable = True
        self.depth = depth

    def add(self, category: str, reason: str | None = None) -> None:
        self.categories.add(category)
        if reason:
            self.note(reason)

    # names -------------------------------------------------------------

    def rel(self, node: Any) -> str:
        """RangeVar -> 'schema.table'. The fingerprint sometimes ignores the
        schema, so naming it makes the result text-specific."""
        if not isinstance(node, dict):
            return "?"
        node = node.get("RangeVar", node)
        name = str(node.get("relname", "?"))
        schema = node.get("schemaname")
        if schema:
            self.stable = False
            return f"{schema}.{name}"
        return name

    def dotted(self, node: Any) -> str:
        """A List/String/ObjectWithArgs/TypeName name as 'a.b'."""
        parts: list[str] = []
        stack = [node]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                value = _sval(item)
                if value is not None:
                    parts.append(value)
                    continue
                stack.extend(reversed(list(item.values())))
            elif isinstance(item, list):
                stack.extend(reversed(item))
        if len(parts) > 1:
            self.stable = False
        return ".".join(parts) or "?"

    def role(self, node: Any) -> str:
        self.stable = False
        if isinstance(node, dict):
            node = node.get("RoleSpec", node)
            name = node.get("rolename")
            if name:
                return str(name)
            kind = str(node.get("roletype", ""))
            return kind.removeprefix("ROLESPEC_").lower() or "?"
        return "?"

    # walking -----------------------------------------------------------

    def statement(self, stmt: Statement) -> None:
        before = set(self.categories)
        self.categories = set()
        self.node(stmt.kind, stmt.node, stmt.text, top=True)
        if not self.categories:
            self.add("other", f"unrecognised statement {stmt.kind}")
        elif "read" in self.categories and len(self.categories) > 1:
            # "read" means "only reads": a SELECT wrapping a DELETE is a write.
            self.categories.discard("read")
            if "read-only query" in self.reasons:
                self.reasons.remove("read-only query")
        self.categories |= before

    def note(self, reason: str) -> None:
        if reason not in self.reasons and len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def node(self, kind: str, body: Node, text: str, *, top: bool = False) -> None:
        """Dispatch on every typed node (``{"DeleteStmt": {...}}``) anywhere
        below, iteratively so that deep trees cannot overflow the stack."""
        typed: list[tuple[str, Any, bool]] = [(kind, body, top)]
        handlers = _HANDLERS
        while typed:
            kind, body, top = typed.pop()
            handler = handlers.get(kind)
            if handler is not None:
                if handler(self, body, text, top) is False:
                    continue
            elif top:
                _generic_statement(self, kind, body)
            if type(body) is not dict:
                continue
            containers: list[Any] = [body]
            while containers:
                container = containers.pop()
                for value in container.values() if type(container) is dict else container:
                    vtype = type(value)
                    if vtype is dict:
                        if len(value) == 1:
                            for key, inner in value.items():
                                if type(inner) is dict and key[:1].isupper():
                                    typed.append((key, inner, False))
                                else:
                                    containers.append(value)
                        else:
                            containers.append(value)
                    elif vtype is list:
                        containers.append(value)

    # nested SQL (function bodies, DO blocks, dynamic SQL constants) -----

    def nested(self, sql: str, prefix: str) -> None:
        if self.depth >= MAX_DEPTH:
            return
        try:
            statements = parse(sql)
        except Exception:
            return
        inner = _Walk(self.depth + 1)
        for stmt in statements:
            inner.statement(stmt)
        for reason in inner.reasons:
            if reason != "read-only query":
                self.note(f"{prefix}: {reason}")
        self.categories |= inner.categories - {"read", "multi_statement", "empty", "other"}

    def plpgsql(self, text: str, body: str | None, prefix: str) -> None:
        """Look inside a PL/pgSQL body (DO block or CREATE FUNCTION).
        ``text`` is the statement, ``body`` the code it holds, which the
        PL/pgSQL parser lexes again: a run quoted in ``text`` is code there."""
        if self.depth >= MAX_DEPTH:
            return
        try:
            trap = lexer_trap(text) or (lexer_trap(body) if body is not None else "no body")
            if trap is not None:
                raise ValueError(trap)
            tree = json.loads(pg.parse_plpgsql_json(text))
        except Exception:
            self.add("dynamic_sql", f"{prefix}: body could not be analysed")
            return
        stack: list[Any] = [tree]
        while stack:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(item)
                continue
            if not isinstance(item, dict):
                continue
            for key, value in item.items():
                if key in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors") or (
                    key == "PLpgSQL_stmt_open" and isinstance(value, dict) and "dynquery" in value
                ):
                    query = _plpgsql_query(value.get("query") or value.get("dynquery"))
                    self.add("dynamic_sql", f"{prefix}: EXECUTE of dynamic SQL")
                    if query is not None:
                        literal = _single_literal(query)
                        if literal is not None:
                            self.nested(literal, f"{prefix}: EXECUTE")
                        else:
                            self.nested(f"SELECT {query}", f"{prefix}: EXECUTE")
                elif key == "PLpgSQL_expr" and isinstance(value, dict):
                    query = value.get("query")
                    if isinstance(query, str):
                        mode = value.get("parseMode", 0)
                        self.nested(query if mode == 0 else f"SELECT {query}", prefix)
                elif isinstance(value, dict | list):
                    stack.append(value)


def _plpgsql_query(node: Any) -> str | None:
    if isinstance(node, dict):
        expr = node.get("PLpgSQL_expr", node)
        query = expr.get("query") if isinstance(expr, dict) else None
        return query if isinstance(query, str) else None
    return None


def _single_literal(expr: str) -> str | None:
    """The string value if ``expr`` is one SQL string literal."""
    try:
        if lexer_trap(expr) is not None:
            return None
        stmts = json.loads(pg.parse_sql_json(f"SELECT {expr}")).get("stmts", [])
        target = stmts[0]["stmt"]["SelectStmt"]["targetList"]
        if len(target) == 1:
            return _const_str(target[0]["ResTarget"]["val"])
    except Exception:
        return None
    return None


# handlers ---------------------------------------------------------------
# Each takes (walk, node body, statement text, is top-level) and returns False
# to stop the walk from descending into the node.

Handler = Callable[[_Walk, Node, str, bool], "bool | None"]


def _select(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    into = b.get("intoClause")
    if into:
        w.add("ddl", f"SELECT INTO creates table {w.rel(into.get('rel'))}")
        w.add("write")
    elif top:
        w.add("read", "read-only query")
    return None


def _insert(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("write", f"INSERT into {w.rel(b.get('relation'))}")
    return None


def _update(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    rel = w.rel(b.get("relation"))
    where = b.get("whereClause")
    w.add("write", f"UPDATE on {rel}")
    if where is None:
        w.add("update_without_where", f"UPDATE without WHERE on {rel}")
    elif _is_constant(where):
        w.add("update_without_where", f"UPDATE with a constant WHERE on {rel}")
    return None


def _delete(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    rel = w.rel(b.get("relation"))
    where = b.get("whereClause")
    w.add("write", f"DELETE from {rel}")
    if where is None:
        w.add("delete_without_where", f"DELETE without WHERE on {rel}")
    elif _is_constant(where):
        w.add("delete_without_where", f"DELETE with a constant WHERE on {rel}")
    return None


def _merge(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    rel = w.rel(b.get("relation"))
    w.add("write", f"MERGE into {rel}")
    if _is_constant(b.get("joinCondition")):
        # ON true: every row of the target matches; a WHEN MATCHED DELETE or
        # UPDATE without a condition of its own reaches all of them
        for clause in b.get("mergeWhenClauses") or ():
            when = clause.get("MergeWhenClause", {}) if isinstance(clause, dict) else {}
            if when.get("matchKind", "MERGE_WHEN_MATCHED") != "MERGE_WHEN_MATCHED":
                continue
            cond = when.get("condition")
            if cond is not None and not _is_constant(cond):
                continue
            if when.get("commandType") == "CMD_DELETE":
                w.add("delete_without_where", f"MERGE deleting every row of {rel} (constant ON)")
            elif when.get("commandType") == "CMD_UPDATE":
                w.add("update_without_where", f"MERGE updating every row of {rel} (constant ON)")
    return None


def _truncate(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    names = ", ".join(w.rel(r) for r in b.get("relations", ()))
    w.add("truncate", f"TRUNCATE of {names}")
    w.add("write")
    return False


def _drop(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    remove = str(b.get("removeType", "OBJECT_?"))
    what = remove.removeprefix("OBJECT_").replace("_", " ")
    names = ", ".join(w.dotted(o) for o in b.get("objects", ()))
    w.add("ddl")
    w.add("drop", f"DROP {what} {names}".rstrip())
    extra = DROP_CATEGORIES.get(remove)
    if extra:
        w.add(extra)
    return False


def _dropdb(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("ddl")
    w.add("drop")
    w.add("drop_database", f"DROP DATABASE {b.get('dbname', '?')}")
    return False


def _drop_role(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    names = ", ".join(w.role(r) for r in b.get("roles", ()))
    w.add("ddl")
    w.add("drop")
    w.add("role", f"DROP ROLE {names}")
    return False


def _drop_owned(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    names = ", ".join(w.role(r) for r in b.get("roles", ()))
    w.add("ddl")
    w.add("drop", f"DROP OWNED BY {names} drops every object they own")
    return False


def _create_role(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.stable = False
    w.add("ddl")
    w.add("role", f"CREATE ROLE {b.get('role', '?')}")
    return False


def _alter_role(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("ddl")
    w.add("role", f"ALTER ROLE {w.role(b.get('role'))}")
    return False


def _grant(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    grantees = ", ".join(w.role(r) for r in b.get("grantees", ()))
    objtype = str(b.get("objtype", "")).removeprefix("OBJECT_").lower()
    if b.get("is_grant"):
        w.add("grant", f"GRANT on {objtype} to {grantees}")
        if b.get("grant_option"):
            w.note("WITH GRANT OPTION")
    else:
        w.add("revoke", f"REVOKE on {objtype} from {grantees}")
    return False


def _default_privileges(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("ddl")
    action = b.get("action")
    if isinstance(action, dict):
        _grant(w, action.get("GrantStmt", action), text, False)
    return False


def _grant_role(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    grantees = ", ".join(w.role(r) for r in b.get("grantee_roles", ()))
    w.add("role")
    if b.get("is_grant"):
        w.add("grant", f"GRANT of role membership to {grantees}")
    else:
        w.add("revoke", f"REVOKE of role membership from {grantees}")
    return False


def _alter_system(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    setting = (b.get("setstmt") or {}).get("name", "?")
    w.add("alter_system", f"ALTER SYSTEM changes {setting} for the whole server")
    return False


def _variable_set(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    name = str(b.get("name", "")).lower()
    kind = b.get("kind", "")
    if kind == "VAR_SET_MULTI" or name.startswith("transaction"):
        w.add("transaction", "transaction setting")
    elif name == "role" and kind != "VAR_RESET":
        w.add("set_role", "SET ROLE switches privileges")
    elif name == "session_authorization" and kind != "VAR_RESET":
        w.add("set_session_authorization", "SET SESSION AUTHORIZATION switches user")
    elif name and is_sensitive_setting(name):
        w.add("sensitive_setting", f"SET of sensitive setting {name}")
    else:
        w.add("setting", "session setting")
    return False


def _transaction(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("transaction", "transaction control")
    return False


def _maintenance(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("maintenance", "maintenance command (VACUUM, ANALYZE, REINDEX, ...)")
    return False


def _listen(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("listen_notify", "LISTEN/NOTIFY")
    return False


def _copy(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    target = w.rel(b["relation"]) if b.get("relation") else "a query"
    direction = "FROM" if b.get("is_from") else "TO"
    filename = b.get("filename")
    if b.get("is_program"):
        w.add("copy_program", f"COPY {target} {direction} PROGRAM runs a server-side command")
    elif filename:
        w.add("copy_file", f"COPY {target} {direction} server-side file {filename}")
    elif b.get("is_from"):
        w.add("copy_stdin", f"COPY {target} FROM STDIN")
    else:
        w.add("copy_stdout", f"COPY {target} TO STDOUT")
    if b.get("is_from"):
        w.add("write")
    return None  # a COPY (query) TO runs the query


def _language(options: list[Any]) -> tuple[str, str | None]:
    language = "plpgsql"
    body: str | None = None
    for opt in options:
        elem = opt.get("DefElem", {}) if isinstance(opt, dict) else {}
        name = elem.get("defname")
        arg = elem.get("arg")
        if name == "language":
            language = (_sval(arg) or language).lower()
        elif name == "as":
            if isinstance(arg, dict) and "List" in arg:
                items = arg["List"].get("items", [])
                body = _sval(items[0]) if len(items) == 1 else None
            else:
                body = _sval(arg)
    return language, body


def _do(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.stable = False
    language, body = _language(b.get("args", []))
    w.add("do_block", "DO block runs procedural code")
    if language not in TRUSTED_LANGUAGES:
        w.add("untrusted_language", f"DO block in untrusted language {language}")
    elif language == "plpgsql":
        w.plpgsql(text, body, "DO block")
    return False


def _create_function(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.stable = False
    what = "PROCEDURE" if b.get("is_procedure") else "FUNCTION"
    name = w.dotted(b.get("funcname"))
    language, body = _language(b.get("options", []))
    w.add("ddl", f"CREATE {what} {name}")
    if language not in TRUSTED_LANGUAGES:
        w.add("untrusted_language", f"{what} {name} in untrusted language {language}")
    elif language == "plpgsql":
        w.plpgsql(text, body, f"{what.lower()} {name}")
    elif language == "sql" and body:
        w.nested(body, f"{what.lower()} {name}")
    if b.get("sql_body"):
        return None  # BEGIN ATOMIC ... END: the statements are in the tree
    return False


def _func_call(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    parts = b.get("funcname", [])
    name = (_sval(parts[-1]) if parts else None) or ""
    lname = name.lower()
    why = function_risk(lname)
    if why:
        w.add("dangerous_function", f"{name}() {why}")
    if runs_dynamic_sql(lname):
        w.add("dynamic_sql", f"{name}() runs SQL given as text")
    if lname == "set_config":
        w.stable = False
        args = b.get("args", [])
        setting = _const_str(args[0]) if args else None
        if setting is None:
            w.add("dangerous_function", "set_config() of a setting computed at run time")
        elif setting.lower() in ("role", "session_authorization"):
            w.add("dangerous_function", f"set_config() switches {setting.lower()}")
        elif is_sensitive_setting(setting):
            w.add("dangerous_function", f"set_config() of sensitive setting {setting}")
    return None


def _load(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("dangerous_function", f"LOAD of shared library {b.get('filename', '?')}")
    return False


def _extension(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("ddl")
    w.add("extension", f"extension {b.get('extname', '?')} installed or changed")
    return False


def _alter_table(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    rel = w.rel(b.get("relation"))
    objtype = str(b.get("objtype", "OBJECT_TABLE")).removeprefix("OBJECT_").replace("_", " ")
    w.add("ddl", f"ALTER {objtype} {rel}")
    for cmd in b.get("cmds", ()):
        sub = cmd.get("AlterTableCmd", {}) if isinstance(cmd, dict) else {}
        if sub.get("subtype") == "AT_DropColumn":
            w.add("drop_column", f"ALTER TABLE {rel} drops column {sub.get('name', '?')}")
    return None


def _execute(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.stable = False
    name = b.get("name", "?")
    w.add("execute")
    w.add("unknown_prepared", f"EXECUTE {name}: prepared statement body unknown")
    return False


def _prepare(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.stable = False
    w.add("prepare", f"PREPARE {b.get('name', '?')} (scored when executed)")
    return False


def _deallocate(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("deallocate", "DEALLOCATE of a prepared statement")
    return False


def _explain(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    for opt in b.get("options", ()):
        elem = opt.get("DefElem", {}) if isinstance(opt, dict) else {}
        if elem.get("defname") == "analyze":
            arg = elem.get("arg")
            off = _sval(arg) in ("false", "off") or (
                isinstance(arg, dict)
                and "Boolean" in arg
                and not arg["Boolean"].get("boolval", False)
            )
            if not off:
                w.add("read")
                w.note("EXPLAIN ANALYZE executes the statement")
                return None
    w.add("read", "EXPLAIN without ANALYZE does not execute")
    return False


def _read_only(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("read", "read-only query")
    return None


def _call(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("call", "CALL runs a procedure")
    return None


def _lock(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("lock", "LOCK TABLE")
    return False


def _setting(w: _Walk, b: Node, text: str, top: bool) -> bool | None:
    w.add("setting", "session setting")
    return False


_DDL_PREFIXES = (
    "Create", "Alter", "Drop", "Define", "Rename", "Comment", "SecLabel",
    "Composite", "Import", "Reassign",
)
_DDL_NAMES = frozenset({"IndexStmt", "ViewStmt", "RuleStmt", "CreatedbStmt"})


_DDL_WORDS = {
    "CreateStmt": "CREATE TABLE",
    "IndexStmt": "CREATE INDEX",
    "ViewStmt": "CREATE VIEW",
    "RuleStmt": "CREATE RULE",
    "CreatedbStmt": "CREATE DATABASE",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "CreateSeqStmt": "CREATE SEQUENCE",
    "CreateTrigStmt": "CREATE TRIGGER",
    "DefineStmt": "CREATE (aggregate, operator or type)",
}


def _generic_statement(w: _Walk, kind: str, body: Node) -> None:
    if kind.endswith("Stmt") and (kind.startswith(_DDL_PREFIXES) or kind in _DDL_NAMES):
        words = _DDL_WORDS.get(kind) or " ".join(
            re.findall(r"[A-Z][a-z]*", kind.removesuffix("Stmt"))
        ).upper()
        target = body.get("relation") or (body.get("into") or {}).get("rel")
        name = f" {w.rel(target)}" if isinstance(target, dict) else ""
        w.add("ddl", f"schema change: {words}{name}")
        if kind.startswith("Drop"):
            w.add("drop")


_HANDLERS: dict[str, Handler] = {
    "SelectStmt": _select,
    "InsertStmt": _insert,
    "UpdateStmt": _update,
    "DeleteStmt": _delete,
    "MergeStmt": _merge,
    "TruncateStmt": _truncate,
    "DropStmt": _drop,
    "DropdbStmt": _dropdb,
    "DropRoleStmt": _drop_role,
    "DropOwnedStmt": _drop_owned,
    "CreateRoleStmt": _create_role,
    "AlterRoleStmt": _alter_role,
    "AlterRoleSetStmt": _alter_role,
    "GrantStmt": _grant,
    "GrantRoleStmt": _grant_role,
    "AlterDefaultPrivilegesStmt": _default_privileges,
    "AlterSystemStmt": _alter_system,
    "VariableSetStmt": _variable_set,
    "VariableShowStmt": _read_only,
    "TransactionStmt": _transaction,
    "VacuumStmt": _maintenance,
    "ClusterStmt": _maintenance,
    "ReindexStmt": _maintenance,
    "CheckPointStmt": _maintenance,
    "RefreshMatViewStmt": _maintenance,
    "ListenStmt": _listen,
    "UnlistenStmt": _listen,
    "NotifyStmt": _listen,
    "CopyStmt": _copy,
    "DoStmt": _do,
    "CreateFunctionStmt": _create_function,
    "FuncCall": _func_call,
    "LoadStmt": _load,
    "CreateExtensionStmt": _extension,
    "AlterExtensionStmt": _extension,
    "AlterExtensionContentsStmt": _extension,
    "AlterTableStmt": _alter_table,
    "ExecuteStmt": _execute,
    "PrepareStmt": _prepare,
    "DeallocateStmt": _deallocate,
    "ExplainStmt": _explain,
    "DeclareCursorStmt": _read_only,
    "FetchStmt": _read_only,
    "ClosePortalStmt": _read_only,
    "CallStmt": _call,
    "LockStmt": _lock,
    "DiscardStmt": _setting,
    "ConstraintsSetStmt": _transaction,
}


_NOT_EFFECTS = frozenset({"read", "transaction", "setting", "empty"})


def classify(statements: list[Statement]) -> Classification:
    walk = _Walk()
    for stmt in statements:
        walk.statement(stmt)
    if walk.categories - _NOT_EFFECTS:
        # "read" means the whole text only reads.
        walk.categories.discard("read")
        if "read-only query" in walk.reasons:
            walk.reasons.remove("read-only query")
    if len(statements) > 1:
        walk.add("multi_statement", f"{len(statements)} statements in one query")
    elif not statements:
        walk.add("empty", "empty query")
    return Classification(
        frozenset(walk.categories), score_of(walk.categories), tuple(walk.reasons), walk.stable
    )


def classify_expressions(nodes: list[Any]) -> Classification:
    """Categories found in bare expression nodes (e.g. EXECUTE parameters)."""
    walk = _Walk()
    walk.node("_expressions", {"items": nodes}, "")
    return Classification(
        frozenset(walk.categories), score_of(walk.categories), tuple(walk.reasons), False
    )
