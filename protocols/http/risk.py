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
a rule on ``/admin/**``. Backends read paths in more ways than RFC 3986 does,
so rules also see the other paths a backend may act on (``rule_paths``):
``;params`` stripped from each segment as servlet containers do
(``/admin;x/users``, ``/api/..;/admin``), every escape decoded (``%2F``,
``%5C``, ``%3B``, twice for double-decoding backends) and ``\\`` read as
``/``. Matching fails closed: ``mask``/``review``/``deny`` rules match when
any of those paths matches, case-insensitively; an ``allow`` rule only when
every one of them matches, case-sensitively.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, unquote_to_bytes

import re2

from hoopd.config import RiskLevel, RiskSection
from hoopd.model import Verdict
from hoopd.policy import LEVEL_SCORES, Assessment

from .config import PathRule

_SEVERITY = {Verdict.ALLOW: 0, Verdict.MASK: 1, Verdict.REVIEW: 2, Verdict.DENY: 3}

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
    return _remove_dots(path)


_PARAMS = re.compile(r";[^/]*")


def _remove_dots(path: str) -> str:
    """Dot segments and empty segments removed (no percent handling)."""
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    trailing = path.endswith(("/", "/.", "/..")) and bool(out)
    return "/" + "/".join(out) + ("/" if trailing else "")


def _strip_params(path: str) -> str:
    """Servlet-container reading: ``;params`` dropped from each segment
    (``/admin;x/users`` is ``/admin/users``, ``/api/..;/admin`` is ``/admin``)."""
    return _remove_dots(_PARAMS.sub("", path)) if ";" in path else path


def _decode_all(path: str) -> str:
    """A decoding backend's reading: every escape decoded (``%2F`` and
    ``%5C`` become separators), ``\\`` read as ``/``, then ``;params`` and
    dot segments removed."""
    if "%" in path:
        path = unquote_to_bytes(path).decode("utf-8", "surrogateescape")
    path = path.replace("\\", "/")
    if ";" in path:
        path = _PARAMS.sub("", path)
    return _remove_dots(path)


def rule_paths(npath: str) -> tuple[str, ...]:
    """The paths a backend may act on for the normalized path ``npath``,
    ``npath`` first: with ``;params`` stripped, then fully decoded (up to
    three times: double-decoding backends exist). One element for a plain path."""
    if not any(c in npath for c in ";%\\"):
        return (npath,)
    paths = [npath]
    current = _strip_params(npath)
    for _ in range(4):
        if current not in paths:
            paths.append(current)
        if not any(c in current for c in ";%\\"):
            break
        current = _decode_all(current)
    return tuple(paths)


_SURROGATE = re.compile("[\udc80-\udcff]")


def _re2_texts(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Texts for RE2, which takes UTF-8 only: a byte that decoding left
    undecodable (a surrogate escape, ``/caf%E9`` in Latin-1) is written as
    its escape again (``%E9``) instead of raising UnicodeEncodeError."""
    if all(t.isascii() for t in texts):
        return texts
    return tuple(
        _SURROGATE.sub(lambda m: f"%{ord(m.group()) - 0xDC00:02X}", t) for t in texts
    )


def query_readings(rest: str) -> tuple[str, ...]:
    """The query part of a command text (``?query`` or empty) as backends
    read it, as sent first: escapes decoded and ``+`` read as a space, up to
    three times (double-decoding backends exist). One element for a plain query."""
    readings = [rest]
    current = rest
    for _ in range(3):
        if "%" not in current and "+" not in current:
            break
        current = unquote(current.replace("+", " "), errors="surrogateescape")
        if current in readings:
            break
        readings.append(current)
    return tuple(readings)


def climbs_above_root(npath: str) -> bool:
    """True when a backend's reading of the normalized path ``npath``
    (``;params`` stripped as servlet containers do, escapes decoded, ``\\``
    read as ``/``, as in ``rule_paths``) has a ``..`` above the root:
    appended to the upstream's base path (``/v2``), it leaves it
    (``/v2/..;/admin`` is Tomcat's ``/admin``)."""
    if not any(c in npath for c in ";%\\"):
        return False  # normalized: no dot segment is left
    current = npath
    for _ in range(4):
        current = _PARAMS.sub("", current) if ";" in current else current
        depth = 0
        for seg in current.split("/")[1:]:
            if seg == "..":
                depth -= 1
                if depth < 0:
                    return True
            elif seg not in ("", "."):
                depth += 1
        if not any(c in current for c in "%\\"):
            return False
        if "%" in current:
            current = unquote_to_bytes(current).decode("utf-8", "surrogateescape")
        current = current.replace("\\", "/")
    return False


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
    """Case-sensitive (used for ``allow``: every reading must match)."""
    loose: re.Pattern[str]
    """Case-insensitive (used for the other actions: any reading matching is enough)."""
    action: Verdict


class HttpRiskScorer:
    def __init__(self, rules: tuple[PathRule, ...], risk: RiskSection | None) -> None:
        self._path_rules = [
            _CompiledPathRule(
                r.rule_id,
                r.methods,
                re.compile(glob_to_regex(r.path)),
                re.compile(glob_to_regex(r.path), re.IGNORECASE),
                r.action,
            )
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

    def assess_readings(
        self,
        methods: tuple[str, ...],
        path: str,
        text: str,
        targets: tuple[tuple[str, str], ...] = (),
    ) -> Assessment:
        """``assess`` for every method a backend may act on (``method_readings``,
        the request's first) and every target it may route by (``targets``:
        (normalized path, query) of ``target_readings``), failing closed as
        path readings do: the highest score and every category, reason and
        rule verdict of any of them, except that an ``allow`` verdict stands
        only when every reading gets it."""
        first = self.assess(methods[0], path, text)
        if len(methods) == 1 and not targets:
            return first
        rest = text[len(methods[0]) :]
        variants = [(m, path, m + rest, m) for m in methods[1:]]
        for tpath, tquery in targets:
            for m in methods:
                t = f"{m} {tpath}?{tquery}" if tquery else f"{m} {tpath}"
                variants.append((m, tpath, t, t))
        others = [self.assess(m, p, t) for m, p, t, _ in variants]
        everyone = [first, *others]
        verdicts: dict[str, Verdict] = {}
        for a in everyone:
            for rid, v in a.rule_verdicts.items():
                if v is Verdict.ALLOW and not all(
                    b.rule_verdicts.get(rid) is Verdict.ALLOW for b in everyone
                ):
                    continue
                if rid not in verdicts or _SEVERITY[v] > _SEVERITY[verdicts[rid]]:
                    verdicts[rid] = v
        reasons = list(first.reasons)
        for (_, _, _, label), a in zip(variants, others, strict=True):
            reasons.extend(
                f"{r} (the request may act as {label})" for r in a.reasons if r not in reasons
            )
        return Assessment(
            max(a.score for a in everyone),
            frozenset().union(*(a.categories for a in everyone)),
            tuple(dict.fromkeys(reasons)),
            verdicts,
        )

    def assess(self, method: str, path: str, text: str) -> Assessment:
        """``path``: normalized path; ``text``: ``METHOD /path?query``.

        Rules see every reading of the path (``rule_paths``) and fail closed:
        ``allow`` applies only when all readings match it (case-sensitively),
        any other action when one reading matches (case-insensitively for
        globs; pattern rules also search the texts with the path lower-cased)."""
        score, category = self.base(method)
        categories = frozenset({category})
        reasons: list[str] = []
        if score:
            reasons.append(f"{category} request ({method})")
        verdicts: dict[str, Verdict] = {}
        paths = rule_paths(path) if path != "*" else (path,)
        for pr in self._path_rules:
            if not ("*" in pr.methods or method in pr.methods):
                continue
            if pr.action is Verdict.ALLOW:
                hit = all(pr.regex.match(p) for p in paths)
            else:
                hit = any(pr.loose.match(p) for p in paths)
            if hit:
                verdicts[pr.rule_id] = pr.action
                reasons.append(f"rule {pr.rule_id}: {pr.action.value}")
        for rid, cat, action in self._category_rules:
            if cat in categories:
                verdicts[rid] = action
                reasons.append(f"rule {rid}: {action.value}")
        if self._pattern_rules:
            if text.startswith(f"{method} {path}"):
                rests = query_readings(text[len(method) + 1 + len(path) :])
                strict = tuple(dict.fromkeys(f"{method} {p}{r}" for p in paths for r in rests))
                loose = tuple(
                    dict.fromkeys(
                        strict
                        + tuple(f"{method} {p.lower()}{r}" for p in paths for r in rests)
                        + tuple(f"{method} {p.lower()}{r.lower()}" for p in paths for r in rests)
                    )
                )
            else:
                strict = loose = (text,)
            strict, loose = _re2_texts(strict), _re2_texts(loose)
            for rid, rx, action in self._pattern_rules:
                if action is Verdict.ALLOW:
                    hit = all(rx.search(t) for t in strict)
                else:
                    hit = any(rx.search(t) for t in loose)
                if hit:
                    verdicts[rid] = action
                    reasons.append(f"rule {rid}: {action.value}")
        return Assessment(score, categories, tuple(reasons), verdicts)


METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
"""Request fields in which backends take the method to act on (Google APIs,
Express's method-override, Rack, Symfony, Laravel, ASP.NET)."""
_QUERY_SEP = re.compile(r"[&;]")


def method_readings(method: str, override_values: list[str], query: str) -> tuple[str, ...]:
    """The methods a backend may act on, ``method`` first: the method
    upper-cased (Werkzeug and Jetty read ``delete`` as ``DELETE``), the values
    of method-override fields and of a ``_method`` query parameter (Symfony,
    Laravel, Express), upper-cased; ``GET`` for ``HEAD``, which Express,
    Flask, Django, Rails, Go's ServeMux and aiohttp answer with the GET
    handler (its side effects included). One element for a plain request."""
    found = [method]
    if not method.isupper():
        found.append(method.upper())
    for value in override_values:
        found.extend(v.strip().upper() for v in value.split(",") if v.strip())
    if "method" in query.lower():
        for pair in _QUERY_SEP.split(query):
            key, _, value = pair.partition("=")
            if unquote(key.replace("+", " "), errors="replace").strip().lower() == "_method":
                value = unquote(value.replace("+", " "), errors="replace").strip().upper()
                if value:
                    found.append(value)
    if "HEAD" in found:
        found.append("GET")
    return tuple(dict.fromkeys(found))


TARGET_OVERRIDE_HEADERS = ("x-original-url", "x-rewrite-url")
"""Request fields some backends route by instead of the request line's
target (Symfony and Zend Framework before 2018, IIS URL Rewrite setups)."""


def target_readings(values: list[str]) -> tuple[tuple[str, str], ...]:
    """(normalized path, query) of each target-override field value."""
    found: list[tuple[str, str]] = []
    for value in values:
        value = value.strip()
        if not value:
            continue
        path, query = split_target(value)
        found.append((normalize_path(path) if path != "*" else "/", query))
    return tuple(dict.fromkeys(found))


_BODY_OVERRIDE = re.compile(
    rb"(?:^|[&;])[ \t]*(?:_|%5f)method[ \t]*=[ \t]*([^&;\r\n]{0,64})"  # a form field
    rb'|"_method"[ \t\r\n]*:[ \t\r\n]*"([^"\\]{0,64})"',  # a JSON key (Laravel reads JSON input)
    re.IGNORECASE | re.MULTILINE,
)
_MULTIPART_NAME = re.compile(rb'name[ \t]*=[ \t]*"?_method\b"?[^\r\n]{0,256}\r?\n', re.IGNORECASE)
"""A multipart part named ``_method``: the part's header line (bounded: no
backtracking over the body, whatever a client sends)."""
_METHOD_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]{1,32}")
MAX_READINGS = 8
"""Method readings of one request beyond which it is refused (each is
judged, once per target; no backend takes more than one override)."""
MAX_TARGETS = 2
"""Target readings (``X-Original-URL``, ``X-Rewrite-URL``) beyond which a
request is refused."""


def body_method_readings(body: bytes) -> tuple[str, ...]:
    """Methods a ``_method`` field of a request body names (Rails' default
    Rack::MethodOverride, Symfony and Laravel read it from forms, Laravel
    from JSON too), upper-cased; whatever the body's type says (fail closed).
    Linear in the body: every pattern is bounded."""
    if b"method" not in body.lower():
        return ()
    raws: list[bytes] = [
        next(g for g in m.groups() if g is not None) for m in _BODY_OVERRIDE.finditer(body)
    ]
    for m in _MULTIPART_NAME.finditer(body):
        # the part's value: the line after the blank line ending its header
        pos = m.end()
        blank = pos if body[pos : pos + 1] == b"\n" or body[pos : pos + 2] == b"\r\n" else -1
        if blank < 0:
            ends = [i for i in (body.find(b"\n\r\n", pos, pos + 2048), body.find(b"\n\n", pos, pos + 2048)) if i >= 0]
            if not ends:
                continue
            blank = min(ends) + 1
        start = blank + (2 if body[blank : blank + 2] == b"\r\n" else 1)
        raws.append(re.split(rb"[\r\n]", body[start : start + 64], maxsplit=1)[0])
    found: list[str] = []
    for raw in raws:
        value = unquote(raw.decode("latin-1").replace("+", " "), errors="replace").strip().upper()
        if _METHOD_TOKEN.fullmatch(value):
            found.append(value)
    return tuple(dict.fromkeys(found))


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
