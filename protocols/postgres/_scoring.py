"""Adapter between the relay and the SQL risk scorer (``protocols.postgres.risk``).

The scorer is written separately; this module is the only place that knows
how to call it, so the relay never depends on its exact signature. When the
scorer is not importable, a fallback built on the classifier module (or, if
that is missing too, a conservative keyword check) keeps the gateway failing
*closed*: anything it cannot judge is reviewed.

It also does the protocol-side bookkeeping the scorer cannot: splitting a
simple-query string into statements and reading ``PREPARE name AS ...`` /
``EXECUTE name`` so that an EXECUTE is judged as the statement it runs.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from hoopd.model import Decision, Identity, Verdict
from hoopd.policy import Assessment, decide_command

log = logging.getLogger("hoopd.postgres")

CACHE_SIZE = 4096
JUDGED_CACHE_SIZE = 512
"""Per session: statement texts whose verdict is remembered."""
_PREPARED_WORDS = ("prepare", "execute", "deallocate")
_ENCODING_WORDS = ("encoding", "names", "conforming", "reset", "discard", "set_config")
"""Words of statements that may change client_encoding or
standard_conforming_strings: SET client_encoding, SET NAMES, SET
standard_conforming_strings, RESET (ALL), DISCARD ALL, set_config(...)."""
_ALLOWED = (Verdict.ALLOW, Verdict.MASK)


class Judged:
    """A statement's assessment and the policy verdict for it, without the
    command number (so it can be reused for the next identical statement)."""

    __slots__ = ("allowed", "assessment", "break_glass", "reasons", "risk", "rule_ids", "verdict")

    def __init__(self, assessment: Assessment, decision: Decision) -> None:
        self.assessment = assessment
        self.verdict = decision.verdict
        self.allowed = decision.verdict in _ALLOWED
        self.risk = decision.risk
        self.reasons = decision.reasons
        self.rule_ids = decision.rule_ids
        self.break_glass = decision.break_glass

    def decision(self, seq: int) -> Decision:
        # positional: keyword arguments cost ~0.4 us per call here
        return Decision(
            seq, self.verdict, self.risk, self.reasons, self.rule_ids, "", "", self.break_glass
        )


class Judge:
    """One session's verdicts, remembered by statement text.

    ``policy.decide_command`` depends on the assessment, the connection's
    risk section and the session's break-glass flag; the assessment of a
    text depends on the text only, except for PREPARE/EXECUTE/DEALLOCATE
    (they read and change the session's prepared statements), which are
    never remembered. So a repeated statement costs one dict lookup, and a
    new statement that scores like an earlier one skips the policy."""

    __slots__ = (
        "_break_glass", "_by_content", "_by_text", "_identity", "_read", "_risk", "_scorer", "_tracker",
        "backslash_escapes", "encoding_changing", "wide_encoding",
    )  # fmt: skip

    def __init__(self, scorer: Scorer, tracker: Any, risk: Any, identity: Identity, break_glass: bool) -> None:
        self._scorer = scorer
        self._tracker = tracker
        self._risk = risk
        self._identity = identity
        self._break_glass = break_glass
        self._read: tuple[Assessment, Judged] | None = None
        self._by_text: dict[str, Judged] = {}
        self._by_content: dict[tuple[Any, ...], Judged] = {}
        self.wide_encoding = False
        """The client's encoding is (or was) one whose multi-byte characters
        can hold ASCII bytes (SJIS, BIG5, GBK...): the server reads such a
        text otherwise than this UTF-8 decoding of it (a backslash or quote
        taken into a character ends or continues a literal), so no non-ASCII
        text can be judged."""
        self.backslash_escapes = False
        """standard_conforming_strings is off: the server reads a backslash
        in '...' as an escape (``'\\''`` is a whole string to it, an
        unfinished one here), so no text with a backslash can be judged."""
        self.encoding_changing = False
        """A statement that may change client_encoding (or
        standard_conforming_strings) was judged and its answer is not in
        yet: later texts may be read in the new way."""

    def __call__(self, text: str) -> Judged:
        if (self.wide_encoding or self.encoding_changing) and not text.isascii():
            return self._encoding_unsure()
        if (self.backslash_escapes or self.encoding_changing) and "\\" in text:
            return self._encoding_unsure()
        hit = self._by_text.get(text)
        if hit is not None:
            return hit
        read = self._scorer.plain_read(text)
        if read is not None:
            # one shared verdict for every plain read (SELECT cols FROM t
            # WHERE k = 42): new literals each time would only churn the cache
            if self._read is None or self._read[0] is not read:
                decision = decide_command(0, self._risk, self._identity, read, break_glass=self._break_glass)
                self._read = (read, Judged(read, decision))
            return self._read[1]
        found = self._scorer.assess(text, self._tracker)
        key = (found.score, found.categories, found.reasons, tuple(found.rule_verdicts.items()))
        judged = self._by_content.get(key)
        if judged is None:
            decision = decide_command(
                0, self._risk, self._identity, found, break_glass=self._break_glass
            )
            judged = Judged(found, decision)
            if len(self._by_content) < JUDGED_CACHE_SIZE:
                self._by_content[key] = judged
        lowered = text.lower()
        if any(word in lowered for word in _ENCODING_WORDS):
            # (never remembered: each one sets the flag)
            self.encoding_changing = True
        elif len(text) <= 4096 and not any(word in lowered for word in _PREPARED_WORDS):
            cache = self._by_text
            if len(cache) >= JUDGED_CACHE_SIZE:
                del cache[next(iter(cache))]
            cache[text] = judged
        return judged

    def _encoding_unsure(self) -> Judged:
        found = self._scorer.unjudgeable(
            "non-ASCII text in a client encoding, or a backslash with"
            " standard_conforming_strings off (or while either may change):"
            " the gateway cannot read it as the server does"
        )
        decision = decide_command(0, self._risk, self._identity, found, break_glass=self._break_glass)
        return Judged(found, decision)


def split_statements(sql: str) -> list[str]:
    """Split a simple-query string into statements (comments and empty
    statements dropped). Never raises: unparseable text is one statement."""
    stripped = sql.strip().rstrip(";").strip()
    if ";" not in stripped:
        return [sql] if stripped else []
    try:
        from pglast import parser

        from protocols.postgres._lexer_trap import lexer_trap

        if lexer_trap(sql) is not None:
            # the splitter runs the same lexer: one unparseable statement
            return [sql]

        parts = list(parser.split(sql, with_parser=False))
    except Exception:
        return [sql]
    return [p for p in parts if p.strip()] or [sql]


class Scorer:
    """Scores SQL for one connection (shared by its sessions).

    Uses ``protocols.postgres.risk.SqlRiskScorer`` (parser-based, cached by
    text and fingerprint). ``tracker`` is the session's prepared statements
    (``risk.PreparedStatements``) so that EXECUTE is scored as what it runs.
    """

    def __init__(self, risk: Any, max_parsed_chars: int | None = None) -> None:
        self.risk = risk
        self.max_parsed_chars = max_parsed_chars
        self.offload_min_chars = 1 << 62
        """Texts this long or shorter are never handed to the parse worker."""
        self._cache: OrderedDict[str, Assessment] = OrderedDict()
        self._last_split: tuple[str, list[str]] | None = None
        self._scorer: Any = None
        self._score_text: Callable[..., Assessment] | None = None
        self._tracker_cls: Callable[[], Any] = _NoTracker
        try:
            from protocols.postgres import risk as risk_mod

            if max_parsed_chars is None:
                max_parsed_chars = risk_mod.MAX_PARSED_CHARS
            self.max_parsed_chars = max_parsed_chars
            self.offload_min_chars = risk_mod.OFFLOAD_MIN_CHARS
            self._scorer = risk_mod.SqlRiskScorer(risk, max_parsed_chars=max_parsed_chars)
            self._score_text = risk_mod.score_statement_text
            self._tracker_cls = risk_mod.PreparedStatements
        except (ImportError, AttributeError) as exc:
            log.warning("SQL risk scorer unavailable (%s); using the fallback classifier", exc)

    @property
    def using_fallback(self) -> bool:
        return self._scorer is None

    def plain_read(self, sql: str) -> Assessment | None:
        """See ``SqlRiskScorer.plain_read`` (None without the scorer)."""
        if self._scorer is None:
            return None
        try:
            found: Assessment | None = self._scorer.plain_read(sql)
        except Exception:
            return None
        return found

    def needs_analysis(self, sql: str) -> bool:
        """See ``SqlRiskScorer.needs_analysis`` (False without the scorer)."""
        return self._scorer is not None and bool(self._scorer.needs_analysis(sql))

    def prime(self, sql: str, analysis: Any) -> None:
        if self._scorer is not None:
            self._scorer.prime(sql, analysis)

    def split(self, sql: str) -> list[str]:
        """``split_statements``, except that a text too long to be parsed
        is not split either: it is one (unparseable) statement."""
        if self.max_parsed_chars is not None and len(sql) > self.max_parsed_chars:
            return [sql] if sql.strip() else []
        if len(sql) <= self.offload_min_chars:
            return split_statements(sql)
        # A long Query is split twice in a row: to find what the parse
        # worker must see first (ClientConnection._analysing), then to judge it.
        last = self._last_split
        if last is None or last[0] != sql:
            last = self._last_split = (sql, split_statements(sql))
        return list(last[1])

    def new_tracker(self) -> Any:
        return self._tracker_cls()

    def assess(self, sql: str, tracker: Any = None) -> Assessment:
        if self._scorer is not None and self._score_text is not None:
            try:
                if tracker is None:
                    return _as_assessment(self._scorer.score(sql))
                return _as_assessment(self._score_text(sql, tracker, self._scorer))
            except Exception as exc:  # a scorer bug must not wave a statement through
                log.error("risk scorer failed on a statement: %s", exc)
                return self._unjudgeable(f"risk scorer failed: {type(exc).__name__}")
        cache = self._cache
        found = cache.get(sql)
        if found is not None:
            return found
        found = self._fallback(sql)
        cache[sql] = found
        if len(cache) > CACHE_SIZE:
            cache.popitem(last=False)
        return found

    def unjudgeable(self, why: str) -> Assessment:
        """An assessment of a text that cannot be judged (``unparseable``)."""
        return self._unjudgeable(why)

    # -- fallback -----------------------------------------------------------
    def _unjudgeable(self, why: str) -> Assessment:
        action = getattr(self.risk, "unparseable", "review") if self.risk else "review"
        verdict = {"allow": Verdict.ALLOW, "deny": Verdict.DENY}.get(action, Verdict.REVIEW)
        return Assessment(
            score=75, categories=frozenset({"unparseable"}), reasons=(why,),
            rule_verdicts={"unparseable": verdict},
        )

    def _fallback(self, sql: str) -> Assessment:
        try:
            from protocols.postgres._risk_classify import classify, parse
        except ImportError:
            return self._keyword_fallback(sql)
        try:
            found = classify(parse(sql))
        except Exception as exc:
            return self._unjudgeable(f"unparseable SQL: {str(exc)[:120]}")
        return Assessment(
            score=found.score,
            categories=found.categories,
            reasons=found.reasons,
            rule_verdicts=self._rule_verdicts(sql, found.categories),
        )

    def _keyword_fallback(self, sql: str) -> Assessment:
        head = sql.lstrip().split(None, 1)[0].lower() if sql.strip() else ""
        if head in ("select", "show", "begin", "commit", "rollback", "values", "explain"):
            return Assessment(score=0, categories=frozenset({"read"}))
        return self._unjudgeable("no SQL risk scorer installed")

    def _rule_verdicts(self, sql: str, categories: frozenset[str]) -> dict[str, Verdict]:
        out: dict[str, Verdict] = {}
        for rule in getattr(self.risk, "rules", ()) or ():
            if rule.match is not None and rule.match in categories:
                out[rule.rule_id] = rule.action
            elif rule.pattern is not None:
                try:
                    import re2

                    if re2.search(rule.pattern, sql):
                        out[rule.rule_id] = rule.action
                except Exception:
                    out[rule.rule_id] = Verdict.REVIEW
        return out


class _NoTracker:
    def prepare(self, name: str, sql: str) -> None:
        pass

    def deallocate(self, name: str | None) -> None:
        pass


def _as_assessment(raw: Any) -> Assessment:
    if isinstance(raw, Assessment):
        return raw
    verdicts = getattr(raw, "rule_verdicts", {}) or {}
    return Assessment(
        score=int(getattr(raw, "score", 0)),
        categories=frozenset(getattr(raw, "categories", ()) or ()),
        reasons=tuple(getattr(raw, "reasons", ()) or ()),
        rule_verdicts={k: Verdict(v) for k, v in dict(verdicts).items()},
    )


def combine(found: list[Assessment]) -> Assessment:
    """One assessment for a batch of statements judged together."""
    if len(found) == 1:
        return found[0]
    verdicts: dict[str, Verdict] = {}
    order = {Verdict.ALLOW: 0, Verdict.MASK: 1, Verdict.REVIEW: 2, Verdict.DENY: 3}
    for a in found:
        for k, v in a.rule_verdicts.items():
            if k not in verdicts or order[v] > order[verdicts[k]]:
                verdicts[k] = v
    reasons: list[str] = []
    for a in found:
        for r in a.reasons:
            if r not in reasons:
                reasons.append(r)
    return Assessment(
        score=max((a.score for a in found), default=0),
        categories=frozenset().union(*(a.categories for a in found)),
        reasons=tuple(reasons[:24]),
        rule_verdicts=verdicts,
    )
