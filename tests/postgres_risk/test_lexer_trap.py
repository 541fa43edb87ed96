"""lexer_trap: long runs of operator characters that PostgreSQL's lexer
reads once (inside literals and comments) reach the parser; runs it reads
again and again (operators, nested comment starts) do not."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pglast import parser as pg

from protocols.postgres._lexer_trap import allowed_cost, lexer_trap, run_costs
from protocols.postgres.risk import SqlRiskScorer

SCORER = SqlRiskScorer(None)
OPS = "~!@#^&|`?+-*/%<>="
RUNS = re.compile(r"[~!@#^&|`?+\-*/%<>=]+")
TRAP = "a run of more than 1024 operator characters"


def cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def lex_and_parse(sql: str) -> None:
    for step in (pg.fingerprint, pg.parse_sql_json):
        try:
            step(sql)
        except Exception:  # (a syntax error: the lexer stopped there)
            return


def categories(sql: str) -> frozenset[str]:
    return SCORER.score(sql).categories


# (a) runs the lexer reads once ---------------------------------------------

def harmless(n: int) -> list[str]:
    """Statements with a run of ``n`` operator characters (about) that the
    lexer reads once."""
    dashes = "-" * n
    return [
        f"insert into t values ('{dashes}')",
        "insert into t values ('" + "|-----" * (n // 6) + "|')",  # a markdown table line
        "insert into t values (E'" + "=" * n + "\\n')",  # base64-ish padding
        "insert into t values ($$" + "/" * n + "$$)",  # a long path
        "insert into t values ($body$" + "+-" * (n // 2) + "$body$)",
        "insert into t values (U&'" + "*" * n + "')",
        "insert into t values ('a'\n'" + "<>" * (n // 2) + "')",  # continued string
        "insert into t values (E'it\\'s'\n-- a comment\n'" + "~" * n + "')",
        f'insert into t ("{dashes}") values (1)',
        f"insert into t values (1) -- {dashes}\n",
        f"-- {dashes}\ninsert into t values (1)",
        f"{dashes}\ninsert into t values (1)",  # a comment made of dashes
        f"insert into t values (1) /* {dashes} */",
        f"insert into t values (1) /*{dashes}*/",
        "/* " + "+--+" * (n // 4) + " */ insert into t values (1)",
        f"insert into t values (1) --{'/*' * (n // 2)}\n",
        "insert into t values ('" + "/*" * (n // 2) + "')",
        f"insert into t values ($1, '{dashes}')",
    ]


DASHES = "-" * 20000


def test_runs_inside_literals_and_comments_are_scored_as_their_statement() -> None:
    plain = categories("insert into t values (1)")
    assert "write" in plain
    for sql in harmless(20000):
        assert lexer_trap(sql) is None, sql[:40]
        assert categories(sql) == plain, sql[:40]


def test_harmless_runs_parse_in_linear_time() -> None:
    """What was measured (pglast 8.8): 256 KB of such a run inside any
    literal or comment costs 1-4 ms to fingerprint or parse; 64 KB of
    ``+`` as operators costs ~5 s. Here: 64 KB, in each shape."""
    for sql in harmless(65536):
        assert lexer_trap(sql) is None, sql[:40]
        took = cpu(lambda sql=sql: lex_and_parse(sql))
        assert took < 0.25, (sql[:40], took)


# (b) runs the lexer reads again and again ------------------------------------

RUN = "+" * 2000


def test_runs_the_lexer_reads_as_operators_are_still_refused() -> None:
    texts = [
        f"select 1 {RUN} 1",
        "select 1 /*" + "/*/**/" * 400 + "*/",  # each nested /* reads to the run's end
        f"select 1 /* it's */ {RUN} 1 -- '",  # a quote inside a comment
        f"select 1 -- it's\n {RUN} 1 -- '",
        f"select '/*', 1 {RUN} 1, '*/'",  # comment markers inside strings
        f"select '--', 1 {RUN} 1 --'",
        f"select $1, 1 {RUN} 1, $1",  # $1 is a parameter, not a dollar quote
        f"select a$b$ 1 {RUN} 1 $b$",  # a$b$ is an identifier
        f"select $a $b, 1 {RUN} 1, $b $a",
        f"select E'\\'', 1 {RUN} 1, '",  # \' is an escape in E''
        f"select E'\\\\', 1 {RUN} 1, '\\\\'",
        f"select '\\', 1 {RUN} 1, '\\'",  # ... and not in ''
        f"select U&'\\', 1 {RUN} 1, '\\'",
        f"select xE'\\', 1 {RUN} 1, '\\'",  # xE is an identifier: '\' is standard
        f"select E'a' '\\', 1 {RUN} 1, '",  # no newline: not a continuation
        f"select 'a'\n'\\', 1 {RUN} 1, '",  # continues as a standard string
        f'select "a""", 1 {RUN} 1, "b"',
        f"select 'abc {RUN}",  # unterminated: fail closed
        f"select $x$ abc {RUN}",
        f"select /* abc {RUN}",
        f'select "abc {RUN}',
        f"select E'abc\\' {RUN}",
        "select 1 " + "+" * 1000 + "--" + DASHES + "\n",  # 1000 tokens, each reads 21 KB
        "select 1 " + "+" * 1000 + "/*" + DASHES + "*/",
        "select 1 /*" + "-" * 1000 + "*/" + RUN,
        "select 1 " + "/**/" * 600,
    ]
    for sql in texts:
        found = SCORER.score(sql)
        assert found.categories == {"unparseable"}, sql[:30]
        assert TRAP in found.reasons, (sql[:30], found.reasons)


def test_plpgsql_bodies_are_lexed_again() -> None:
    """A run quoted in a DO block or function is code to the PL/pgSQL
    parser: not given to it (the body is not analysed: high risk)."""
    for sql in (
        f"DO $$ BEGIN PERFORM 1 {'+' * 65536} 1; END $$",
        f"create function f() returns int language plpgsql as $$ begin return 1 {'+' * 65536} 1; end $$",
    ):
        took = cpu(lambda sql=sql: SCORER.score(sql))
        found = SCORER.score(sql)
        assert "dynamic_sql" in found.categories
        assert any("body could not be analysed" in r for r in found.reasons), found.reasons
        assert took < 0.25, took
    # quoted in the body too: the body is analysed
    quoted = "DO $$ BEGIN RAISE NOTICE '%s'; DELETE FROM t; END $$"
    assert categories(quoted % DASHES) == categories(quoted % "-") >= {"do_block", "write"}


# (c) the tokenizer against libpg_query's own scanner --------------------------

FRAGMENTS = [
    "'", "''", "E'", "e'", "\\", "\\'", '"', '""', "U&'", 'u&"', "N'", "B'", "X'", "$", "$$",
    "$a$", "$1", "a$b", "$a", "--", "/*", "*/", "\n", " ", "\r", "\t", "a", "E", "x", "1", "1e",
    ".", "5", "0x", "_", ",", ";", "(", ")", "é", "+", "-", "*", "/", "=", "|", "<", "@", "!",
]
TEXTS = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.sampled_from(OPS).map(lambda c: c * 7)),
    max_size=40,
).map("".join)


def token_starts(sql: str) -> list[tuple[int, int, str]] | None:
    """pglast's scanner tokens as (start, end) character offsets, end
    exclusive; None when the lexer stops with an error."""
    try:
        tokens = pg.scan(sql)
    except Exception:
        return None
    return [(t.start, t.end + 1, t.name) for t in tokens]  # (pglast counts characters)


def reference_costs(sql: str, runs: list[tuple[int, int]]) -> list[int] | None:
    """The characters libpg_query's lexer reads again in each run: from
    every token it starts there (and every nested /* in a comment)."""
    tokens = token_starts(sql)
    if tokens is None:
        return None
    costs = []
    for a, b in runs:
        cost = 0
        for start, end, name in tokens:
            if a <= start < b:
                cost += b - start
            if name == "C_COMMENT" and start < b and end > a:
                depth_marks = re.finditer(r"/\*|\*/", sql[start + 2 : end])
                for mark in depth_marks:
                    at = start + 2 + mark.start()
                    if mark.group() == "/*" and a <= at < b:
                        cost += b - at
        costs.append(cost)
    return costs


@settings(max_examples=400)
@given(TEXTS)
def test_tokenizer_never_undercounts_what_the_lexer_rereads(sql: str) -> None:
    runs = [(m.start(), m.end()) for m in RUNS.finditer(sql) if m.end() - m.start() > 4]
    assume(runs)
    reference = reference_costs(sql, runs)
    assume(reference is not None)
    mine = run_costs(sql, runs)
    if mine is None:
        return  # unsure: refused
    for (a, b), ours, theirs in zip(runs, mine, reference, strict=True):
        assert ours >= theirs, (sql, sql[a:b], ours, theirs)


@settings(max_examples=400)
@given(TEXTS)
def test_runs_in_literals_and_comments_cost_nothing(sql: str) -> None:
    """The other direction: a run that pglast's scanner shows inside a
    string or a comment is not counted (when the text lexes)."""
    tokens = token_starts(sql)
    assume(tokens is not None)
    assert tokens is not None
    runs = [(m.start(), m.end()) for m in RUNS.finditer(sql) if m.end() - m.start() > 4]
    mine = run_costs(sql, runs)
    assume(mine is not None)
    assert mine is not None
    quoted = {"SCONST", "USCONST", "BCONST", "XCONST", "UIDENT", "SQL_COMMENT", "C_COMMENT"}
    for (a, b), ours in zip(runs, mine, strict=True):
        inside = [
            (s, e, name)
            for s, e, name in tokens
            if s < a and b <= e and (name in quoted or (name == "IDENT" and sql[s] == '"'))
        ]
        if inside and not ("/*" in sql[a:b] and inside[0][2] == "C_COMMENT"):
            assert ours == 0, (sql, sql[a:b])


PIECES = st.one_of(
    st.sampled_from(["select 1", " ", "\n", ",", "1", "a", "$1", "a$b", ";", "(", ")"]),
    st.tuples(
        st.sampled_from(["'%s'", "E'%s'", "$$%s$$", "$q$%s$q$", '"%s"', "-- %s\n", "/* %s */",
                         "/*%s*/", "%s", " %s ", "'a'\n'%s'", "1 %s 1"]),
        st.sampled_from(["-", "+", "=", "/", "*", "|-", "<>", "/*", "*/", "+-"]),
        st.sampled_from([1, 600, 30000]),
    ).map(lambda t: t[0] % (t[1] * t[2])),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(PIECES, min_size=1, max_size=8).map("".join))
def test_whatever_passes_the_trap_parses_in_bounded_time(sql: str) -> None:
    """Whenever lexer_trap lets a text through, pglast fingerprints and
    parses it in bounded CPU time (a 30 KB run lexed as operators: ~1 s)."""
    if lexer_trap(sql) is not None:
        return
    took = cpu(lambda: lex_and_parse(sql))
    assert took < 0.2, (sql[:60], took)


def test_budget_matches_the_old_limit_for_runs_the_lexer_sees_whole() -> None:
    for length in (1025, 1100):
        sql = "select 1 " + "+" * length + " 1"
        assert lexer_trap(sql) == TRAP
    assert allowed_cost(1024) == 1024 * 1025 // 2
    assert lexer_trap("select 1 " + "+" * 1024 + " 1") is None


# (d) lexer_trap itself is linear -----------------------------------------------

SHAPES: dict[str, Callable[[int], str]] = {
    "literal": lambda n: "insert into t values ('" + "-" * n + "')",
    "identifiers": lambda n: "select " + "a," * (n // 2) + "'" + "-" * 2000 + "'",
    "strings": lambda n: "select " + "'a'," * (n // 4) + "'" + "-" * 2000 + "'",
    "operators": lambda n: "select " + "a+b-" * (n // 4) + "'" + "-" * 2000 + "'",
    "comments": lambda n: "select " + "/*x*/" * (n // 5) + "'" + "-" * 2000 + "'",
    "nested": lambda n: "select /*" + "/*x*/" * (n // 5) + " " + "-" * 2000 + " */",
    "dollars": lambda n: "select " + "$a$x$a$," * (n // 8) + "'" + "-" * 2000 + "'",
    "runs": lambda n: "select " + ("'" + "-" * 1100 + "',") * (n // 1103),
    "e-strings": lambda n: "select " + "E'\\''," * (n // 6) + "'" + "-" * 2000 + "'",
}


def test_lexer_trap_takes_linear_time() -> None:
    """CPU time for 4x the input is ~4x (measured 3.2-5.1x at 250 KB ->
    1 MB; 20-270 ns a character), not 16x."""
    for name, make in SHAPES.items():
        small, large = make(100_000), make(400_000)
        t_small = min(cpu(lambda s=small: lexer_trap(s)) for _ in range(3))
        t_large = min(cpu(lambda s=large: lexer_trap(s)) for _ in range(3))
        assert t_large < 8 * max(t_small, 0.002), (name, t_small, t_large)


def test_many_runs_under_the_limit_are_refused_together() -> None:
    """64 runs of 1024 ``+`` (66 KB): each is at the limit, together they cost
    the lexer what one run of 8,000 does (0.28 s to fingerprint; ~4 s per
    MB). Runs of the same length inside literals cost nothing and pass."""
    many = "select 1" + (" + 1 " + "+" * 1024 + " 1") * 64
    assert lexer_trap(many) == "runs of operator characters the lexer would read again too often"
    found = SqlRiskScorer(None).score(many)
    assert found.categories == {"unparseable"}
    quoted = "insert into notes values " + ",".join(f"('{'+' * 1024}')" for _ in range(64))
    assert lexer_trap(quoted) is None
    assert SqlRiskScorer(None).score(quoted).categories == {"write"}


def test_statements_are_not_split_through_a_lexer_trap() -> None:
    """Splitting a simple Query into statements runs the same lexer, before
    any scoring: a trap there is one (unparseable) statement, at once."""
    from protocols.postgres._scoring import split_statements

    sql = "select 1; select 1 " + "+" * 32768
    started = time.process_time()
    assert split_statements(sql) == [sql]
    assert time.process_time() - started < 1.0  # the lexer itself: ~7 s
    assert split_statements("select 1; select 2") == ["select 1", "select 2"]
