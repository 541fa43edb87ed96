"""Property tests: the scorer never raises, and the fast path agrees with the parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hoopd.policy import Assessment
from protocols.postgres._risk_classify import classify, parse
from protocols.postgres.risk import (
    PreparedStatements,
    SqlRiskScorer,
    _fast_read,
    _fast_read_text,
    score_statement_text,
)

SCORER = SqlRiskScorer(None)

SQLISH = st.lists(
    st.sampled_from(
        [
            "select", "delete", "from", "where", "drop", "table", "t", "(", ")", ";", "'", "$$",
            "--", "/*", "*/", "do", "execute", "prepare", "copy", "program", "1", ",", "=", "with",
            "as", "\x00", "\n", '"', "pg_terminate_backend", "into", "E'\\'", "$1", "ä", "\ud800",
        ]
    ),
    max_size=20,
).map(" ".join)


@given(st.text(max_size=300))
def test_garbage_never_raises(sql: str) -> None:
    found = SCORER.score(sql)
    assert isinstance(found, Assessment)
    assert 0 <= found.score <= 100
    assert found.categories
    if "unparseable" in found.categories:
        assert found.score > 0


@given(SQLISH)
def test_sqlish_never_raises(sql: str) -> None:
    assert isinstance(SCORER.score(sql), Assessment)
    assert isinstance(score_statement_text(sql, PreparedStatements(), SCORER), Assessment)


@given(st.binary(max_size=200))
def test_bytes_decoded_never_raise(raw: bytes) -> None:
    assert isinstance(SCORER.score(raw.decode("latin-1")), Assessment)


NAMES = st.sampled_from(
    ["a", "aid", "c2", "t_9x", "x1$2", "abalance", "pgbench_accounts", "public.t", "t1", "select", "from", "into",
     "union", "user", "current_user", "limit", "order", "x$y", "for", "table", "only"]
)
VALUES = st.sampled_from(["$1", "$12", "1", "907", "-2.5", "0.05", "'a1 b2'", "'x'", "'a b'", "'it''s'", "'drop table t'", "now()"])


@st.composite
def simple_reads(draw: st.DrawFn) -> str:
    cols = draw(st.lists(NAMES, min_size=1, max_size=3))
    sql = f"SELECT {', '.join(cols)} FROM {draw(NAMES)}"
    if draw(st.booleans()):
        conds = [f"{draw(NAMES)} {draw(st.sampled_from(['=', '<', '>=', '<>']))} {draw(VALUES)}"]
        if draw(st.booleans()):
            conds.append(f"{draw(NAMES)} = {draw(VALUES)}")
        sql += " WHERE " + " AND ".join(conds)
    if draw(st.booleans()):
        sql += " LIMIT 10"
    return sql + draw(st.sampled_from(["", ";", " ; ", "\n"]))


@given(simple_reads())
def test_fast_path_agrees_with_parser(sql: str) -> None:
    if _fast_read(sql):
        assert classify(parse(sql)).categories == {"read"}


@given(simple_reads())
def test_fast_path_off_gives_the_same_answer(sql: str) -> None:
    on = SqlRiskScorer(None).score(sql)
    off = SqlRiskScorer(None, fast_path=False).score(sql)
    if "unparseable" not in off.categories:
        assert on.categories == off.categories and on.score == off.score


@given(simple_reads(), st.data())
def test_fast_path_answer_does_not_depend_on_which_digits(sql: str, data: st.DataObject) -> None:
    """_fast_read caches its answer by the text with every digit made 0."""
    other = "".join(
        data.draw(st.sampled_from("0123456789")) if c.isdigit() else c for c in sql
    )
    assert _fast_read_text(sql.lower()) == _fast_read_text(other.lower())
    assert _fast_read(sql) == _fast_read(other) == _fast_read_text(sql)


def test_long_operator_runs_never_reach_the_parser() -> None:
    """PostgreSQL's lexer takes time quadratic in a run of operator
    characters (64 KB of ``+``: ~16 s on the gateway's event loop, before
    any policy). Such a run is refused before the parser, wherever the text
    would be parsed: the statement, a PREPAREd body, a DO block's body, a
    dynamic EXECUTE's literal. Shorter runs and ordinary SQL are unaffected.
    (A run quoted in the statement reaches the parser: test_lexer_trap.py.)"""
    run = "+" * 65536
    texts = [
        f"select 1 {run} 1",
        "select 1 /*" + "/*/**/" * 11000 + "*/",
        f"prepare p as select 1 {run} 1; execute p",
    ]
    for sql in texts:
        for found in (SCORER.score(sql), score_statement_text(sql, PreparedStatements(), SCORER)):
            assert found.categories == {"unparseable"}, sql[:20]
            assert any("operator characters" in r for r in found.reasons), found.reasons
    for sql in (
        f"DO $$ BEGIN PERFORM 1 {run} 1; END $$",  # the body is not analysed
        f"DO $$ BEGIN EXECUTE 'select 1 {run} 1'; END $$",  # nor the EXECUTEd text
    ):
        for found in (SCORER.score(sql), score_statement_text(sql, PreparedStatements(), SCORER)):
            assert {"do_block", "dynamic_sql"} <= found.categories, sql[:20]
    assert SCORER.score("select 1 " + "-" * 1000 + "\n from t").categories == {"read"}  # (a comment)
    assert SCORER.score("delete from t where a <> 1").categories == {"write"}
