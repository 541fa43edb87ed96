"""The masking engine: one RE2 pass for every single-line rule, validators, replacements.

How a buffer is scanned (``Masker._find``):

* All single-line rules (built-in recognizers and custom regexes) are joined
  into one RE2 alternation without capturing groups (captures would make RE2
  run its submatch engine over the whole joined program for every match),
  compiled with ``never_nl`` so that no match crosses a newline. RE2 finds the
  leftmost candidate in one DFA pass.
* The rule that produced the candidate is named by one RE2 ``Set`` call over
  the candidate (the lowest-numbered rule that matches it whole); a rule with
  value groups then runs its own small capturing regex over the candidate.
* PEM private keys (the only multi-line recognizer) are found by searching
  for ``-----BEGIN `` and matched anchored there. A single-line match never
  runs into a ``-----BEGIN `` header, private key or not (the single-line
  search stops at it).
* A candidate is confirmed in Python: boundary bytes (RE2 has no lookaround),
  the validator (Luhn, mod-97, ...), already-masked values, allow-lists. If it
  fails, the rules after it are tried anchored at the same position, then the
  scan restarts one byte later -- so an SSN inside a digit run that failed
  Luhn as a card is still found.
* Every match is computed inside a window of ``window`` bytes from its start;
  this is what lets the stream masker hold back a bounded number of bytes and
  still produce exactly the whole-buffer output.

The optional C++ accelerator (``masking/_re2scan.cpp``, built by setup.py when
g++ and the system RE2, libre2-dev, are there) does the search and the Set call
of a batch of candidates in one call (``Scanner.scan``); it is used when it is
importable, google-re2 is installed and ``HOOPD_PURE_PYTHON`` is not set (or per
masker: ``Masker(..., accelerate=False)``). The Python loop over google-re2 is
the reference: tests hold the two to the same output.

A batched candidate stands for "the leftmost match of a search from ``from``
to ``endpos``", ``from`` being where the previous candidate of the batch ended
(one byte later after an empty match). Which match starts where does not depend
on where a search starts (the text before it is context either way), so the
candidate is also the answer for a search from any position in [from, its
start] to the same ``endpos``; the loop takes it only then, and otherwise asks
the scanner again: after a rejected or trimmed candidate (the scan resumes
inside its span, before ``from``) an anchored match at each position up to
``from`` (``Scanner.first_before``; the first that matches is the leftmost match,
and if none does the batched candidate still is); when the batch is used up,
``endpos`` changed (a PEM header) or the loop went past the candidate, a new
batch.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._regex import (
    HAVE_RE2,
    Compiled,
    Spans,
    compile_cached,
    decapture,
    make_set,
    pattern_pieces,
    python_fullmatch,
    strip_group_names,
)
from .config import MaskingConfig, Replacement, Rule
from .literals import (
    INJECTED_ID,
    INJECTED_LABEL,
    literal_forms,
    literal_pattern,
    max_form_bytes,
    prefilter_safe,
)
from .paths import PathSet, parse_path
from .recognizers import BY_ID, EMPTY, KV_KEYS, Recognizer
from .replacements import ReplacementSpec, constant_replacement, looks_masked, make_replacer
from .validators import TRIMMING, Validator, card, ipv6, key_value

if TYPE_CHECKING:
    from .jsonmask import JsonMasker
    from .rows import Column, RowMasker
    from .stream import StreamMasker

Counts = dict[str, int]
Edit = tuple[int, int, bytes, str]
"""(start, end, replacement, rule id)"""

KV_ID = "secret_key_value"
_KV_NAME = Compiled(("(?:" + KV_KEYS + ")").encode())
PEM_START = b"-----BEGIN "
_PEM_FIND = Compiled(PEM_START).raw_search
"""RE2 finds the literal several times faster than ``bytes.find`` (whose skip
table keys on the needle's last byte, a space)."""
PEM_ID = "pem_private_key"
PEM_TAIL = 96
"""A PEM candidate is settled once this many bytes follow it (longest header/END line)."""
_CTX = 16
_NO_MATCH: Spans = [(-1, -1)]
_DIGITS = frozenset(b"0123456789")
_SKIP = -1
_BATCH = 256
"""Candidates per accelerated scan call (fewer when one starts at or past ``limit``)."""
_BATCH_MIN = 4
"""The fewest asked for after batches were dropped with candidates unused (see
``_rescan``)."""
_CHUNK = 1 << 18
"""Searches for candidates stop this many bytes (at least 2 windows) past where
they start (``_find``): a match that runs to the end of a long line (a key
word followed by megabytes without a stop byte, ``token:token:...``) would
otherwise be searched to that end again for every candidate, quadratic."""
_FIRST_BEFORE_MAX = 64
"""Longest gap tried with anchored matches (``Scanner.first_before``); past it
one search (anchored attempts that each run to the end of a long line would
make a long rejected candidate quadratic)."""
_Batch = list[tuple[int, int, int]]
_NO_BATCH: _Batch = [(-2, -2, -2)]

_re2scan: Any = None
if HAVE_RE2 and os.environ.get("HOOPD_PURE_PYTHON", "") in ("", "0"):
    with contextlib.suppress(ImportError):
        from . import _re2scan
_MEMO_SIZE: int = getattr(_re2scan, "MEMO_SIZE", 0)


def accelerated() -> bool:
    """Whether maskers use the C++ candidate scan (masking._re2scan) by default."""
    return _re2scan is not None


_Side = tuple[bytes, bytes, int, bytes, int]
"""(anchor, rule pattern, maxleft, stop bytes, tail) of a side rule (see ``SideForm``)."""


@functools.lru_cache(maxsize=64)
def _make_scanner(
    pattern: bytes,
    parts: tuple[str, ...],
    window: int,
    scan: bytes | None = None,
    lookback: int = 0,
    left: bytes = b"",
    sides: tuple[_Side, ...] = (),
    checks: tuple[_Check, ...] | None = None,
) -> Any:
    """The accelerator's scanner for a joined pattern and its Set (shared like
    ``compile_cached``: RE2 objects are thread-safe and their DFAs stay warm),
    with the DFA-friendly scan pattern and side rules (see ``_scan_plan``) and
    the rules' cheap checks (``_Rule.check``; None: every candidate is returned)."""
    assert _re2scan is not None
    return _re2scan.Scanner(
        pattern,
        [p.encode() for p in parts],
        True,
        window,
        scan,
        lookback,
        left,
        list(sides),
        None if checks is None else list(checks),
    )


_Check = tuple[bytes, bytes, bool, bool, bool, int, int, int, bytes]
"""(left, right, dotted, trims, has value groups, validator code, first-byte
range lo, hi, the pattern without assertions) of a rule, for the C++ scan to
pass over the candidates the loop would only reject (``_re2scan.cpp``,
``noop_candidate``)."""

_VALIDATOR_CODES: dict[Validator, int] = {card: 2, ipv6: 3}
"""Validators the C++ scan runs itself (same result, property-tested): card
whole, ipv6 for the values it refuses for having too few hex digits (the rest
is Python's); any other is 1: only Python can say (0: no validator)."""

_ASSERTIONS = frozenset("bBAz")


def loosen(pattern: str) -> str:
    """``pattern`` with its assertions (``\\b``, ``\\B``, ``\\A``, ``\\z``, ``^``,
    ``$``) taken out: it matches wherever the pattern does, whatever the text
    around (the C++ scan asks it whether a rule is absent from the rest of a
    buffer, which must hold for a candidate the Set names on its own too).
    "" (never asked) for a pattern with ``\\Q`` (quoted text is not walked)."""
    if "\\Q" in pattern:
        return ""
    out: list[str] = []
    for _, piece, rewritable in pattern_pieces(pattern):
        assertion = piece in ("^", "$") or (piece[0] == "\\" and piece[1:] in _ASSERTIONS)
        out.append("(?:)" if rewritable and assertion else piece)
    return "".join(out)


def _scan_plan(
    rules: Sequence[tuple[str, str]],
) -> tuple[bytes | None, int, bytes, tuple[_Side, ...]]:
    """What the C++ scan searches instead of the joined pattern, for rules
    (id, decaptured pattern) in order: the joined scan forms (built-ins with a
    ``ScanForm`` start at their rare part; the others as they are; None if every
    rule is a side rule), the longest lookback and the union of the left bytes
    of the scan forms, and the side rules. Which match is leftmost, and the
    match, still come from the full joined pattern (see ``_re2scan.cpp``)."""
    parts: list[str] = []
    lookback = 0
    left: set[int] = set()
    sides: list[_Side] = []
    for rid, pat in rules:
        rec = BY_ID.get(rid)
        if rec is not None and decapture(rec.pattern) != pat:
            rec = None  # not the built-in's pattern: the forms do not apply
        if rec is not None and rec.side is not None:
            sd = rec.side
            sides.append((sd.anchor, pat.encode(), sd.maxleft, bytes(sorted(sd.stop)), sd.tail))
            continue
        if rec is not None and rec.scan is not None:
            pat = decapture(rec.scan.pattern)
            lookback = max(lookback, rec.scan.lookback)
            left |= rec.scan.left
        parts.append("(?:" + pat + ")")
    scan = "|".join(parts).encode() if parts else None
    return scan, lookback, bytes(sorted(left)), tuple(sides)


@dataclass(eq=False)
class _Rule:
    id: str
    label: str
    order: int
    regex: Compiled
    local_values: tuple[int, ...]
    validator: Validator | None
    left: frozenset[int]
    right: frozenset[int]
    dotted: bool
    replace: Callable[[bytes], bytes]
    allow_exact: frozenset[bytes]
    allow_rx: Compiled | None
    lo: int
    hi: int
    max_len: int
    min_len: int = 1
    needs: tuple[tuple[bytes, ...], ...] = ()
    prefixes: tuple[bytes, ...] = ()
    plen: int = 0
    const: bytes | None = None
    """The replacement when it does not depend on the value (placeholders)."""
    trims: bool = False
    """The validator may accept a shorter prefix (see ``validators.TRIMMING``)."""
    pyfull: Callable[[bytes, int, int], Any] | None = None
    """Python ``re`` fullmatch of the same pattern, for the value groups of an ASCII
    candidate (built-ins with value groups only): a fraction of the cost of RE2's
    submatch engines (BitState/NFA) on these programs, same captures."""


_Fast = tuple[
    str,
    frozenset[int],
    frozenset[int],
    Validator | None,
    bool,
    tuple[int, ...],
    Callable[[bytes, int, int], Spans],
    Callable[[bytes, int, int], Any] | None,
    bool,
    bytes | None,
    Callable[[bytes], bytes],
    frozenset[bytes],
    Compiled | None,
]
"""A rule's fields for the scan's fast path, by rule order (one tuple unpack
instead of a dozen attribute loads per candidate)."""


def _replacement_for(config: MaskingConfig, rid: str, category: str) -> ReplacementSpec:
    for key in (rid, category, "default"):
        r = config.replacements.get(key)
        if r is not None:
            return r.spec()
    return ReplacementSpec()


class Masker:
    """A compiled per-connection masker. Thread-safe for ``mask_*``; streams are per use."""

    def __init__(
        self,
        config: MaskingConfig,
        hmac_key: bytes,
        *,
        accelerate: bool | None = None,
        literals: Sequence[str] = (),
    ) -> None:
        """``accelerate``: None uses the C++ scan when it is available (see
        :func:`accelerated`); False never; True requires it (RuntimeError if the
        extension is not built or HOOPD_PURE_PYTHON is set).

        ``literals``: secrets the gateway injects upstream, masked wherever they
        appear (rule ``injected_credential``, see ``masking.literals``) even
        when ``config.enabled`` is false."""
        self.config = config
        self._hmac_key = hmac_key
        self._rules: list[_Rule] = []
        self._pem: _Rule | None = None
        self._main: Compiled | None = None
        self._parts: tuple[str, ...] = ()
        self._table: list[tuple[_Rule, ...]] = []
        self._idset: Any = None
        self._fast: list[_Fast] = []
        self._scan: Callable[..., _Batch] | None = None
        self._first_before: Callable[..., tuple[int, int, int] | None] = _no_first
        self._plan: tuple[bytes | None, int, bytes, tuple[_Side, ...]] = (None, 0, b"", ())
        self.window = 64
        self.pem_window = 0
        # field-name and path rules: (rule id, compiled glob regex, replacer)
        self._field_rules: list[tuple[str, re.Pattern[str], Callable[[bytes], bytes]]] = []
        self._value_replacers: dict[str, Callable[[bytes], bytes]] = {}
        self._field_cache: dict[tuple[str, str | None], str | None] = {}
        self.paths = PathSet([])
        self._kv_rule: _Rule | None = None
        self._prefilter = False
        forms = literal_forms(literals)
        self._lit: Compiled | None = None
        """The injected secrets' forms alone (``mask_injected``, overlap checks)."""
        self._lit_len = max_form_bytes(forms)
        self._lit_const = b"[" + INJECTED_LABEL.encode() + b"]"
        if forms:
            self._rules.append(self._literal_rule(forms))
        if config.enabled:
            self._compile()
        self._finish()
        # The byte-class pre-filter knows only the built-ins (and literals
        # no value it passes can contain).
        self._prefilter = (
            bool(self._rules)
            and all(r.id in BY_ID or r.id == INJECTED_ID for r in self._rules)
            and prefilter_safe(forms)
        )
        self._kv_rule = next((r for r in self._rules if r.id == KV_ID), None)
        if accelerate and _re2scan is None:
            raise RuntimeError(
                "masking._re2scan is not available (not built, google-re2 missing "
                "or HOOPD_PURE_PYTHON set)"
            )
        if accelerate is not False and _re2scan is not None and self._main is not None:
            try:
                self._plan = _scan_plan(
                    [(r.id, p[3:-1]) for r, p in zip(self._rules, self._parts, strict=True)]
                )
                checks = (
                    tuple(
                        self._check(r, p[3:-1])
                        for r, p in zip(self._rules, self._parts, strict=True)
                    )
                    if len(self._rules) <= 64
                    else None
                )
                scanner = _make_scanner(
                    self._main.pattern, self._parts, self.window, *self._plan, checks
                )
                self._scan = scanner.scan
                self._first_before = scanner.first_before
            except ValueError:
                # a pattern google-re2 takes but the system RE2 does not (an
                # older version): this masker keeps the Python loop
                if accelerate:
                    raise
        self.accelerated = self._scan is not None

    # ------------------------------------------------------------------ building
    @staticmethod
    def _check(rule: _Rule, pattern: str) -> _Check:
        """What the C++ scan needs to tell that the loop would only reject a
        candidate (``_Check``); ``pattern`` is the rule's decaptured pattern."""
        return (
            bytes(sorted(rule.left)),
            bytes(sorted(rule.right)),
            rule.dotted,
            rule.trims,
            bool(rule.local_values),
            0 if rule.validator is None else _VALIDATOR_CODES.get(rule.validator, 1),
            rule.lo,
            rule.hi,
            loosen(pattern).encode(),
        )

    def _allow_for(self, rid: str) -> tuple[frozenset[bytes], Compiled | None]:
        exact: set[bytes] = set()
        pats: list[str] = []
        for entry in self.config.allow:
            if entry.rules and rid not in entry.rules:
                continue
            if entry.value is not None:
                exact.add(entry.value.encode())
            elif entry.pattern is not None:
                pats.append(f"(?:{strip_group_names(entry.pattern)})")
        rx = Compiled(("^(?:" + "|".join(pats) + ")$").encode()) if pats else None
        return frozenset(exact), rx

    def _make_rule(
        self,
        rid: str,
        label: str,
        pattern: str,
        value_names: Callable[[str], bool],
        spec: ReplacementSpec,
        rec: Recognizer | None,
        max_len: int,
    ) -> _Rule:
        try:
            regex = compile_cached(pattern, rid != PEM_ID)
        except ValueError as exc:
            raise ValueError(f"masking rule {rid!r}: invalid RE2 pattern: {exc}") from None
        local_values = tuple(sorted(i for n, i in regex.groupindex.items() if value_names(n)))
        allow_exact, allow_rx = self._allow_for(rid)
        lo, hi = regex.first_byte_range()
        validator = rec.validator if rec else None
        return _Rule(
            id=rid,
            label=label,
            order=0,
            regex=regex,
            local_values=local_values,
            validator=validator,
            left=rec.left if rec else EMPTY,
            right=rec.right if rec else EMPTY,
            dotted=rec.dotted if rec else False,
            replace=make_replacer(
                spec,
                label,
                self._hmac_key,
                rec.keep_first if rec else 0,
                rec.keep_last if rec else 0,
            ),
            allow_exact=allow_exact,
            allow_rx=allow_rx,
            lo=lo,
            hi=hi,
            max_len=max_len,
            min_len=rec.min_len if rec else 1,
            needs=rec.needs if rec else (),
            prefixes=rec.prefixes if rec else (),
            plen=max((len(x) for x in rec.prefixes), default=0) if rec else 0,
            const=constant_replacement(spec, label),
            trims=validator in TRIMMING,
            pyfull=python_fullmatch(pattern) if HAVE_RE2 and rec and local_values else None,
        )

    def _compile(self) -> None:
        cfg = self.config
        for rid in cfg.recognizers.active_ids():
            rec = BY_ID[rid]
            rule = self._make_rule(
                rid,
                rec.label,
                rec.pattern,
                lambda n: n == "v" or (n.startswith("v") and n[1:].isdigit()),
                _replacement_for(cfg, rid, rec.category),
                rec,
                rec.max_len,
            )
            if rid == PEM_ID:
                self._pem = rule
                self.pem_window = rec.max_len
            else:
                self._rules.append(rule)
        for crule in cfg.rules:
            spec = (
                crule.replace.spec() if crule.replace else _replacement_for(cfg, crule.id, "custom")
            )
            if crule.pattern is not None:
                pat = f"(?i:{crule.pattern})" if crule.ignore_case else crule.pattern
                self._rules.append(
                    self._make_rule(
                        crule.id,
                        crule.display_label,
                        pat,
                        lambda n: n == "value",
                        spec,
                        None,
                        crule.max_length,
                    )
                )
            else:
                self._add_structural(crule, spec)

    def _literal_rule(self, forms: list[str]) -> _Rule:
        """The injected-secret rule: first in order (at one position it wins
        over every recognizer), no boundaries, allow-list or validator; a
        placeholder whatever ``replacements`` says (an hmac of a secret would
        let a client test guesses of it)."""
        pattern = literal_pattern(forms)
        regex = compile_cached(pattern, True)
        self._lit = regex
        lo, hi = regex.first_byte_range()
        const = self._lit_const
        return _Rule(
            id=INJECTED_ID,
            label=INJECTED_LABEL,
            order=0,
            regex=regex,
            local_values=(),
            validator=None,
            left=EMPTY,
            right=EMPTY,
            dotted=False,
            replace=lambda _value: const,
            allow_exact=frozenset(),
            allow_rx=None,
            lo=lo,
            hi=hi,
            max_len=self._lit_len,
            const=const,
        )

    def _finish(self) -> None:
        """The joined pattern, Set, first-byte table and fast-path tuples of
        every single-line rule."""
        if self._rules:
            parts = []
            for order, rule in enumerate(self._rules):
                rule.order = order
                pat = decapture(rule.regex.pattern.decode())
                parts.append("(?:" + pat + ")")
            self._parts = tuple(parts)
            self._main = compile_cached("|".join(parts), True)
            self._idset = make_set(self._parts)
            # an injected secret overlapping a match is masked with it
            # (_widen), so matches are settled that much further on
            self.window = max(r.max_len for r in self._rules) + 1 + self._lit_len
            table: list[list[_Rule]] = [[] for _ in range(256)]
            for rule in self._rules:
                for c in range(rule.lo, min(rule.hi, 255) + 1):
                    table[c].append(rule)
            self._table = [tuple(t) for t in table]
            self._fast = [
                (
                    r.id,
                    r.left,
                    r.right,
                    r.validator,
                    r.trims,
                    r.local_values,
                    r.regex.raw_full,
                    r.pyfull,
                    r.dotted,
                    r.const,
                    r.replace,
                    r.allow_exact,
                    r.allow_rx,
                )
                for r in self._rules
            ]

    def _add_structural(self, crule: Rule, spec: ReplacementSpec) -> None:
        replacer = make_replacer(spec, crule.display_label, self._hmac_key)
        self._value_replacers[crule.id] = replacer
        if crule.fields:
            rx = re.compile("|".join(fnmatch.translate(f.lower()) for f in crule.fields))
            self._field_rules.append((crule.id, rx, replacer))
        if crule.json_paths:
            self.paths.paths.extend((crule.id, parse_path(p)) for p in crule.json_paths)

    # ------------------------------------------------------------------ scanning
    def _accept(
        self, rule: _Rule, data: bytes, p: int, e: int, spans: Spans, values: tuple[int, ...]
    ) -> tuple[int, int, int] | None:
        """Confirm a candidate. Returns (value start, value end, match end); value
        start == _SKIP means "leave it, continue after it"; None means rejected."""
        if p and data[p - 1] in rule.left:
            return None
        if rule.validator is not None:
            n = rule.validator(data[p:e])
            if not n:
                return None
            e = p + n
        if e < len(data):
            c = data[e]
            if c in rule.right:
                return None
            if rule.dotted and c == 46 and e + 1 < len(data) and data[e + 1] in _DIGITS:
                return None
        vs, ve = p, e
        for g in values:
            s = spans[g]
            if s[0] >= 0:
                vs, ve = s[0], min(s[1], e)
                break
        value = data[vs:ve]
        if not value or (
            (value[0] == 91 or 42 in value) and looks_masked(value) and rule.id != INJECTED_ID
        ):
            return _SKIP, 0, e
        if rule.allow_exact and value in rule.allow_exact:
            return _SKIP, 0, e
        if rule.allow_rx is not None:
            m = rule.allow_rx.match(value, 0, len(value))
            if m is not None and m[0][1] == len(value):
                return _SKIP, 0, e
        return vs, ve, e

    def _pem_settled(self, data: bytes, q: int, spans: Spans | None) -> bool:
        n = len(data)
        if q + self.pem_window < n:
            return True
        if spans is None:
            return q + PEM_TAIL < n
        e = spans[0][1]
        if e + PEM_TAIL < n:
            return True
        return e < n and data[e - 5 : e] == b"-----" and b"-----END" in data[q + 11 : e]

    def _find(self, data: bytes, pos: int, final: bool, limit: int) -> tuple[list[Edit], int]:
        """Edits for every match starting in [pos, limit); returns (edits, resume position).

        ``final``: ``data`` ends the input. Otherwise only settled matches are
        taken (the caller guarantees ``limit`` is settled for single-line rules)."""
        n = len(data)
        inf = n + 1
        edits: list[Edit] = []
        append = edits.append
        main = self._main
        pem = self._pem
        table = self._table
        setmatch = self._idset.Match if self._idset is not None else _no_hits
        fast = self._fast
        window = self.window
        search = main.raw_search if main is not None else None
        scan = self._scan
        # what the scanner learnt about this buffer, kept across its calls
        memo = bytearray(_MEMO_SIZE)
        first_before = self._first_before
        lit = self._lit
        next_lit = [-1]  # where the next injected secret starts (see _widen)
        # accelerated scan: the batch, its next candidate (bi), where that one was
        # searched from (bfrom) and the endpos of the batch's searches (bend)
        batch = _NO_BATCH
        bi = 0
        want = [_BATCH]  # candidates to ask for per batch (see _rescan)
        bfrom = inf
        bend = -1
        k = -1
        q = -1 if pem is not None else inf
        pemfind = _PEM_FIND
        # slow-path state: next newline / next occurrence of each needle at or
        # after a position (found once and reused, so long lines are not
        # searched again for every candidate)
        nl = -1
        found: dict[bytes, tuple[int, int, int]] = {}
        # Far from endpos, searches end at ``cend`` (send), a chunk ahead. A
        # start p ``margin`` bytes or more before it is found as the whole
        # search would (every match that can be taken ends within p + window:
        # one longer goes to the slow path, which matches rules within p +
        # window only; a start before p whose matches all run past cend can
        # have none that short); a later one, in the next chunk, from send -
        # margin. At a newline the margin is 0: no match runs past one. A
        # margin is searched twice: after a chunk without any candidate the
        # next is twice as long (at most 4 chunks), after one with candidates
        # it is one chunk again (a candidate's search may run to its end).
        chunk0 = max(_CHUNK, 2 * window)
        chunk = chunk0
        cend = -1
        cstart = -1  # where the chunk's searches began
        margin = window
        while True:
            if q < pos:
                q = pemfind(data, pos, n)[0][0]
                if q < 0:
                    q = inf
            endpos = q if q < n else n
            if endpos - pos <= chunk or search is None:
                send = endpos
            else:
                if pos > cend - margin or cend > endpos:
                    cend, margin = _chunk_end(data, pos + chunk, endpos, chunk, window)
                    cstart = pos
                send = cend
            if search is None or pos >= send:
                p = inf
                e0 = -1
            elif scan is None:
                p, e0 = search(data, pos, send)[0]
                if p < 0:
                    p = inf
            else:
                if pos >= bfrom and bend == send:
                    p, e0, k = batch[bi]
                    if p >= pos:
                        bi += 1
                        bfrom = e0 if e0 > p else p + 1
                    elif p == -1:
                        p = inf
                    else:  # -2 (not searched further) or the loop went past it
                        p = -2
                else:
                    p = -2
                if p < 0:
                    # the batch is used up or does not answer a search from here
                    batch, bi, bfrom, p, e0, k = _rescan(
                        scan,
                        first_before,
                        data,
                        pos,
                        send,
                        limit,
                        batch,
                        bi,
                        bfrom,
                        bend,
                        memo,
                        want,
                    )
                    bend = send
                    if p < 0:
                        p = inf
            if send < endpos and p > send - margin:
                # nothing to take starts before send - margin; p (if any) is
                # not settled by this chunk: the next one, from there, settles it
                if send - margin >= limit:
                    return edits, max(pos, limit)
                chunk = min(2 * chunk, 4 * chunk0) if p == inf and pos == cstart else chunk0
                if send - margin > pos:
                    pos = send - margin
                cend = -1
                continue
            if q <= p and q < inf:
                assert pem is not None
                pspans = pem.regex.match(data, q, min(n, q + self.pem_window))
                if not final and not self._pem_settled(data, q, pspans):
                    return edits, max(pos, q) if q < limit else max(pos, limit)
                got = self._accept(pem, data, q, pspans[0][1], pspans, ()) if pspans else None
                if got is None:
                    # not a private key: single-line matching goes on from the
                    # header (nothing starts before it and ends by it; nothing
                    # may run into it, or a stream would have released the
                    # bytes before it while the header was still undecided)
                    pos = q
                    q = pemfind(data, q + 1, n)[0][0]
                    if q < 0:
                        q = inf
                    continue
                vs, ve, e = got
                if vs != _SKIP:
                    append((vs, ve, pem.replace(data[vs:ve]), pem.id))
                pos = e
                continue
            if p >= limit:
                return edits, max(pos, limit)
            after = -1
            if e0 - p < window:
                # Fast path: the joined pattern's match is the match of the first
                # rule (in order) that matches at p; one RE2 Set call over the span
                # names it (captures, if the rule has value groups, come from the
                # rule's own small regex). Same checks as _accept, inlined.
                span = data[p:e0]
                if scan is None:
                    hits = setmatch(span)
                    k = (hits[0] if len(hits) == 1 else min(hits)) if hits else -1
                if k >= 0:
                    (rid, left, right, validator, trims, values, full, pyfull, dotted, const,
                     replace, allow_exact, allow_rx) = fast[k]  # fmt: skip
                    spans2: Any = _NO_MATCH
                    if values:
                        pm = pyfull(data, p, e0) if pyfull is not None and span.isascii() else None
                        spans2 = pm.regs if pm is not None else full(data, p, e0)
                        if spans2[0][0] < 0:
                            k = -1  # not this rule after all: try every rule here
                    if k >= 0:
                        e = e0
                        if p and data[p - 1] in left:
                            e = -1
                        elif (
                            not trims
                            and e0 < n
                            and (
                                data[e0] in right
                                or (
                                    dotted
                                    and data[e0] == 46
                                    and e0 + 1 < n
                                    and data[e0 + 1] in _DIGITS
                                )
                            )
                        ):
                            # (a validator that cannot trim would not move the end:
                            # the boundary is checked first, it is cheaper)
                            e = -1
                        elif validator is not None:
                            nv = validator(span)
                            if not nv:
                                e = -1
                            elif trims:
                                e = p + nv
                                if e < n:
                                    c = data[e]
                                    if c in right or (
                                        dotted and c == 46 and e + 1 < n and data[e + 1] in _DIGITS
                                    ):
                                        e = -1
                        if e >= 0:
                            vs, ve = p, e
                            for g in values:
                                sp = spans2[g]
                                if sp[0] >= 0:
                                    vs = sp[0]
                                    ve = sp[1] if sp[1] < e else e
                                    break
                            value = span if vs == p and ve == e0 else data[vs:ve]
                            if not (
                                not value
                                or (
                                    (value[0] == 91 or 42 in value)
                                    and looks_masked(value)
                                    and rid != INJECTED_ID  # a secret is never "masked already"
                                )
                                or (allow_exact and value in allow_exact)
                                or (allow_rx is not None and _allowed(allow_rx, value))
                            ):
                                append(
                                    (vs, ve, const if const is not None else replace(value), rid)
                                )
                                if lit is not None and rid != INJECTED_ID:
                                    e = self._widen(data, p, e, edits, True, next_lit)
                            elif lit is not None:
                                e = self._widen(data, p, e, edits, False, next_lit)
                            pos = e if e > p else p + 1
                            continue
                        after = k  # the winner was rejected: the rules after it here
            # Slow path: each rule that can start with this byte, anchored at p
            # (in order, after the rejected winner), then p + 1.
            wend = p + window
            if wend > endpos:
                wend = endpos
            if nl < p:
                nl = data.find(b"\n", p)
                if nl < 0:
                    nl = inf
            line_end = nl if nl < wend else wend
            got = None
            rule = None
            for r in table[data[p]]:
                if r.order <= after:
                    continue
                if r.plen and not data[p : p + r.plen].lower().startswith(r.prefixes):
                    continue
                if r.needs and not _has_needs(data, r.needs, p, line_end, found):
                    continue
                s2 = r.regex.match(data, p, line_end)
                if s2 is not None:
                    got = self._accept(r, data, p, s2[0][1], s2, r.local_values)
                    if got is not None:
                        rule = r
                        break
            if got is None or rule is None:
                pos = p + 1
                continue
            vs, ve, e = got
            if vs != _SKIP:
                append((vs, ve, rule.replace(data[vs:ve]), rule.id))
            if lit is not None and rule.id != INJECTED_ID:
                e = self._widen(data, p, e, edits, vs != _SKIP, next_lit)
            pos = e if e > p else p + 1

    def _widen(
        self, data: bytes, p: int, e: int, edits: list[Edit], edited: bool, next_lit: list[int]
    ) -> int:
        """After a match of another rule over data[p:e] (its value replaced by
        ``edits[-1]`` when ``edited``): injected secrets that start inside the
        match are masked too, and one that overlaps the replaced value is
        masked with it in one edit -- a recognizer that starts earlier and
        stops inside a secret must not leave the secret's tail in clear (the
        scan resumes after the match). Returns where the scan resumes.

        What it decides depends on data[p:p + window] only, as for every
        other rule, so that a stream masks exactly as the whole buffer (the
        search for the next secret may look further, but its answer is used
        only when the secret starts inside the match)."""
        lit = self._lit
        assert lit is not None
        n = len(data)
        nxt = next_lit[0]
        if nxt < p:
            # where the next secret starts (n + 1: none): found once and
            # reused while the scan has not reached it, so a body full of
            # other matches (e-mail addresses) costs one search, not one each
            nxt = lit.raw_search(data, p, n)[0][0]
            next_lit[0] = nxt = nxt if nxt >= 0 else n + 1
        if nxt >= e:
            return e
        next_lit[0] = -1  # consumed below
        # a secret that overlaps the match starts before e, so it ends before
        # e + the longest form
        lim = min(n, p + self.window, e + self._lit_len)
        found = self._literal_spans(data, nxt, lim, e)
        if not found:
            return e
        const = self._lit_const
        spans: list[tuple[int, int, bytes, str]] = [
            (ls, le, const, INJECTED_ID) for ls, le in found
        ]
        if edited:
            spans.append(edits.pop())
        spans.sort(key=lambda x: (x[0], -x[1]))
        merged: list[Edit] = []
        for ed in spans:
            if merged and ed[0] < merged[-1][1]:
                top = merged[-1]
                if top[3] != INJECTED_ID and ed[1] <= top[1]:
                    continue  # a secret inside the replaced value: gone with it
                merged[-1] = (top[0], max(top[1], ed[1]), const, INJECTED_ID)
            else:
                merged.append(ed)
        edits.extend(merged)
        return max(e, merged[-1][1])

    # ------------------------------------------------------------------ public API
    @property
    def active(self) -> bool:
        """False when nothing at all could match (protocols may skip masking)."""
        return bool(
            self._main is not None or self._pem is not None or self._field_rules or self.paths
        )

    @property
    def scans_content(self) -> bool:
        return self._main is not None or self._pem is not None

    def mask_bytes(self, data: bytes) -> tuple[bytes, Counts]:
        if not self.scans_content or not data:
            return data, {}
        edits, _ = self._find(data, 0, True, len(data))
        return apply_edits(data, edits, 0, len(data))

    @property
    def injects(self) -> bool:
        """The masker has injected secrets to mask (``literals``)."""
        return self._lit is not None

    @property
    def literal_pattern(self) -> str:
        """The injected secrets' RE2 pattern ('' when none), for protocols that
        pre-filter content with their own superset pattern."""
        return self._lit.pattern.decode() if self._lit is not None else ""

    def mask_injected(self, data: bytes) -> tuple[bytes, Counts]:
        """Only the injected secrets masked: for what no other rule may change
        (response header fields passed unmasked, such as ``Set-Cookie``)."""
        if self._lit is None or not data:
            return data, {}
        n = len(data)
        const = self._lit_const
        spans = self._literal_spans(data, 0, n, n)
        return apply_edits(data, [(ls, le, const, INJECTED_ID) for ls, le in spans], 0, n)

    @property
    def injected_max_len(self) -> int:
        """Longest match of the injected secrets' forms (0: none)."""
        return self._lit_len if self._lit is not None else 0

    def injected_spans(self, data: bytes, before: int) -> list[tuple[int, int]]:
        """The injected secrets' matches in ``data`` that start before
        ``before``, leftmost first and not overlapping."""
        if self._lit is None:
            return []
        return self._literal_spans(data, 0, len(data), before)

    def _literal_spans(self, data: bytes, pos: int, end: int, before: int) -> list[tuple[int, int]]:
        """The injected secrets in data[pos:end] that start before ``before``,
        leftmost first and not overlapping."""
        lit = self._lit
        assert lit is not None
        found: list[tuple[int, int]] = []
        while pos < before:
            ls, le = lit.raw_search(data, pos, end)[0]
            if ls < 0 or ls >= before:
                break
            found.append((ls, le))
            pos = le if le > ls else ls + 1
        return found

    def mask_value(self, data: bytes) -> tuple[bytes, Counts]:
        """``mask_bytes`` for short values (cells, JSON strings): one RE2 search
        decides the common no-match case before any other work; before it, a
        byte-class check rules out plain words and short numbers."""
        if self._prefilter and _cannot_match(data):
            return data, {}
        return self._mask_short(data)

    def _mask_short(self, data: bytes) -> tuple[bytes, Counts]:
        """``mask_value`` after the byte-class pre-filter."""
        main = self._main
        if main is not None:
            n = len(data)
            # the accelerated scan, not the joined pattern's own search: a long
            # base64 value (a JSON field) would meet the joined DFA's blow-up
            first = (
                self._scan(data, 0, n, n, 1)[0][0]
                if self._scan
                else main.raw_search(data, 0, n)[0][0]
            )
            if first < 0 and (self._pem is None or 45 not in data or data.find(PEM_START) < 0):
                return data, {}
        elif self._pem is None or 45 not in data or data.find(PEM_START) < 0:
            return data, {}
        edits, _ = self._find(data, 0, True, len(data))
        return apply_edits(data, edits, 0, len(data))

    def mask_text(self, text: str) -> tuple[str, Counts]:
        data = text.encode("utf-8", "surrogatepass")
        out, counts = self.mask_value(data)
        if not counts:
            return text, counts
        return out.decode("utf-8", "surrogatepass"), counts

    def field_rule(self, name: str, table: str | None = None) -> str | None:
        """Id of the first field rule matching a column/key name (``table.name`` too)."""
        key = (name, table)
        try:
            return self._field_cache[key]
        except KeyError:
            pass
        low = name.lower()
        qual = f"{table.lower()}.{low}" if table else None
        found: str | None = None
        for rid, rx, _ in self._field_rules:
            if rx.match(low) or (qual is not None and rx.match(qual)):
                found = rid
                break
        if len(self._field_cache) < 65536:
            self._field_cache[key] = found
        return found

    def secret_key_name(self, name: str) -> bool:
        """True if ``name`` (a JSON key or column name) names a secret (``password``,
        ``client_secret``, ``api_key``...) and the ``secret_key_value`` recognizer is on:
        its scalar value is then replaced whole."""
        if self._kv_rule is None:
            return False
        raw = name.encode("utf-8", "replace")
        m = _KV_NAME.match(raw, 0, len(raw))
        if m is None or m[0][1] != len(raw):
            return False
        return key_value(raw + b"=x") > 0

    def replace_secret_value(self, value: bytes) -> bytes:
        assert self._kv_rule is not None
        return self._kv_rule.replace(value)

    def replace_value(self, rule_id: str, value: bytes) -> bytes:
        """Replace a whole value for a field/path rule (no content scan)."""
        return self._value_replacers[rule_id](value)

    def stream(self) -> StreamMasker:
        from .stream import StreamMasker

        return StreamMasker(self)

    def rows(self, columns: Sequence[Column]) -> RowMasker:
        from .rows import RowMasker

        return RowMasker(self, columns)

    def json(self) -> JsonMasker:
        from .jsonmask import JsonMasker

        return JsonMasker(self)

    def rule_ids(self) -> list[str]:
        ids = [r.id for r in self._rules]
        if self._pem is not None:
            ids.insert(0, self._pem.id)
        return ids + [rid for rid, _, _ in self._field_rules] + [rid for rid, _ in self.paths.paths]


_AWS_GCP_PREFIXES = (b"AKIA", b"ASIA", b"ABIA", b"ACCA", b"AIza")
_LOWER_DIGITS_SPACE_DASH = b"abcdefghijklmnopqrstuvwxyz0123456789 -"
_DIGIT_BYTES = b"0123456789"


def _cannot_match(v: bytes) -> bool:
    """Cheap, sound pre-check against the built-in recognizers (True: none can match):

    * digits only and shorter than a card;
    * lower-case letters, digits, spaces and dashes only, fewer than 9 digits (an
      SSN, the shortest digit recognizer, has 9; phones 10, cards 13) and no
      ``b``/``g``/``x`` (``bearer``/``basic``, GitLab ``gl…-``, Slack ``xox…-``/
      ``xapp-``): every other built-in needs an upper-case letter or punctuation;
    * letters and spaces only, with no AWS/GCP key prefix and no ``basic``.

    (Integer membership tests: ``b" " in v`` costs ten times ``32 in v``.)"""
    if v.isdigit():
        return len(v) < 13
    if not v.translate(None, _LOWER_DIGITS_SPACE_DASH):
        if 98 in v or 103 in v or 120 in v:  # "b", "g", "x"
            return False
        return len(v) - len(v.translate(None, _DIGIT_BYTES)) < 9
    if not v.isalpha() and not (32 in v and v.replace(b" ", b"").isalpha()):
        return False
    if 65 in v and any(v.find(x) >= 0 for x in _AWS_GCP_PREFIXES):  # "A"
        return False
    if 98 in v or 66 in v:  # "b" / "B"
        return v.lower().find(b"basic") < 0
    return True


def _has_needs(
    data: bytes,
    needs: tuple[tuple[bytes, ...], ...],
    start: int,
    end: int,
    found: dict[bytes, tuple[int, int, int]],
) -> bool:
    """Every group has a needle inside data[start:end].

    ``found`` remembers, per needle, the range already searched and the first
    occurrence in it (-1: none), so that on a long line the next candidate only
    searches the part of its range not searched yet (starts never decrease
    within one scan)."""
    for group in needs:
        for needle in group:
            k = len(needle)
            lo, hi, at = found.get(needle, (0, -1, -1))
            if lo <= start and hi >= 0:
                if at >= start:
                    if at + k <= end:
                        break
                    continue
                if at < 0:
                    if end <= hi:
                        continue
                    at = data.find(needle, max(start, hi - k + 1), end)
                    found[needle] = (start, end, at)
                    if at >= 0:
                        break
                    continue
            at = data.find(needle, start, end)
            found[needle] = (start, end, at)
            if at >= 0:
                break
        else:
            return False
    return True


def _no_hits(_span: bytes) -> list[int]:
    return []


def _no_first(
    _data: bytes, _pos: int, _stop: int, _endpos: int, _memo: Any = None
) -> tuple[int, int, int] | None:
    raise AssertionError("the accelerated scan is off")


def _chunk_end(data: bytes, at: int, endpos: int, chunk: int, window: int) -> tuple[int, int]:
    """Where a chunk of ``_find``'s searches that should end at ``at`` ends,
    and its margin: the next newline if there is one within a chunk (margin 0:
    the rules are single-line, so no match runs past it), else ``at``
    (margin: a window)."""
    if at >= endpos:
        return endpos, window
    nl = data.find(b"\n", at, min(endpos, at + chunk))
    return (nl, 0) if nl >= 0 else (at, window)


def _rescan(
    scan: Callable[..., _Batch],
    first_before: Callable[..., tuple[int, int, int] | None],
    data: bytes,
    pos: int,
    endpos: int,
    limit: int,
    batch: _Batch,
    bi: int,
    bfrom: int,
    bend: int,
    memo: bytearray,
    want: list[int],
) -> tuple[_Batch, int, int, int, int, int]:
    """The leftmost candidate from ``pos`` when ``batch[bi]`` does not answer that
    search; returns the new (batch, bi, bfrom) and the candidate (p, e0, k), p -1
    if there is none. ``endpos`` is the batch's from now on. ``want[0]``: how
    many candidates a new batch asks for, fewer after a batch is dropped with
    candidates unused (dense matches that the loop accepts with an end past
    the next batched start: the scanner judged 256 candidates to have one
    used), more again after a batch is used up."""
    if pos < bfrom and bend == endpos and batch[bi][0] != -2:
        # resumed before the next batched candidate's search start (a rejected
        # or trimmed candidate): anchored matches at each position up to bfrom
        # (not a search over the text up to batch[bi] again), or one search
        # for a long gap. With no match starting before bfrom, the leftmost
        # match from pos is batch[bi], the leftmost from bfrom.
        if bfrom - pos <= _FIRST_BEFORE_MAX:
            got = first_before(data, pos, bfrom, endpos, memo)
            if got is not None:
                return batch, bi, bfrom, *got
            p, e0, k = batch[bi]
        else:
            p, e0, k = scan(data, pos, endpos, limit, 1, memo)[0]
            if 0 <= p < bfrom:
                return batch, bi, bfrom, p, e0, k
            # else it is batch[bi], the leftmost match from bfrom
        if p < 0:
            return batch, bi, pos, -1, -1, -1
        return batch, bi + 1, e0 if e0 > p else p + 1, p, e0, k
    if batch[bi][0] >= 0:
        want[0] = max(_BATCH_MIN, want[0] >> 2)
    elif want[0] < _BATCH:
        want[0] = min(_BATCH, want[0] << 1)
    batch = scan(data, pos, endpos, limit, want[0], memo)
    p, e0, k = batch[0]
    if p < 0:
        return batch, 0, pos, -1, -1, -1
    return batch, 1, e0 if e0 > p else p + 1, p, e0, k


def _allowed(rx: Compiled, value: bytes) -> bool:
    m = rx.match(value, 0, len(value))
    return m is not None and m[0][1] == len(value)


def apply_edits(data: bytes, edits: list[Edit], start: int, end: int) -> tuple[bytes, Counts]:
    """Output for data[start:end] with edits applied (edits sorted, inside the range)."""
    counts: Counts = {}
    if not edits:
        return data[start:end], counts
    out: list[bytes] = []
    cur = start
    for vs, ve, repl, rid in edits:
        out.append(data[cur:vs])
        out.append(repl)
        cur = ve
        counts[rid] = counts.get(rid, 0) + 1
    out.append(data[cur:end])
    return b"".join(out), counts


def build_masker(
    config: MaskingConfig,
    hmac_key: bytes,
    *,
    accelerate: bool | None = None,
    literals: Sequence[str] = (),
) -> Masker:
    """Compile a masker once per connection. An invalid regex raises ValueError naming the rule.

    ``accelerate`` and ``literals`` (injected secrets): see :class:`Masker`."""
    if not isinstance(hmac_key, bytes | bytearray) or len(hmac_key) < 16:
        raise ValueError("hmac_key must be at least 16 bytes")
    return Masker(config, bytes(hmac_key), accelerate=accelerate, literals=literals)


__all__ = ["Counts", "Edit", "Masker", "Replacement", "accelerated", "apply_edits", "build_masker"]
