"""Risk of one HTTP request, and the per-connection rules that apply to it.

Scores by method: reads (GET, HEAD, OPTIONS) 0, writes (POST, PUT, PATCH) 25
(low), DELETE 50 (medium), any other method 50. Categories for ``risk.rules[].match``:
``read``, ``write``, ``delete``, ``unusual_method``.

Rules that force a verdict, both reported in ``Assessment.rule_verdicts``:

* ``options.rules``: ``{method, path (glob: * within a segment, ** across), action}``;
* ``risk.rules``: ``match: <category>`` or ``pattern: <RE2>`` searched in the
  command text ``METHOD /path?query``.

Paths are matched after normalization (``normalize_path``), the same form
that is sent upstream, so ``/%61dmin`` or ``/api/../admin`` cannot slip past
a rule on ``/admin/**``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

import re2

from hoopd.config import RiskLevel, RiskSection
from hoopd.model import Verdict
from hoopd.policy import LEVEL_SCORES, Assessment

from .config import PathRule

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})?")


def _decode_unreserved(m: re.Match[str]) -> str:
    if m.group(1) is None:
        # a stray '%' (not an escape): encoded, so that decoding cannot make
        # a new escape out of it ('/%%361dmin' must not become '/%61dmin')
        return "%25"
    value = int(m.group(1), 16)
    if value in _UNRESERVED:
        return chr(value)
    return "%" + m.group(1).upper()


def normalize_path(path: str) -> str:
    """RFC 3986 normalization: decode percent-encoded unreserved characters,
    upper-case the remaining escapes, encode a stray ``%`` as ``%25``, remove ``.`` and ``..`` segments and
    collapse repeated slashes. Never climbs above the root."""
    if "%" in path:
        path = _PCT.sub(_decode_unreserved, path)
    if "/." not in path and "//" not in path:
        return path or "/"
    out: list[str] = []
    segments = path.split("/")
    for seg in segments[1:]:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = path.endswith(("/", "/.", "/..")) and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


def glob_to_regex(pattern: str) -> str:
    """``/api/**`` -> matches ``/api``, ``/api/`` and anything below; ``*`` one segment."""
    out = ["^"]
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("/**", i) and i + 3 == n:
            out.append("(?:/.*)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    out.append("$")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _CompiledPathRule:
    rule_id: str
    methods: frozenset[str]
    regex: re.Pattern[str]
    action: Verdict


class HttpRiskScorer:
    def __init__(self, rules: tuple[PathRule, ...], risk: RiskSection | None) -> None:
        self._path_rules = [
            _CompiledPathRule(r.rule_id, r.methods, re.compile(glob_to_regex(r.path)), r.action)
            for r in rules
        ]
        self._category_rules: list[tuple[str, str, Verdict]] = []
        self._pattern_rules: list[tuple[str, re2._Regexp, Verdict]] = []
        for rr in risk.rules if risk else ():
            if rr.match is not None:
                self._category_rules.append((rr.rule_id, rr.match, rr.action))
            elif rr.pattern is not None:
                self._pattern_rules.append((rr.rule_id, re2.compile(rr.pattern), rr.action))

    @staticmethod
    def base(method: str) -> tuple[int, str]:
        if method in READ_METHODS:
            return 0, "read"
        if method in WRITE_METHODS:
            return LEVEL_SCORES[RiskLevel.LOW], "write"
        if method == "DELETE":
            return LEVEL_SCORES[RiskLevel.MEDIUM], "delete"
        return LEVEL_SCORES[RiskLevel.MEDIUM], "unusual_method"

    def assess(self, method: str, path: str, text: str) -> Assessment:
        """``path``: normalized path; ``text``: ``METHOD /path?query``."""
        score, category = self.base(method)
        categories = frozenset({category})
        reasons: list[str] = []
        if score:
            reasons.append(f"{category} request ({method})")
        verdicts: dict[str, Verdict] = {}
        for pr in self._path_rules:
            if ("*" in pr.methods or method in pr.methods) and pr.regex.match(path):
                verdicts[pr.rule_id] = pr.action
                reasons.append(f"rule {pr.rule_id}: {pr.action.value}")
        for rid, cat, action in self._category_rules:
            if cat in categories:
                verdicts[rid] = action
                reasons.append(f"rule {rid}: {action.value}")
        for rid, rx, action in self._pattern_rules:
            if rx.search(text):
                verdicts[rid] = action
                reasons.append(f"rule {rid}: {action.value}")
        return Assessment(score, categories, tuple(reasons), verdicts)


def split_target(target: str) -> tuple[str, str]:
    """(path, query) of an origin-form target; absolute-form is reduced to its path."""
    if not target.startswith("/"):
        if target == "*":
            return "*", ""
        # absolute-form (proxy style): keep path and query only
        scheme_end = target.find("://")
        if scheme_end >= 0:
            slash = target.find("/", scheme_end + 3)
            target = target[slash:] if slash >= 0 else "/"
        else:
            target = "/" + target
    path, _, query = target.partition("?")
    path = path.split("#", 1)[0]
    return path, query


def display_path(path: str) -> str:
    """A readable form of a normalized path for command text (escapes decoded where printable)."""
    decoded = unquote(path, errors="replace")
    return decoded if decoded.isprintable() else path
