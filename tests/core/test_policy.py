"""Policy: deny by default, explicit allows, thresholds, rules, break-glass."""

from __future__ import annotations

from typing import Any

from hoopd.config import ConnectionConfig, RiskSection
from hoopd.model import AuthMethod, Identity, Verdict
from hoopd.policy import Assessment, authorize_session, decide_command

ALICE = Identity("alice", frozenset({"dev"}), AuthMethod.GATEWAY_TOKEN)
EVE = Identity("eve", frozenset({"marketing"}), AuthMethod.OIDC)
MEDIC = Identity("medic", frozenset({"oncall"}), AuthMethod.OIDC)


def conn(**over: Any) -> ConnectionConfig:
    base: dict[str, Any] = {"name": "db", "protocol": "tcp", "listen": "127.0.0.1:1"}
    base.update(over)
    return ConnectionConfig.model_validate(base)


def test_sessions_are_denied_without_a_matching_rule() -> None:
    c = conn(allow_groups=["dev"], break_glass_group="oncall")
    assert authorize_session(c, ALICE).verdict is Verdict.ALLOW
    denied = authorize_session(c, EVE)
    assert denied.verdict is Verdict.DENY and denied.reasons == ("no rule allows eve on db",)
    assert authorize_session(c, Identity.ANONYMOUS).verdict is Verdict.DENY
    assert authorize_session(conn(auth="none"), Identity.ANONYMOUS).verdict is Verdict.ALLOW
    assert authorize_session(c, EVE, grant_id="g1").rule_ids == ("grant",)
    glass = authorize_session(c, MEDIC)
    assert glass.verdict is Verdict.ALLOW and glass.break_glass


def test_thresholds_rules_and_break_glass() -> None:
    risk = RiskSection(review_at="high", deny_at="critical", reviewers=("dba",))
    low, high, critical = Assessment(10), Assessment(75), Assessment(100)
    assert decide_command(1, risk, ALICE, low).verdict is Verdict.ALLOW
    assert decide_command(1, risk, ALICE, high).verdict is Verdict.REVIEW
    assert decide_command(1, risk, ALICE, critical).verdict is Verdict.DENY
    # explicit rules: the strictest wins; an explicit allow can lower a threshold
    forced = Assessment(10, rule_verdicts={"deny_truncate": Verdict.DENY})
    assert decide_command(1, risk, ALICE, forced).verdict is Verdict.DENY
    waived = Assessment(75, rule_verdicts={"scratch_ok": Verdict.ALLOW})
    assert decide_command(1, risk, ALICE, waived).verdict is Verdict.ALLOW
    # break-glass skips a review, never a deny, and is flagged
    d = decide_command(1, risk, MEDIC, high, break_glass=True)
    assert d.verdict is Verdict.ALLOW and d.break_glass and "break-glass: review waived" in d.reasons
    assert decide_command(1, risk, MEDIC, critical, break_glass=True).verdict is Verdict.DENY
    # no risk section: defaults (review at high)
    assert decide_command(1, None, ALICE, high).verdict is Verdict.REVIEW
