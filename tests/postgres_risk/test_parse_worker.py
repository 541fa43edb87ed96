"""Long statements are parsed in the parse worker (a child process), and
what the scorer makes of its answer is what it would have made itself.

``tests/postgres/test_long_statements.py`` shows the same end to end: other
sessions keep moving while a long INSERT is parsed."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from hoopd.config import RiskSection
from hoopd.model import Verdict
from protocols.postgres import _parse_worker
from protocols.postgres._analysis import Analysis, analyse
from protocols.postgres._parse_worker import ParseWorker
from protocols.postgres.risk import (
    OFFLOAD_MIN_CHARS,
    PreparedStatements,
    SqlRiskScorer,
    score_statement_text,
)


def _values(n: int, call: str = "now()") -> str:
    return ",".join(f"({i}, 'user{i}@example.com', {call})" for i in range(n))


LONG = {
    "insert": "INSERT INTO t (id, email, ts) VALUES " + _values(600),
    "insert_calling_a_dangerous_function": "INSERT INTO t VALUES "
    + _values(600)
    + ",(1, 'x', pg_terminate_backend(42))",
    "delete_in_a_cte": "WITH gone AS (DELETE FROM accounts RETURNING id) SELECT id FROM gone WHERE id IN ("
    + ",".join(str(i) for i in range(5000))
    + ")",
    "select_with_a_long_literal": "SELECT '" + "-" * 20000 + "' AS line, id FROM t",
    "syntax_error": "SELEKT " + ", ".join(f"c{i}" for i in range(4000)) + " FROM t",
    "nul_byte": "SELECT 1 /*" + "x" * 20000 + "\x00 */",
    "operator_run": "SELECT 1 " + "+" * 20000 + " 1",
    "prepare": "PREPARE p AS INSERT INTO t VALUES " + _values(600),
    "two_statements": "DELETE FROM t; INSERT INTO t VALUES " + _values(600),
}
RISK = RiskSection.model_validate(
    {
        "rules": [
            {"match": "delete_without_where", "action": "review"},
            {"pattern": "user42@example", "action": "deny"},
        ]
    }
)


def test_the_cases_are_long() -> None:
    assert all(len(sql) > OFFLOAD_MIN_CHARS for sql in LONG.values())


@pytest.mark.parametrize("name", sorted(LONG))
def test_a_primed_analysis_scores_as_the_scorer_itself_would(name: str) -> None:
    sql = LONG[name]
    own = SqlRiskScorer(RISK)
    primed = SqlRiskScorer(RISK)
    assert primed.needs_analysis(sql)
    primed.prime(sql, analyse(sql))
    assert not primed.needs_analysis(sql)
    assert primed.score(sql) == own.score(sql)
    # and again, from the fingerprint cache the first call filled
    assert primed.score(sql) == own.score(sql)


def test_a_primed_prepare_in_a_long_text_fails_closed() -> None:
    """Following PREPARE/EXECUTE would parse each statement again on the
    event loop: a long text holding one is reviewed instead."""
    sql = LONG["prepare"]
    scorer = SqlRiskScorer(None)
    scorer.prime(sql, analyse(sql))
    found = score_statement_text(sql, PreparedStatements(), scorer)
    assert found.categories == frozenset({"unparseable"})
    assert any("PREPARE, EXECUTE or DEALLOCATE" in r for r in found.reasons)


def test_a_text_over_max_parsed_sql_is_not_parsed() -> None:
    sql = LONG["insert"]
    scorer = SqlRiskScorer(None, max_parsed_chars=4096)
    assert not scorer.needs_analysis(sql)
    for found in (scorer.score(sql), score_statement_text(sql, PreparedStatements(), scorer)):
        assert found.categories == frozenset({"unparseable"})
        assert any("max_parsed_sql" in r for r in found.reasons)


def test_the_worker_answers_what_analyse_answers() -> None:
    async def run() -> None:
        worker = ParseWorker()
        try:
            for sql in LONG.values():
                assert await worker.analyse(sql) == analyse(sql)
            assert worker.pid is not None and worker.pid != os.getpid()
        finally:
            await worker.close()
        assert worker.pid is None

    asyncio.run(run())


def test_a_dead_worker_is_replaced() -> None:
    told: list[str] = []

    async def run() -> None:
        worker = ParseWorker(told.append)
        try:
            assert (await worker.analyse(LONG["insert"])).error == ""
            first = worker.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await asyncio.sleep(0.2)
            assert await worker.analyse(LONG["insert"]) == analyse(LONG["insert"])
            assert worker.pid not in (None, first)
        finally:
            await worker.close()

    asyncio.run(run())
    assert told == []  # it died between texts: no text went unanalysed


def test_a_worker_over_its_deadline_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """No answer in time: the child is killed and the text counts as
    unparseable, which the default policy sends to review."""

    told: list[str] = []

    async def run() -> Analysis:
        worker = ParseWorker(told.append)
        try:
            assert (await worker.analyse("SELECT 1")).error == ""  # started
            first = worker.pid
            monkeypatch.setattr(_parse_worker, "BASE_DEADLINE", 0.0)
            monkeypatch.setattr(_parse_worker, "DEADLINE_PER_MB", 0.0)
            late = await worker.analyse(LONG["insert"])
            assert worker.pid is None  # killed
            assert first is not None
            with pytest.raises(ProcessLookupError):
                for _ in range(50):
                    os.kill(first, 0)  # gone once reaped
                    await asyncio.sleep(0.05)
            return late
        finally:
            await worker.close()

    late = asyncio.run(run())
    assert late.error.startswith("parsing took longer than")
    assert told == ["timeout"]  # counted: hoopd_scorer_failures_total{reason="timeout"}
    scorer = SqlRiskScorer(None)
    scorer.prime(LONG["insert"], late)
    found = scorer.score(LONG["insert"])
    assert found.categories == frozenset({"unparseable"})
    # a failure is not the text's: the next time it goes to the worker again
    assert scorer.needs_analysis(LONG["insert"])
    strict = SqlRiskScorer(RiskSection.model_validate({"review_at": "never"}))
    strict.prime(LONG["insert"], late)
    assert strict.score(LONG["insert"]).rule_verdicts == {"risk.unparseable": Verdict.REVIEW}


def test_an_analysis_survives_the_wire() -> None:
    for sql in LONG.values():
        found = analyse(sql)
        assert Analysis.from_wire(found.to_wire()) == found
    with pytest.raises(ValueError):
        Analysis.from_wire(["too", "short"])


def test_a_worker_dying_mid_text_fails_closed_and_is_counted() -> None:
    told: list[str] = []
    sql = "INSERT INTO t VALUES " + _values(40000)  # a second or more of parsing

    async def run() -> Analysis:
        worker = ParseWorker(told.append)
        try:
            assert (await worker.analyse("SELECT 1")).error == ""
            pid = worker.pid
            assert pid is not None
            pending = asyncio.ensure_future(worker.analyse(sql))
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            found = await pending
            assert (await worker.analyse("SELECT 1")).error == ""  # a new child
            return found
        finally:
            await worker.close()

    found = asyncio.run(run())
    assert found.error.startswith("the parse worker failed"), found
    assert told == ["worker_failed"]
