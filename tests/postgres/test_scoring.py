"""The per-session verdict cache (``_scoring.Judge``)."""

from __future__ import annotations

from hoopd.config import RiskSection
from hoopd.model import Identity, Verdict
from hoopd.policy import decide_command
from protocols.postgres._scoring import Judge, Scorer


def _judge(risk: RiskSection, break_glass: bool = False) -> Judge:
    scorer = Scorer(risk)
    return Judge(scorer, scorer.new_tracker(), risk, Identity.ANONYMOUS, break_glass)


RISK = RiskSection.model_validate(
    {"rules": [{"match": "delete_without_where", "action": "review"}, {"match": "ddl", "action": "deny"}]}
)


def test_same_decisions_as_policy() -> None:
    judge = _judge(RISK)
    scorer = Scorer(RISK)
    for sql in (
        "select a from t where k = 1",
        "select a from t where k = 2",
        "delete from t",
        "create table x(a int)",
        "select pg_terminate_backend(1)",
        "this is not sql",
    ):
        for _ in range(2):  # miss, then hit
            j = judge(sql)
            want = decide_command(7, RISK, Identity.ANONYMOUS, scorer.assess(sql))
            got = j.decision(7)
            assert (got.verdict, got.risk, got.reasons, got.rule_ids) == (
                want.verdict, want.risk, want.reasons, want.rule_ids,
            ), sql  # fmt: skip


def test_plain_reads_share_one_verdict() -> None:
    judge = _judge(RISK)
    assert judge("select a from t where k = 1") is judge("select a from t where k = 99")
    assert judge("select a from t where k = 1").verdict is Verdict.ALLOW


def test_pattern_rules_see_every_text() -> None:
    risk = RiskSection.model_validate({"rules": [{"pattern": "k = 666", "action": "deny"}]})
    judge = _judge(risk)
    assert judge("select a from t where k = 1").verdict is Verdict.ALLOW
    assert judge("select a from t where k = 666").verdict is Verdict.DENY


def test_prepared_statements_are_not_cached_by_text() -> None:
    judge = _judge(RISK)
    assert judge("PREPARE p AS select 1").allowed
    assert judge("EXECUTE p").allowed
    judge("DEALLOCATE p")
    judge("PREPARE p AS delete from t")
    assert judge("EXECUTE p").verdict is Verdict.REVIEW


def test_break_glass_decisions_keep_the_flag() -> None:
    judge = _judge(RISK, break_glass=True)
    d = judge("delete from t").decision(3)
    assert d.break_glass and d.verdict is Verdict.ALLOW and "break-glass: review waived" in d.reasons
