"""Risk scoring for SQL sent through a Postgres connection.

``SqlRiskScorer(risk_section).score(sql)`` parses the text with pglast (the
PostgreSQL 18 grammar), classifies every statement by type and effect, and
returns a ``hoopd.policy.Assessment``: a 0..100 score (the highest category
score found), stable snake_case categories, short reasons, and the verdicts of
the connection's explicit rules. ``decide_command`` turns that into a verdict.

Cost, from cheapest: an exact-text cache hit; a pre-check that recognises
trivially safe reads (``SELECT a, b FROM t WHERE k = $1``) without parsing; a
fingerprint-cache hit (pglast fingerprint, ~6 µs); a full parse and tree walk.
Measured numbers are in docs/postgres-risk.md.

SQL-level ``PREPARE``/``EXECUTE`` and protocol-level Parse messages are
tracked per session by ``PreparedStatements``; ``score_statement_text``
scores an ``EXECUTE`` as the statement it runs.

The scorer is meant to be shared by the sessions of one connection on one
event loop; it is not thread-safe. Returned assessments share no mutable
state with the cache.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import re2
from pglast import keywords as pg_keywords
from pglast import parser as pg

from hoopd.config import RiskLevel, RiskSection
from hoopd.model import Verdict
from hoopd.policy import LEVEL_SCORES, Assessment
from protocols.postgres._analysis import Analysis, parse_error
from protocols.postgres._risk_catalog import CATEGORY_SCORES
from protocols.postgres._risk_classify import (
    Classification,
    Statement,
    classify,
    classify_expressions,
    lexer_trap,
    parse,
    score_of,
)

__all__ = [
    "CATEGORY_SCORES",
    "UNPARSEABLE_RULE_ID",
    "PreparedStatements",
    "SqlRiskScorer",
    "score_statement_text",
]

UNPARSEABLE_RULE_ID = "risk.unparseable"
"""Rule id of the verdict forced by ``RiskSection.unparseable`` (review with
``review_at: never``, or deny)."""

TEXT_CACHE_MAX_CHARS = 4096
"""Longer texts are never kept in the exact-text cache."""

OFFLOAD_MIN_CHARS = 16 * 1024
"""Longer texts are worth parsing in the parse worker rather than on the
event loop (``needs_analysis``): parsing costs ~1 µs of CPU per byte."""

MAX_PARSED_CHARS = 4 * 1024 * 1024
"""Default for ``max_parsed_chars``: longer texts are not parsed. Parsing
needs ~75 bytes of memory per byte of a multi-row INSERT (libpg_query's
JSON tree and its decoded form: 830 MB for an 11 MB statement) and about a
second per MB; bulk loads belong in COPY, whose data is not parsed."""

_ANALYSED_MAX_CHARS = 64 * 1024 * 1024
"""Total length of the texts whose analyses are kept (``_AnalysisCache``)."""

_SEVERITY = {Verdict.ALLOW: 0, Verdict.MASK: 1, Verdict.REVIEW: 2, Verdict.DENY: 3}

# -- fast path ---------------------------------------------------------------
# A strict shape of plain reads: SELECT of columns (or *) from one table,
# optionally WHERE col <op> param/number/simple string [AND ...]. No calls,
# no parentheses, no comments, no quoting, no keywords as names: anything
# outside this goes to the parser.
_ID = r"[a-z_][a-z0-9_$]*"
_QID = rf"{_ID}(?:\.{_ID})?"
_VALUE = r"(?:\$[0-9]+|-?[0-9]+(?:\.[0-9]+)?|'[a-z0-9 _.@:-]*')"
_COND = rf"{_QID}\s*(?:=|<|>|<=|>=|<>|!=)\s*{_VALUE}"
_FAST_READ = re.compile(
    rf"\s*select\s+(\*|{_QID}(?:\s*,\s*{_QID})*)\s+from\s+({_QID})"
    rf"(?:\s+where\s+({_COND}(?:\s+and\s+{_COND})*))?"
    rf"(?:\s+limit\s+(?:[0-9]+|\$[0-9]+))?\s*;?\s*",
    re.ASCII,
)
_WORD = re.compile(r"[a-z_][a-z0-9_$]*", re.ASCII)
_NOT_NAMES = frozenset(
    w.lower()
    for w in (
        *pg_keywords.RESERVED_KEYWORDS,
        *pg_keywords.TYPE_FUNC_NAME_KEYWORDS,
        *pg_keywords.COL_NAME_KEYWORDS,
    )
)
_AND = re.compile(r"\s+and\s+")
_FAST_MAX_CHARS = 512


# Every digit in a text _FAST_READ accepts sits where any digit would do
# (numbers, $n, string literals, and identifiers after their first
# character), and no keyword holds a digit: so texts that differ only in
# their digits get the same answer (a property test checks this), and
# pgbench-style traffic (one shape, new literals each time) costs a
# translate and a cache lookup instead of the regexes.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _fast_read(sql: str) -> bool:
    """True if ``sql`` is certainly one plain read (see ``_FAST_READ``)."""
    if len(sql) > _FAST_MAX_CHARS or not sql.isascii():
        # Non-ASCII could lower-case into ASCII (U+212A KELVIN SIGN -> k).
        return False
    return _fast_read_shape(sql.encode("ascii").translate(_DIGITS_TO_ZERO))


@functools.lru_cache(maxsize=4096)
def _fast_read_shape(shape: bytes) -> bool:
    return _fast_read_text(shape.decode("ascii"))


def _fast_read_text(sql: str) -> bool:
    m = _FAST_READ.fullmatch(sql.lower())
    if m is None:
        return False
    cols, table, where = m.groups()
    names = f"{cols} {table} {' '.join(_AND.split(where)) if where else ''}"
    # Strings were limited to [a-z0-9 _.@:-], so a keyword inside one makes
    # this refuse a safe query, never accept an unsafe one.
    return _NOT_NAMES.isdisjoint(_WORD.findall(names))


_READ = Classification(frozenset({"read"}), 0, ("read-only query",), True)

# -- the scorer --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Cached:
    categories: frozenset[str]
    score: int
    reasons: tuple[str, ...]
    match_verdicts: tuple[tuple[str, Verdict], ...]


class _LRU:
    __slots__ = ("data", "hits", "maxsize", "misses")

    def __init__(self, maxsize: int) -> None:
        self.data: OrderedDict[str, _Cached] = OrderedDict()
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> _Cached | None:
        found = self.data.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self.data.move_to_end(key)
        return found

    def put(self, key: str, value: _Cached) -> None:
        if self.maxsize <= 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.maxsize:
            self.data.popitem(last=False)


class _AnalysisCache:
    """Analyses of long texts, by text, bounded by the texts' total length:
    the parse worker's answers wait here until the scorer asks, and a long
    prepared statement run again is not parsed again."""

    __slots__ = ("chars", "data")

    def __init__(self) -> None:
        self.data: OrderedDict[str, Analysis] = OrderedDict()
        self.chars = 0

    def get(self, sql: str) -> Analysis | None:
        found = self.data.get(sql)
        if found is not None:
            self.data.move_to_end(sql)
        return found

    def drop(self, sql: str) -> None:
        if self.data.pop(sql, None) is not None:
            self.chars -= len(sql)

    def put(self, sql: str, analysis: Analysis) -> None:
        self.drop(sql)
        if len(sql) > _ANALYSED_MAX_CHARS:
            return
        self.data[sql] = analysis
        self.chars += len(sql)
        while self.chars > _ANALYSED_MAX_CHARS:
            old, _ = self.data.popitem(last=False)
            self.chars -= len(old)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    text_hits: int
    text_misses: int
    fingerprint_hits: int
    fingerprint_misses: int
    text_size: int
    fingerprint_size: int


class SqlRiskScorer:
    """Scores SQL text for one connection's ``RiskSection`` (``None`` means
    the defaults). Build one per connection and share it across sessions."""

    def __init__(
        self,
        risk: RiskSection | None,
        *,
        cache_size: int = 4096,
        fast_path: bool = True,
        max_parsed_chars: int = MAX_PARSED_CHARS,
    ) -> None:
        self.risk = risk or RiskSection()
        self._fast_path = fast_path
        self.max_parsed_chars = max_parsed_chars
        self._analysed = _AnalysisCache()
        self._match: dict[str, list[tuple[str, Verdict]]] = {}
        self._patterns: list[tuple[str, Verdict, re2._Regexp]] = []
        for rule in self.risk.rules:
            if rule.match is not None:
                self._match.setdefault(rule.match, []).append((rule.rule_id, rule.action))
            elif rule.pattern is not None:
                self._patterns.append((rule.rule_id, rule.action, re2.compile(rule.pattern)))
        self._text_cache = _LRU(cache_size)
        self._fp_cache = _LRU(cache_size)
        self._unparseable = self._unparseable_policy()
        self._read = self._finish(_READ)
        self._read_assessment: Assessment | None = None

    # -- public ---------------------------------------------------------

    def score(self, sql: str) -> Assessment:
        """Assess ``sql`` (one or more statements). Never raises."""
        try:
            return self._score(sql)
        except Exception as exc:  # a scorer bug must not wave a query through
            return self._unparseable_assessment(sql, f"risk scorer error: {type(exc).__name__}")

    def score_statements(self, statements: list[Statement], sql: str) -> Assessment:
        """Assess already-parsed statements (used for EXECUTE resolution)."""
        return self._assess(self._finish(classify(statements)), sql)

    def plain_read(self, sql: str) -> Assessment | None:
        """The assessment of ``sql`` if it is certainly one plain read and
        no ``pattern`` rule could tell it apart from any other plain read
        (the same object every time: callers may cache decisions by it);
        None otherwise (use ``score``)."""
        if self._patterns or not self._fast_path or not _fast_read(sql):
            return None
        found = self._read_assessment
        if found is None:
            found = self._read_assessment = self._assess(self._read, "")
        return found

    def needs_analysis(self, sql: str) -> bool:
        """True if scoring ``sql`` would parse a text long enough to be
        parsed in the parse worker, and no analysis of it is at hand: get
        one (``_analysis.analyse``, in the worker) and ``prime`` it first."""
        return (
            OFFLOAD_MIN_CHARS < len(sql) <= self.max_parsed_chars
            and self._analysed.get(sql) is None
        )

    def prime(self, sql: str, analysis: Analysis) -> None:
        """Keep ``analysis`` (of ``sql``) for the next ``score`` of ``sql``."""
        if len(sql) > OFFLOAD_MIN_CHARS:
            self._analysed.put(sql, analysis)

    def analysis_of(self, sql: str) -> Analysis | None:
        """The primed analysis of ``sql``, if any."""
        return self._analysed.get(sql) if len(sql) > OFFLOAD_MIN_CHARS else None

    def _used(self, sql: str, analysis: Analysis) -> None:
        if analysis.transient:
            self._analysed.drop(sql)  # the next attempt asks the worker again

    def cache_info(self) -> CacheInfo:
        return CacheInfo(
            self._text_cache.hits,
            self._text_cache.misses,
            self._fp_cache.hits,
            self._fp_cache.misses,
            len(self._text_cache.data),
            len(self._fp_cache.data),
        )

    def score_statement_text(self, sql: str, tracker: PreparedStatements) -> Assessment:
        """Like ``score``, but follows the session's prepared statements:
        ``PREPARE``/``DEALLOCATE`` update ``tracker`` and an ``EXECUTE`` is
        scored as the statement it runs."""
        return score_statement_text(sql, tracker, self)

    # -- internals ------------------------------------------------------

    def _score(self, sql: str) -> Assessment:
        cacheable = len(sql) <= TEXT_CACHE_MAX_CHARS
        if cacheable:
            hit = self._text_cache.get(sql)
            if hit is not None:
                return self._assess(hit, sql)
        if self._fast_path and _fast_read(sql):
            if cacheable:
                self._text_cache.put(sql, self._read)
            return self._assess(self._read, sql)
        if len(sql) > self.max_parsed_chars:
            why = f"longer than {self.max_parsed_chars} characters (max_parsed_sql): not parsed"
            return self._unparseable_assessment(sql, why)
        analysis = self.analysis_of(sql)
        if analysis is not None:
            return self._primed(sql, analysis)
        if "\x00" in sql:
            return self._unparseable_assessment(sql, "NUL byte in query text")
        trap = lexer_trap(sql)
        if trap is not None:
            return self._unparseable_assessment(sql, trap)
        try:
            fp = pg.fingerprint(sql)
        except Exception as exc:
            return self._unparseable_assessment(sql, parse_error(exc))
        cached = self._fp_cache.get(fp)
        if cached is None:
            try:
                statements = parse(sql)
            except Exception as exc:
                return self._unparseable_assessment(sql, parse_error(exc))
            found = classify(statements)
            cached = self._finish(found)
            if found.fingerprint_stable:
                self._fp_cache.put(fp, cached)
        if cacheable:
            self._text_cache.put(sql, cached)
        return self._assess(cached, sql)

    def _primed(self, sql: str, analysis: Analysis) -> Assessment:
        """``_score`` of a text the parse worker analysed (the same steps)."""
        self._used(sql, analysis)
        if analysis.error or analysis.found is None:
            return self._unparseable_assessment(sql, analysis.error or "not analysed")
        cached = self._fp_cache.get(analysis.fingerprint)
        if cached is None:
            cached = self._finish(analysis.found)
            if analysis.found.fingerprint_stable:
                self._fp_cache.put(analysis.fingerprint, cached)
        return self._assess(cached, sql)

    def _finish(self, found: Classification) -> _Cached:
        verdicts = tuple(
            rule for category in sorted(found.categories) for rule in self._match.get(category, ())
        )
        return _Cached(found.categories, found.score, found.reasons, verdicts)

    def _assess(self, cached: _Cached, sql: str) -> Assessment:
        verdicts: dict[str, Verdict] = {}
        for rule_id, action in cached.match_verdicts:
            _merge_verdict(verdicts, rule_id, action)
        for rule_id, action, regex in self._patterns:
            if regex.search(sql):
                _merge_verdict(verdicts, rule_id, action)
        return Assessment(cached.score, cached.categories, cached.reasons, verdicts)

    def _meta(self, categories: frozenset[str], reasons: tuple[str, ...], sql: str) -> Assessment:
        """An assessment of just ``categories``, with rules applied to ``sql``."""
        found = Classification(categories, score_of(categories), reasons, False)
        return self._assess(self._finish(found), sql)

    def _unparseable_policy(self) -> tuple[int, tuple[tuple[str, Verdict], ...]]:
        mode = self.risk.unparseable
        if mode == "allow":
            return 0, ()
        if mode == "deny":
            return LEVEL_SCORES[RiskLevel.CRITICAL], ((UNPARSEABLE_RULE_ID, Verdict.DENY),)
        if self.risk.review_at == "never":
            # No threshold can hold it, so an explicit verdict does.
            return LEVEL_SCORES[RiskLevel.HIGH], ((UNPARSEABLE_RULE_ID, Verdict.REVIEW),)
        return LEVEL_SCORES[RiskLevel[self.risk.review_at.upper()]], ()

    def _unparseable_assessment(self, sql: str, reason: str) -> Assessment:
        score, forced = self._unparseable_policy()
        categories = frozenset({"unparseable"})
        base = self._finish(Classification(categories, score, (reason,), False))
        cached = _Cached(categories, score, (reason,), forced + base.match_verdicts)
        return self._assess(cached, sql)


def _merge_verdict(verdicts: dict[str, Verdict], rule_id: str, action: Verdict) -> None:
    old = verdicts.get(rule_id)
    if old is None or _SEVERITY[action] > _SEVERITY[old]:
        verdicts[rule_id] = action


# -- prepared statements -----------------------------------------------------


class PreparedStatements:
    """One session's prepared statements, by name, as the client created them
    (SQL ``PREPARE`` and protocol-level Parse; the unnamed statement is
    ``""``).

    It records what was asked, not what the server accepted. Preparing a name
    that is already taken fails on the server and keeps the old statement,
    but a gateway-denied PREPARE never reached it; so a name keeps every body
    prepared under it until DEALLOCATE, and an EXECUTE is scored as the
    riskiest of them. Only the unnamed statement is simply replaced."""

    MAX_STATEMENTS = 10_000
    MAX_CHARS = 16 * 1024 * 1024
    MAX_BODIES_PER_NAME = 8

    MAX_LOST = 10_000

    def __init__(self) -> None:
        self._statements: dict[str, list[str]] = {}
        self._chars = 0
        self._lost: set[str] = set()
        """Names with bodies forgotten (to stay within the bounds): they
        resolve to nothing, as unknown, until DEALLOCATE -- a body prepared
        later may have failed on the server while a forgotten one lives."""
        self._all_lost = False
        """Too many lost names to list: every name is unknown until
        DEALLOCATE ALL."""

    def prepare(self, name: str, sql: str) -> None:
        if name == "":
            self.deallocate("")
        bodies = self._statements.get(name)
        if bodies is not None and sql in bodies:
            return
        while self._statements and (
            len(self._statements) >= self.MAX_STATEMENTS or self._chars + len(sql) > self.MAX_CHARS
        ):
            # An unknown EXECUTE scores high; the name stays unknown.
            self._lose(next(iter(self._statements)))
        bodies = self._statements.setdefault(name, [])
        if len(bodies) >= self.MAX_BODIES_PER_NAME:
            self._chars -= len(bodies.pop(0))
            self._lose_name(name)
        bodies.append(sql)
        self._chars += len(sql)

    def _lose(self, name: str) -> None:
        old = self._statements.pop(name, None)
        if old is not None:
            self._chars -= sum(len(b) for b in old)
        self._lose_name(name)

    def _lose_name(self, name: str) -> None:
        if name == "":
            return  # the unnamed statement is replaced, never kept twice
        if len(self._lost) >= self.MAX_LOST:
            self._all_lost = True
            self._lost.clear()
        if not self._all_lost:
            self._lost.add(name)

    def _known(self, name: str) -> bool:
        return name == "" or not (self._all_lost or name in self._lost)

    def resolve_execute(self, name: str) -> str | None:
        """The body most recently prepared under ``name``."""
        bodies = self._statements.get(name) if self._known(name) else None
        return bodies[-1] if bodies else None

    def candidates(self, name: str) -> tuple[str, ...]:
        """Every body prepared under ``name`` since it was last deallocated
        (none if some of them were forgotten)."""
        if not self._known(name):
            return ()
        return tuple(self._statements.get(name, ()))

    def deallocate(self, name: str | None) -> None:
        """Forget ``name``; ``None`` forgets all (``DEALLOCATE ALL``)."""
        if name is None:
            self._statements.clear()
            self._chars = 0
            self._lost.clear()
            self._all_lost = False
            return
        old = self._statements.pop(name, None)
        if old is not None:
            self._chars -= sum(len(b) for b in old)
        self._lost.discard(name)

    def __len__(self) -> int:
        return len(self._statements)

    def __contains__(self, name: object) -> bool:
        return name in self._statements


_PREPARED_WORDS = ("prepare", "execute", "deallocate")


def score_statement_text(
    sql: str, tracker: PreparedStatements, scorer: SqlRiskScorer | None = None
) -> Assessment:
    """Score ``sql`` for a session that tracks prepared statements.

    Statements run in order, so ``PREPARE p AS ...; EXECUTE p`` resolves.
    Without any of PREPARE/EXECUTE/DEALLOCATE in the text this is exactly
    ``scorer.score(sql)``.
    """
    scorer = scorer or _default_scorer()
    if len(sql) > scorer.max_parsed_chars:
        return scorer.score(sql)  # reports it as not parsed
    lowered = sql.lower()
    if not any(word in lowered for word in _PREPARED_WORDS):
        return scorer.score(sql)
    simple = _SIMPLE_EXECUTE.fullmatch(lowered) if sql.isascii() else None
    if simple is not None:
        # EXECUTE name[(plain values)]: one statement, no calls in the
        # parameters, so only the body matters. Saves a parse per call.
        return _score_execute(simple.group(1), sql, (), tracker, scorer)
    analysis = scorer.analysis_of(sql)
    if analysis is not None:
        if not analysis.tracked:
            return scorer.score(sql)
        # Following the statements would parse each one again on the event
        # loop, which the parse worker was there to avoid: fail closed.
        why = f"PREPARE, EXECUTE or DEALLOCATE in a text over {OFFLOAD_MIN_CHARS} characters"
        return scorer._unparseable_assessment(sql, f"{why}: not followed")
    try:
        statements = parse(sql)  # (refuses a lexer trap itself)
    except Exception:
        return scorer.score(sql)  # reports it as unparseable
    if not any(s.kind in _TRACKED for s in statements):
        return scorer.score(sql)
    try:
        parts = [_score_one(stmt, tracker, scorer) for stmt in statements]
    except Exception as exc:
        return scorer._unparseable_assessment(sql, f"risk scorer error: {type(exc).__name__}")
    if len(parts) > 1:
        multi = f"{len(parts)} statements in one query"
        parts.append(scorer._meta(frozenset({"multi_statement"}), (multi,), sql))
    return _combine(parts)


_TRACKED = frozenset({"PrepareStmt", "ExecuteStmt", "DeallocateStmt"})


def _score_one(stmt: Statement, tracker: PreparedStatements, scorer: SqlRiskScorer) -> Assessment:
    node = stmt.node
    if stmt.kind == "PrepareStmt":
        body = _prepare_body(stmt.text)
        name = str(node.get("name", ""))
        if body is not None:
            tracker.prepare(name, body)
        # else: EXECUTE of it stays unknown, which scores high
        return scorer.score(stmt.text)
    if stmt.kind == "DeallocateStmt":
        tracker.deallocate(None if node.get("isall") else str(node.get("name", "")))
        return scorer.score(stmt.text)
    if stmt.kind == "ExecuteStmt":
        name = str(node.get("name", ""))
        return _score_execute(name, stmt.text, node.get("params") or (), tracker, scorer)
    return scorer.score(stmt.text)


# Parameters limited to names, numbers and operators: no quotes, comments,
# semicolons, dollar quoting or calls can hide in them.
_SIMPLE_EXECUTE = re.compile(
    r"\s*execute\s+([a-z_][a-z0-9_]*)\s*(?:\(\s*[a-z0-9_.,+*\s]*\))?\s*;?\s*", re.ASCII
)


def _score_execute(
    name: str,
    text: str,
    params: Iterable[Any],
    tracker: PreparedStatements,
    scorer: SqlRiskScorer,
) -> Assessment:
    bodies = tracker.candidates(name)
    if not bodies:
        return scorer.score(text)  # unknown_prepared, high
    parts = []
    for body in bodies:
        parts.append(
            scorer._meta(frozenset({"execute"}), (f"EXECUTE {name} runs: {_shorten(body)}",), text)
        )
        parts.append(scorer.score(body))
    if params:
        # Parameters are expressions evaluated by EXECUTE: look for calls.
        found = classify_expressions(list(params))
        if found.categories:
            parts.append(scorer._meta(found.categories, found.reasons, text))
    return _combine(parts)


def _combine(parts: Iterable[Assessment]) -> Assessment:
    score = 0
    categories: set[str] = set()
    reasons: list[str] = []
    verdicts: dict[str, Verdict] = {}
    for part in parts:
        score = max(score, part.score)
        categories |= part.categories
        for reason in part.reasons:
            if reason not in reasons:
                reasons.append(reason)
        for rule_id, action in part.rule_verdicts.items():
            _merge_verdict(verdicts, rule_id, action)
    if len(categories) > 1:
        categories.discard("read")
        if "read-only query" in reasons:
            reasons.remove("read-only query")
    return Assessment(score, frozenset(categories), tuple(reasons), verdicts)


def _prepare_body(text: str) -> str | None:
    """The statement after ``AS`` in ``PREPARE name [(types)] AS stmt``."""
    try:
        tokens = pg.scan(text)
    except Exception:
        return None
    raw = text.encode("utf-8")
    depth = 0
    for token in tokens:
        if token.name == "ASCII_40":
            depth += 1
        elif token.name == "ASCII_41":
            depth -= 1
        elif depth == 0 and token.name == "AS":
            return raw[token.end + 1 :].decode("utf-8", "replace").strip()
    return None


def _shorten(sql: str, limit: int = 80) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_DEFAULT: list[SqlRiskScorer] = []


def _default_scorer() -> SqlRiskScorer:
    if not _DEFAULT:
        _DEFAULT.append(SqlRiskScorer(None))
    return _DEFAULT[0]
