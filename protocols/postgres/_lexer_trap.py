"""Which SQL texts must not reach PostgreSQL's lexer (libpg_query's, in pglast).

The lexer takes time quadratic in a run of operator characters
(``~!@#^&|`?+-*/%<>=``) that it tokenizes as operators: its ``{operator}``
rule reads the whole run, keeps a token of one or a few characters (``+``
and ``-`` are stripped from an operator's end; a ``/*`` or ``--`` in it ends
it) and reads the rest of the run again for the next token. ``+`` 16,000
times costs 0.9 s of CPU, 64,000 times 4.8 s (pglast 8.8), on the gateway's
event loop before any policy.
The same happens in a block comment at every nested ``/*``: the comment
start rule reads all the operator characters that follow it.

Inside a string literal (``'...'``, ``E'...'``, ``B''``/``X''``/``N''``/``U&''``,
``$tag$...$tag$``), a quoted identifier, a ``--`` comment or a ``/* */``
comment, the lexer reads such a run once (measured: 256 KB of ``-``, ``+``,
``=`` or ``/`` in any of them costs 1-4 ms to fingerprint or parse). So a long
run is refused only when the lexer would read it again from more places
than that: :func:`lexer_trap` finds the long runs with one RE2 search and
only then works out which of their characters the lexer sees outside
literals and comments (:func:`run_costs`, linear time).
"""

from __future__ import annotations

import re
from bisect import bisect_right

import re2

LONGEST_OPERATOR_RUN = 1024
"""Longer runs of operator characters are looked at (shorter ones are not:
a run of 1024 costs the lexer ~4 ms however it is read)."""

_OPERATOR_RUNS = re2.compile(r"[~!@#^&|`?+\-*/%<>=]{32,}")
TEXT_BUDGET = 16 * LONGEST_OPERATOR_RUN * (LONGEST_OPERATOR_RUN + 1) // 2
"""What all runs of a text together may cost the lexer (in characters it
reads again, as :func:`run_costs` counts them): sixteen runs of 1024, about
70 ms to fingerprint. Without it, many runs just under the limit would do
what one long run does (64 runs of 1024: 0.28 s for 65 KB; ~4 s per MB)."""

_OP_CHARS = "~!@#^&|`?+-*/%<>="
# Each operator character of a long run is replaced by one of these (lone
# surrogates, which no text decoded from UTF-8 holds) before the fast scan,
# so that the scan cannot run through a long run it would have to account for.
_M = {c: chr(0xD800 + i) for i, c in enumerate(_OP_CHARS)}
_SURROGATES = re.compile("[\ud800-\udfff]")

_ID_START = "A-Za-z_\x80-\ud7ff\ue000-\U0010ffff"
_ID_CONT = _ID_START + "0-9$"
_DOLQ_CONT = _ID_START + "0-9"
_OPC = r"~!@#^&|`?+\-*/%<>="
_DASHES = f"(?:--|{_M['-']}{_M['-']})"

# After a string's closing quote: whitespace with a newline, then a quote
# (scan.l's {quotecontinue}); the string goes on in the same state.
_CONT = (
    rf"(?:[ \t\f\v]|{_DASHES}[^\n\r]*+)*+[\n\r]"
    rf"(?:[ \t\n\r\f\v]|{_DASHES}[^\n\r]*+[\n\r])*+'"
)
_SQ_BODY = r"[^']*+(?:''[^']*+)*+'"
_E_BODY = r"[^\\']*+(?:(?:\\[\s\S]|'')[^\\']*+)*+'"
_NUMCORE = r"(?:[0-9](?:_?[0-9])*+(?:\.(?:[0-9](?:_?[0-9])*+)?)?|\.[0-9](?:_?[0-9])*+)"
_JUNK = rf"[{_ID_START}][{_ID_CONT}]*+"
_NUMBER = rf"{_NUMCORE}(?:[eE][-+]?[0-9](?:_?[0-9])*+(?:{_JUNK})?|[eE][-+]|{_JUNK})?"

_TOKENS = (
    # standard strings (and B'', X'', N'', U&'', lexed alike), continued
    rf"(?:[bBxXnN]|[uU]&)?'{_SQ_BODY}(?:{_CONT}{_SQ_BODY})*+",
    rf"[eE]'{_E_BODY}(?:{_CONT}{_E_BODY})*+",
    r'(?:[uU]&)?"[^"]*+(?:""[^"]*+)*+"',
    rf"(?![eEbBxXnN]'|[uU]&['\"])[{_ID_START}][{_ID_CONT}]*+",
    # a number, unless it ends with an exponent sign that begins a long run
    rf"(?!{_NUMCORE}[eE][{_M['+']}{_M['-']}]){_NUMBER}",
    # $1 (and junk after it), $tag$...$tag$, or a lone $
    rf"\$(?:[0-9]++(?:{_JUNK})?"
    rf"|(?P<tag>(?:[{_ID_START}][{_DOLQ_CONT}]*+)?)\$[\s\S]*?\$(?P=tag)\$"
    rf"|(?!(?:[{_ID_START}][{_DOLQ_CONT}]*+)?\$))",
    r"--[^\n\r]*+",
    # a block comment with no nested /* and no long run holding * or /
    rf"/\*(?:[^*/{_M['*']}{_M['/']}]|\*++(?!/)|/(?!\*))*+\*++/",
    r"(?:[~!@#^&|`?+*%<>=]|-(?!-)|/(?!\*))++",
    rf"(?:[^'\"$.0-9{_ID_START}{_OPC}\ud800-\udfff]|\.(?![0-9]))++",
)
_SCAN = re.compile("(?:" + "|".join(_TOKENS) + ")*+")
"""Whole tokens, from a token start, up to the first one that needs a closer
look: a long run outside literals and comments, a block comment holding
one, a nested block comment, or an unterminated literal or comment."""

_OP_STRETCH = re.compile(r"(?:[~!@#^&|`?+*%<>=]|-(?!-)|/(?!\*))++")
_NUMBER_RE = re.compile(_NUMBER)
_NEWLINE = re.compile(r"[\n\r]")
_COMMENT_MARK = re.compile(r"/\*|\*/")
_MAX_STEPS = 100_000
"""Tokens and comment marks looked at one by one (each ~0.5 us) before
giving up (unsure): the fast scan takes everything else."""


def lexer_trap(sql: str) -> str | None:
    """Why ``sql`` must not reach the parser (None: it may)."""
    if len(sql) <= LONGEST_OPERATOR_RUN:
        return None
    runs = [(m.start(), m.end()) for m in _OPERATOR_RUNS.finditer(sql)]
    if not runs:
        return None
    longest = max(end - start for start, end in runs)
    # read as operators from end to end, the runs would cost at most this
    if longest <= LONGEST_OPERATOR_RUN and sum((e - s) ** 2 for s, e in runs) // 2 <= TEXT_BUDGET:
        return None
    too_long = f"a run of more than {LONGEST_OPERATOR_RUN} operator characters"
    too_many = "runs of operator characters the lexer would read again too often"
    costs = run_costs(sql, runs)
    if costs is None:
        return too_long if longest > LONGEST_OPERATOR_RUN else too_many
    if any(cost > allowed_cost(e - s) for cost, (s, e) in zip(costs, runs, strict=True)):
        return too_long
    if sum(costs) > TEXT_BUDGET:
        return too_many
    return None


def allowed_cost(length: int) -> int:
    """What :func:`run_costs` may find for a run of ``length``: reading it
    twice, or what a run of 1024 that the lexer sees whole costs."""
    return max(2 * length, LONGEST_OPERATOR_RUN * (LONGEST_OPERATOR_RUN + 1) // 2)


def run_costs(sql: str, runs: list[tuple[int, int]]) -> list[int] | None:
    """For each run ``(start, end)`` (maximal runs of operator characters, in
    order), an upper bound of how many characters the lexer reads to
    tokenize it beyond reading it once: for every place in it where the lexer
    starts an operator token, a comment or a nested ``/*``, the length from
    there to the run's end. None when unsure (an unterminated literal or
    comment, a lone surrogate, too many nested comments): the caller refuses
    the text."""
    if not sql.isascii() and _SURROGATES.search(sql):
        return None
    pieces = []
    done = 0
    for start, end in runs:
        pieces.append(sql[done:start])
        run = sql[start:end]
        for char, mask in _M.items():
            if char in run:  # (str.translate is ~20x slower)
                run = run.replace(char, mask)
        pieces.append(run)
        done = end
    pieces.append(sql[done:])
    masked = "".join(pieces)
    starts = [start for start, _ in runs]
    costs = [0] * len(runs)

    def run_at(pos: int) -> int:
        i = bisect_right(starts, pos) - 1
        return i if i >= 0 and pos < runs[i][1] else -1

    def rescan(pos: int) -> None:
        i = run_at(pos)
        if i >= 0:
            costs[i] += runs[i][1] - pos

    n = len(sql)
    pos = 0
    steps = 0
    while True:
        steps += 1
        if steps > _MAX_STEPS:
            return None
        match = _SCAN.match(masked, pos)
        assert match is not None  # (it matches the empty string)
        pos = match.end()
        if pos >= n:
            return costs
        char = sql[pos]
        if sql.startswith("--", pos):
            rescan(pos)
            newline = _NEWLINE.search(sql, pos)
            pos = newline.start() if newline else n
        elif sql.startswith("/*", pos):
            rescan(pos)
            depth = 0
            for mark in _COMMENT_MARK.finditer(sql, pos + 2):
                steps += 1
                if steps > _MAX_STEPS:
                    return None
                if mark.group() == "/*":
                    rescan(mark.start())
                    depth += 1
                elif depth:
                    depth -= 1
                else:
                    pos = mark.end()
                    break
            else:
                return None  # unterminated comment
        elif char in _OP_CHARS:
            # operator tokens in a long run: each one reads to the run's end
            i = run_at(pos)
            if i < 0:
                return None
            stop = _OP_STRETCH.match(sql, pos)
            if stop is None:
                return None
            after = stop.end()
            run_end = runs[i][1]
            count = after - pos
            costs[i] += count * run_end - (pos + after - 1) * count // 2
            pos = after
        elif "0" <= char <= "9" or char == ".":
            number = _NUMBER_RE.match(sql, pos)
            if number is None:
                return None
            pos = number.end()
            rescan(pos - 1)  # its exponent sign begins a long run
        else:
            return None  # unterminated literal or quoted identifier
