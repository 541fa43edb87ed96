"""Regex backend: google-re2 (linear time, multi-pattern DFA) or Python ``re``.

The engine talks to a :class:`Compiled` only: ``search``/``match`` return the
list of group spans (``[(start, end), ...]``, ``(-1, -1)`` for a group that did
not take part) or ``None``. With re2 this calls the extension directly, without
the per-call generator and ``Match`` object of ``re2.search``.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

try:
    import re2 as _re2

    HAVE_RE2 = True
except ImportError:  # pragma: no cover - exercised only where re2 is missing
    _re2 = None
    HAVE_RE2 = False
    warnings.warn(
        "google-re2 is not installed: masking falls back to Python's re module, which is "
        "much slower and not linear-time; install google-re2",
        RuntimeWarning,
        stacklevel=2,
    )

Spans = list[tuple[int, int]]


class Compiled:
    """A compiled bytes pattern with span-returning search/match."""

    __slots__ = (
        "_full_anchor",
        "_match_anchor",
        "_py",
        "_rx",
        "_search_anchor",
        "groupindex",
        "groups",
        "pattern",
        "raw_full",
        "raw_search",
    )

    def __init__(self, pattern: bytes, *, max_mem: int = 64 << 20, never_nl: bool = False) -> None:
        self.pattern = pattern
        self._py: Any = None
        if HAVE_RE2:
            assert _re2 is not None
            opts = _re2.Options()
            opts.max_mem = max_mem
            opts.log_errors = False
            opts.never_nl = never_nl
            try:
                compiled = _re2.compile(pattern, opts)
            except _re2.error as exc:
                msg = exc.args[0] if exc.args else "invalid RE2 pattern"
                if isinstance(msg, bytes):
                    msg = msg.decode("utf-8", "replace")
                raise ValueError(str(msg)) from None
            self._rx: Any = compiled._regexp
            anchor = _re2._Anchor
            self._search_anchor = anchor.UNANCHORED
            self._match_anchor = anchor.ANCHOR_START
            self._full_anchor = anchor.ANCHOR_BOTH
            self.groups: int = compiled.groups
            self.groupindex: dict[str, int] = {
                (k.decode() if isinstance(k, bytes) else k): v
                for k, v in compiled.groupindex.items()
            }
        else:  # pragma: no cover
            try:
                self._py = re.compile(pattern)
            except re.error as exc:
                raise ValueError(str(exc)) from None
            self.groups = self._py.groups
            self.groupindex = dict(self._py.groupindex)
        self.raw_search: Callable[[bytes, int, int], Spans]
        self.raw_full: Callable[[bytes, int, int], Spans]
        if self._py is None:
            # C-level partials: no Python frame per call on the hot path
            self.raw_search = functools.partial(self._rx.Match, self._search_anchor)
            self.raw_full = functools.partial(self._rx.Match, self._full_anchor)
        else:  # pragma: no cover
            self.raw_search = self._py_raw_search
            self.raw_full = self._py_raw_full

    def _py_raw_search(self, data: bytes, pos: int, endpos: int) -> Spans:  # pragma: no cover
        """Like re2's Match: spans always, ``(-1, -1)`` at [0] when there is no match."""
        m = self._py.search(data, pos, endpos)
        return [(-1, -1)] if m is None else list(m.regs)

    def _py_raw_full(self, data: bytes, pos: int, endpos: int) -> Spans:  # pragma: no cover
        m = self._py.fullmatch(data, pos, endpos)
        return [(-1, -1)] if m is None else list(m.regs)

    def search(self, data: bytes, pos: int, endpos: int) -> Spans | None:
        if self._py is None:
            spans: Spans = self._rx.Match(self._search_anchor, data, pos, endpos)
            return None if spans[0][0] < 0 else spans
        m = self._py.search(data, pos, endpos)  # pragma: no cover
        return None if m is None else list(m.regs)  # pragma: no cover

    def match(self, data: bytes, pos: int, endpos: int) -> Spans | None:
        if self._py is None:
            spans: Spans = self._rx.Match(self._match_anchor, data, pos, endpos)
            return None if spans[0][0] < 0 else spans
        m = self._py.match(data, pos, endpos)  # pragma: no cover
        return None if m is None else list(m.regs)  # pragma: no cover

    def fullmatch(self, data: bytes, pos: int, endpos: int) -> Spans | None:
        if self._py is None:
            spans: Spans = self._rx.Match(self._full_anchor, data, pos, endpos)
            return None if spans[0][0] < 0 else spans
        m = self._py.fullmatch(data, pos, endpos)  # pragma: no cover
        return None if m is None else list(m.regs)  # pragma: no cover

    def first_byte_range(self) -> tuple[int, int]:
        """Inclusive range that holds the first byte of every match (0..255 if unknown)."""
        if self._py is None:
            try:
                ok, lo, hi = self._rx.PossibleMatchRange(1)
            except Exception:  # pragma: no cover - defensive
                return 0, 255
            if ok and lo and hi:
                return lo[0], hi[0]
        return 0, 255


def check_pattern(pattern: str) -> None:
    """Raise ValueError with a readable reason if ``pattern`` is unusable as a rule."""
    compiled = Compiled(pattern.encode("utf-8"))
    if compiled.search(b"", 0, 0) is not None:
        raise ValueError("pattern matches the empty string")


def copy_class_opening(pattern: str, i: int, out: list[str]) -> int:
    """Copy the ``[`` at ``i`` and what belongs to it literally (``^``, then a
    ``]`` right after ``[`` or ``[^``, which is a literal, not the end);
    return the index after them."""
    out.append("[")
    i += 1
    n = len(pattern)
    if i < n and pattern[i] == "^":
        out.append("^")
        i += 1
    if i < n and pattern[i] == "]":
        out.append("]")
        i += 1
    return i


def pattern_pieces(pattern: str) -> Iterator[tuple[int, str, bool]]:
    """``(index, piece, rewritable)`` for each piece of a pattern: an escape
    (two characters), a character class's opening (``copy_class_opening``) or
    one character. ``rewritable`` is False inside a class (and for its
    opening and closing ``]``): the rewrites of a pattern (``decapture``,
    ``engine.loosen``, the postgres prefilter's ``strip_assertions``) only
    touch what stands outside classes, so they share this one walk."""
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            yield i, pattern[i : i + 2], not in_class
            i += 2
        elif in_class:
            in_class = c != "]"
            yield i, c, False
            i += 1
        elif c == "[":
            opening: list[str] = []
            end = copy_class_opening(pattern, i, opening)
            yield i, "".join(opening), False
            in_class = True
            i = end
        else:
            yield i, c, True
            i += 1


def decapture(pattern: str) -> str:
    """Turn every capturing group into a non-capturing one (``(x)``, ``(?P<n>x)`` -> ``(?:x)``).

    The joined scan pattern must have no captures: with captures RE2 runs its
    slower submatch engine over the (large) joined program for every match."""
    out: list[str] = []
    skip_to = 0  # past a group's name
    for i, piece, rewritable in pattern_pieces(pattern):
        if i < skip_to:
            continue
        if rewritable and piece == "(":
            if pattern.startswith("(?P<", i):
                skip_to = pattern.index(">", i) + 1
                out.append("(?:")
                continue
            if not pattern.startswith("(?", i):
                out.append("(?:")
                continue
        out.append(piece)
    return "".join(out)


_NAMED_GROUP = re.compile(r"(?<!\\)\(\?P<[A-Za-z_][A-Za-z0-9_]*>")


_RE2_ONLY = ("\\S", "\\p", "\\P", "\\C", "\\Q", "\\E", "\\z", "\\A", "(?s", "(?m", "(?U")


def python_equivalent(pattern: str) -> str | None:
    """The same pattern for Python ``re`` on ASCII text, or None if unsure.

    RE2's ``\\s`` is ``[\\t\\n\\f\\r ]`` while Python's also holds ``\\v``: it is
    spelled out. Leftmost-first captures are the same in both engines (RE2 follows
    Perl's submatch rules), as are ``\\b`` (ASCII words, the byte before ``pos`` is
    context), classes, counted repetition and ``(?i:...)`` on ASCII text. Patterns
    using anything else that could differ (anchors, Unicode classes, flags
    other than ``i``) are refused (None)."""
    if any(x in pattern for x in _RE2_ONLY):
        return None
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\":
            esc = pattern[i : i + 2]
            if esc == "\\s":
                out.append("\\t\\n\\f\\r " if in_class else "[\\t\\n\\f\\r ]")
            else:
                out.append(esc)
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c in "^$":
            return None
        elif c == "[":
            in_class = True
            i = copy_class_opening(pattern, i, out)
            continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=256)
def python_fullmatch(pattern: str) -> Callable[[bytes, int, int], Any] | None:
    """``re.fullmatch(data, pos, endpos)`` of :func:`python_equivalent` (cached), or None."""
    py = python_equivalent(pattern)
    if py is None:
        return None
    try:
        return re.compile(py.encode("utf-8")).fullmatch
    except re.error:
        return None


def strip_group_names(pattern: str) -> str:
    """``(?P<name>x)`` -> ``(x)``, keeping group numbers, so patterns can be joined."""
    return _NAMED_GROUP.sub("(", pattern)


@functools.lru_cache(maxsize=256)
def compile_cached(pattern: str, never_nl: bool) -> Compiled:
    """Compiled patterns are shared between maskers with the same rules, so the
    lazily built RE2 DFA stays warm across connections (RE2 objects are thread-safe)."""
    return Compiled(pattern.encode("utf-8"), never_nl=never_nl)


class _PySet:  # pragma: no cover - fallback only
    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._rx = [re.compile(p.encode()) for p in patterns]

    def Match(self, text: bytes) -> list[int] | None:
        out = [i for i, rx in enumerate(self._rx) if rx.fullmatch(text)]
        return out or None


@functools.lru_cache(maxsize=64)
def make_set(patterns: tuple[str, ...]) -> Any:
    """An RE2 Set (anchored both ends): which patterns match a whole candidate span."""
    if not HAVE_RE2:  # pragma: no cover
        return _PySet(patterns)
    assert _re2 is not None
    opts = _re2.Options()
    opts.max_mem = 64 << 20
    opts.log_errors = False
    opts.never_nl = True
    rset = _re2._re2.Set(_re2._Anchor.ANCHOR_BOTH, opts)
    for p in patterns:
        if rset.Add(p.encode()) < 0:
            raise ValueError(f"cannot add pattern to RE2 set: {p!r}")
    if not rset.Compile():
        raise ValueError("cannot compile RE2 set")
    return rset
