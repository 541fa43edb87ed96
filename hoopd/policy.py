"""Who may open a session on a connection, and what happens to a command of
a given risk.

Policy is deny by default: a session is allowed only by an explicit rule
(``auth: none``, a group in ``allow_groups``, the break-glass group, or a
just-in-time grant), and every decision carries the reasons and rule ids that
produced it, so the recording explains itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hoopd.config import ConnectionConfig, RiskLevel, RiskSection
from hoopd.model import Decision, Identity, Verdict


def authorize_session(
    conn: ConnectionConfig, identity: Identity, *, grant_id: str | None = None
) -> Decision:
    if identity.anonymous:
        if conn.auth == "none":
            return Decision(
                0, Verdict.ALLOW, reasons=("anonymous access allowed by auth: none",),
                rule_ids=("auth:none",),
            )
        return Decision(0, Verdict.DENY, reasons=("authentication required",))
    if conn.break_glass_group and conn.break_glass_group in identity.groups:
        return Decision(
            0,
            Verdict.ALLOW,
            reasons=(f"break-glass group {conn.break_glass_group}",),
            rule_ids=("break_glass",),
            break_glass=True,
        )
    matched = sorted(identity.groups.intersection(conn.allow_groups))
    if matched:
        return Decision(
            0,
            Verdict.ALLOW,
            reasons=(f"member of {', '.join(matched)}",),
            rule_ids=tuple(f"allow_groups:{g}" for g in matched),
        )
    if grant_id:
        return Decision(
            0, Verdict.ALLOW, reasons=(f"just-in-time grant {grant_id}",), rule_ids=("grant",)
        )
    return Decision(
        0,
        Verdict.DENY,
        reasons=(f"no rule allows {identity.subject} on {conn.name}",),
    )


LEVEL_SCORES = {
    RiskLevel.NONE: 0,
    RiskLevel.LOW: 25,
    RiskLevel.MEDIUM: 50,
    RiskLevel.HIGH: 75,
    RiskLevel.CRITICAL: 100,
}


def level_of(score: int) -> RiskLevel:
    for level in sorted(RiskLevel, reverse=True):
        if score >= LEVEL_SCORES[level] and level is not RiskLevel.NONE:
            return level
    return RiskLevel.NONE


def _threshold(name: str) -> int | None:
    if name == "never":
        return None
    return LEVEL_SCORES[RiskLevel[name.upper()]]


@dataclass(frozen=True, slots=True)
class Assessment:
    """What a protocol's risk scorer found in one command."""

    score: int
    """0..100."""
    categories: frozenset[str] = frozenset()
    """Rule-matchable labels, e.g. ``ddl``, ``delete_without_where``."""
    reasons: tuple[str, ...] = ()
    rule_verdicts: dict[str, Verdict] = field(default_factory=dict)
    """Verdicts forced by explicit per-connection rules, by rule id."""


_DEFAULT_RISK = RiskSection()
_SEVERITY = {Verdict.ALLOW: 0, Verdict.MASK: 1, Verdict.REVIEW: 2, Verdict.DENY: 3}


def decide_command(
    command_seq: int, risk: RiskSection | None, identity: Identity, found: Assessment, *,
    break_glass: bool = False,
) -> Decision:
    """Thresholds first, then explicit rules: the strictest verdict wins, and
    an explicit ``allow`` rule can lower a threshold verdict (an operator may
    say "truncate on this scratch database is fine")."""
    risk = risk or _DEFAULT_RISK
    verdict = Verdict.ALLOW
    reasons = list(found.reasons)
    if found.score > 0:
        for name, level_verdict in (
            (risk.mask_at, Verdict.MASK),
            (risk.review_at, Verdict.REVIEW),
            (risk.deny_at, Verdict.DENY),
        ):
            limit = _threshold(name)
            if limit is not None and found.score >= limit:
                verdict = level_verdict
    rule_ids: list[str] = []
    explicit = [v for v in found.rule_verdicts.values()]
    if explicit:
        rule_ids = sorted(found.rule_verdicts)
        strictest = max(explicit, key=_SEVERITY.__getitem__)
        if strictest is Verdict.ALLOW and all(v is Verdict.ALLOW for v in explicit):
            verdict = Verdict.ALLOW
        elif _SEVERITY[strictest] > _SEVERITY[verdict]:
            verdict = strictest
    # Break-glass skips the wait for a reviewer (it exists for emergencies)
    # but not an outright deny; the decision stays flagged either way.
    if break_glass and verdict is Verdict.REVIEW:
        reasons.append("break-glass: review waived")
        verdict = Verdict.ALLOW
    return Decision(
        command_seq,
        verdict,
        risk=found.score,
        reasons=tuple(reasons),
        rule_ids=tuple(rule_ids),
        break_glass=break_glass,
    )
