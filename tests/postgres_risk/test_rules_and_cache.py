"""Connection rules -> rule_verdicts -> decide_command; caching; prepared statements."""

from __future__ import annotations

import pytest

from hoopd.config import RiskRule, RiskSection
from hoopd.model import Identity, Verdict
from hoopd.policy import decide_command
from protocols.postgres.risk import (
    UNPARSEABLE_RULE_ID,
    PreparedStatements,
    SqlRiskScorer,
    score_statement_text,
)

RULES = RiskSection(
    rules=(
        RiskRule(match="drop_database", action=Verdict.DENY),
        RiskRule(match="ddl", action=Verdict.REVIEW),
        RiskRule(match="delete_without_where", action=Verdict.REVIEW),
        RiskRule(match="update_without_where", action=Verdict.REVIEW),
        RiskRule(match="truncate", action=Verdict.REVIEW),
        RiskRule(match="grant", action=Verdict.REVIEW),
        RiskRule(id="no-ssn", pattern=r"(?i)\bssn\b", action=Verdict.DENY),
    ),
    review_at="critical",
)


def decide(risk: RiskSection | None, sql: str) -> Verdict:
    found = SqlRiskScorer(risk).score(sql)
    return decide_command(1, risk, Identity.ANONYMOUS, found).verdict


@pytest.mark.parametrize(
    ("sql", "verdicts", "final"),
    [
        ("SELECT 1", {}, Verdict.ALLOW),
        ("DROP DATABASE prod", {"drop_database": Verdict.DENY, "ddl": Verdict.REVIEW}, Verdict.DENY),
        ("CREATE TABLE t (a int)", {"ddl": Verdict.REVIEW}, Verdict.REVIEW),
        ("delete from t", {"delete_without_where": Verdict.REVIEW}, Verdict.REVIEW),
        ("delete from t where id = 1", {}, Verdict.ALLOW),
        ("update t set a = 1", {"update_without_where": Verdict.REVIEW}, Verdict.REVIEW),
        ("TRUNCATE t", {"truncate": Verdict.REVIEW}, Verdict.REVIEW),
        ("grant select on t to bob", {"grant": Verdict.REVIEW}, Verdict.REVIEW),
        ("select ssn from people", {"no-ssn": Verdict.DENY}, Verdict.DENY),
        ("select 1; drop database x", {"drop_database": Verdict.DENY, "ddl": Verdict.REVIEW}, Verdict.DENY),
    ],
)
def test_rules_become_verdicts(sql: str, verdicts: dict[str, Verdict], final: Verdict) -> None:
    found = SqlRiskScorer(RULES).score(sql)
    assert found.rule_verdicts == verdicts
    assert decide_command(1, RULES, Identity.ANONYMOUS, found).verdict is final


def test_pattern_rule_sees_text_on_cache_hits() -> None:
    s = SqlRiskScorer(RULES)
    s.score("SELECT name FROM people WHERE id = 1")
    # same fingerprint, different text: the pattern still runs on the text
    assert s.score("SELECT name FROM people WHERE id = 2").rule_verdicts == {}
    assert s.score("SELECT name FROM people WHERE id = 3 -- ssn").rule_verdicts == {
        "no-ssn": Verdict.DENY
    }


def test_allow_rule_lowers_threshold() -> None:
    risk = RiskSection(rules=(RiskRule(match="truncate", action=Verdict.ALLOW),))
    assert decide(risk, "TRUNCATE scratch") is Verdict.ALLOW
    assert decide(None, "TRUNCATE scratch") is Verdict.REVIEW


def test_defaults_review_high_risk() -> None:
    assert decide(None, "DROP TABLE t") is Verdict.REVIEW
    assert decide(None, "SELECT 1") is Verdict.ALLOW
    assert decide(None, "INSERT INTO t VALUES (1)") is Verdict.ALLOW


@pytest.mark.parametrize(
    ("risk", "score", "forced", "final"),
    [
        (None, 75, {}, Verdict.REVIEW),
        (RiskSection(unparseable="allow"), 0, {}, Verdict.ALLOW),
        (RiskSection(unparseable="review"), 75, {}, Verdict.REVIEW),
        (RiskSection(unparseable="review", review_at="medium"), 50, {}, Verdict.REVIEW),
        (
            RiskSection(unparseable="review", review_at="never"),
            75,
            {UNPARSEABLE_RULE_ID: Verdict.REVIEW},
            Verdict.REVIEW,
        ),
        (RiskSection(unparseable="deny"), 100, {UNPARSEABLE_RULE_ID: Verdict.DENY}, Verdict.DENY),
    ],
)
def test_unparseable_policy(
    risk: RiskSection | None, score: int, forced: dict[str, Verdict], final: Verdict
) -> None:
    found = SqlRiskScorer(risk).score("this is not sql at all")
    assert found.categories == {"unparseable"}
    assert found.score == score
    assert found.rule_verdicts == forced
    assert found.reasons and "syntax error" in found.reasons[0]
    assert decide_command(1, risk, Identity.ANONYMOUS, found).verdict is final


def test_unparseable_match_rule() -> None:
    risk = RiskSection(rules=(RiskRule(match="unparseable", action=Verdict.DENY),))
    found = SqlRiskScorer(risk).score("garbage (((")
    assert found.rule_verdicts == {"unparseable": Verdict.DENY}


# -- caching -------------------------------------------------------------------

# Pairs with equal fingerprints whose honest assessments differ in reasons or
# categories: a cache hit on the first must not answer for the second.
SAME_FINGERPRINT = [
    ("delete from public.users", "delete from other.users"),
    ("select set_config('application_name','x',false)", "select set_config('log_statement','x',false)"),
    ("DO $$BEGIN PERFORM 1; END$$", "DO $$BEGIN DROP TABLE x; END$$"),
    (
        "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
        "CREATE FUNCTION f() RETURNS int AS 'delete from t' LANGUAGE sql",
    ),
    ("grant select on t to alice", "grant select on t to bob"),
    ("create role alice", "create role bob"),
    ("EXECUTE a", "EXECUTE b"),
    ("select * from a.t where x = 1", "select * from b.t where x = 2"),
]


@pytest.mark.parametrize(("first", "second"), SAME_FINGERPRINT)
def test_fingerprint_cache_never_mixes_up_texts(first: str, second: str) -> None:
    warm = SqlRiskScorer(None)
    warm.score(first)
    assert warm.score(second) == SqlRiskScorer(None).score(second)


def test_fingerprint_cache_hits_for_literals() -> None:
    s = SqlRiskScorer(None)
    s.score("UPDATE accounts SET balance = balance + 5 WHERE id = 1")
    found = s.score("UPDATE accounts SET balance = balance + 7 WHERE id = 2")
    info = s.cache_info()
    assert info.fingerprint_hits == 1
    assert found.categories == {"write"} and found.reasons == ("UPDATE on accounts",)


def test_cache_is_bounded() -> None:
    s = SqlRiskScorer(None, cache_size=8)
    for i in range(50):
        s.score(f"insert into t{i} values (1)")
    info = s.cache_info()
    assert info.text_size <= 8 and info.fingerprint_size <= 8


def test_returned_verdicts_are_not_shared() -> None:
    s = SqlRiskScorer(RULES)
    s.score("TRUNCATE t").rule_verdicts.clear()
    assert s.score("TRUNCATE t").rule_verdicts == {"truncate": Verdict.REVIEW}


# -- prepared statements -------------------------------------------------------


def test_execute_scored_as_prepared_body() -> None:
    s = SqlRiskScorer(RULES)
    t = PreparedStatements()
    prep = score_statement_text("PREPARE wipe(int) AS DELETE FROM t", t, s)
    assert prep.categories == {"prepare"} and "delete_without_where" not in prep.categories
    assert t.resolve_execute("wipe") == "DELETE FROM t"
    found = s.score_statement_text("EXECUTE wipe(1)", t)
    assert {"execute", "delete_without_where", "write"} <= found.categories
    assert found.rule_verdicts == {"delete_without_where": Verdict.REVIEW}
    assert found.reasons[0] == "EXECUTE wipe runs: DELETE FROM t"
    assert decide_command(1, RULES, Identity.ANONYMOUS, found).verdict is Verdict.REVIEW


def test_execute_of_safe_statement_is_low() -> None:
    t = PreparedStatements()
    score_statement_text("PREPARE q (int) AS SELECT * FROM t WHERE id = $1", t)
    found = score_statement_text("execute q(5)", t)
    assert found.categories == {"execute"} and found.score == 25


def test_unknown_execute_is_high() -> None:
    found = score_statement_text("EXECUTE nowhere(1)", PreparedStatements())
    assert "unknown_prepared" in found.categories and found.score >= 75
    assert "EXECUTE nowhere: prepared statement body unknown" in found.reasons


def test_deallocate_forgets() -> None:
    t = PreparedStatements()
    score_statement_text("PREPARE a AS SELECT 1; PREPARE b AS SELECT 2", t)
    score_statement_text("DEALLOCATE a", t)
    assert "a" not in t and "b" in t
    assert "unknown_prepared" in score_statement_text("EXECUTE a", t).categories
    score_statement_text("DEALLOCATE ALL", t)
    assert len(t) == 0


def test_prepare_then_execute_in_one_string() -> None:
    t = PreparedStatements()
    found = score_statement_text("PREPARE p AS UPDATE t SET a = 1; EXECUTE p", t)
    assert {"multi_statement", "update_without_where", "execute", "prepare"} <= found.categories
    assert "unknown_prepared" not in found.categories


def test_protocol_level_parse() -> None:
    t = PreparedStatements()
    t.prepare("", "TRUNCATE audit_log")  # unnamed statement from a Parse message
    t.prepare("s1", "SELECT 1")
    assert t.resolve_execute("") == "TRUNCATE audit_log"
    t.deallocate("s1")
    assert t.resolve_execute("s1") is None


def test_tracker_is_bounded() -> None:
    t = PreparedStatements()
    t.MAX_STATEMENTS = 3
    for i in range(10):
        t.prepare(f"s{i}", "SELECT 1")
    assert len(t) <= 3 and t.resolve_execute("s9") == "SELECT 1"


def test_without_prepared_words_same_as_score() -> None:
    s = SqlRiskScorer(None)
    assert score_statement_text("DELETE FROM t", PreparedStatements(), s) == s.score("DELETE FROM t")


def test_re_prepare_cannot_launder_a_name() -> None:
    """PREPARE of a taken name fails on the server and keeps the old body;
    the tracker must not believe the new, harmless one."""
    t = PreparedStatements()
    score_statement_text("PREPARE p AS DELETE FROM t", t)
    score_statement_text("PREPARE p AS SELECT 1", t)
    found = score_statement_text("EXECUTE p", t)
    assert "delete_without_where" in found.categories
    score_statement_text("DEALLOCATE p", t)
    score_statement_text("PREPARE p AS SELECT 1", t)
    assert score_statement_text("EXECUTE p", t).categories == {"execute"}


def test_unnamed_protocol_statement_is_replaced() -> None:
    t = PreparedStatements()
    t.prepare("", "DELETE FROM t")
    t.prepare("", "SELECT 1")
    assert t.candidates("") == ("SELECT 1",)


def test_execute_parameters_are_scored() -> None:
    t = PreparedStatements()
    score_statement_text("PREPARE q(int) AS SELECT $1", t)
    found = score_statement_text("EXECUTE q(pg_terminate_backend(42))", t)
    assert "dangerous_function" in found.categories and found.score >= 75


@pytest.mark.parametrize(
    "text", ["EXECUTE q", "execute q(1, 2)", " EXECUTE  q ( 1 ) ; ", "EXECUTE q(a.b + 1)"]
)
def test_simple_execute_shortcut_matches_parse_path(text: str) -> None:
    t = PreparedStatements()
    s = SqlRiskScorer(RULES)
    score_statement_text("PREPARE q(int, int) AS UPDATE t SET a = $1", t, s)
    fast = score_statement_text(text, t, s)
    slow = score_statement_text(f"/* force parse */ {text}", t, s)
    assert fast.categories == slow.categories and fast.score == slow.score
    assert fast.rule_verdicts == slow.rule_verdicts


def test_execute_hidden_after_semicolon_is_not_shortcut() -> None:
    t = PreparedStatements()
    score_statement_text("PREPARE q AS SELECT 1", t)
    found = score_statement_text("EXECUTE q; DROP TABLE users", t)
    assert "drop_table" in found.categories


def test_pgbench_select_skips_the_parser() -> None:
    s = SqlRiskScorer(None)
    for aid in range(100):
        found = s.score(f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid}")
        assert found.categories == {"read"} and found.score == 0
    found = s.score("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
    assert found.categories == {"read"}
    info = s.cache_info()
    assert info.fingerprint_hits == 0 and info.fingerprint_misses == 0


def test_fast_path_still_applies_pattern_rules() -> None:
    risk = RiskSection(rules=(RiskRule(id="secret", pattern=r"secrets", action=Verdict.DENY),))
    found = SqlRiskScorer(risk).score("SELECT a FROM secrets WHERE id = 1")
    assert found.categories == {"read"} and found.rule_verdicts == {"secret": Verdict.DENY}
