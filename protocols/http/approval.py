"""``approval.mode: retry`` for HTTP: refuse a request that needs review with
403 naming the approval id; after a reviewer approves, the same identity
sending the exact same request (method, normalized path, query and body
hash) once more gets it through, exactly once.

The retry may come on a new connection (a new session): the approval is
consumed with the session id it was created in, after checking that the
requester is the caller. A retry may name the approval in the
``X-Hoopd-Approval`` header; without it the store is searched for an approved
approval of this requester with this command hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hoopd.approvals.models import command_hash
from hoopd.approvals.store import same_person
from hoopd.gateway import approved_decision, deny_decision
from hoopd.model import ApprovalEvent, Command, Decision, Verdict
from hoopd.policy import Assessment, decide_command

if TYPE_CHECKING:
    from hoopd.session import Session

APPROVAL_HEADER = "x-hoopd-approval"


@dataclass(frozen=True, slots=True)
class RetryOutcome:
    decision: Decision
    approval_id: str = ""
    message: str = ""
    pending: bool = False
    """True: the client must wait for a reviewer and retry."""


async def decide_retry(
    session: Session,
    cmd: Command,
    found: Assessment,
    params: dict[str, Any],
    named_approval: str | None,
    exact: bool,
) -> RetryOutcome:
    """Judge a request in retry mode. ``exact``: the body is fully known (hashed)."""
    conn = session.connection
    decision = decide_command(
        cmd.seq, conn.risk, session.identity, found, break_glass=session.break_glass
    )
    if decision.verdict is not Verdict.REVIEW:
        session.final_decision(decision)
        return RetryOutcome(decision)
    # The REVIEW decision itself is recorded; what follows is recorded too.
    session.final_decision(decision)
    cm = session.metrics
    store = session.gateway.approvals
    if store is None:
        cm.approval("store_unavailable")
        return RetryOutcome(session.final_decision(
            deny_decision(decision, "approvals are not configured: this request cannot be approved")
        ))
    if not exact:
        return RetryOutcome(session.final_decision(
            deny_decision(decision, "request body too large to bind an approval to; use approval.mode: hold")
        ))
    digest = command_hash(cmd.text, params)
    me = session.identity.subject
    try:
        candidates: list[Any] = []
        if named_approval:
            candidates = [await store.get(named_approval)]
        else:
            candidates = [
                *await store.list("approved", connection=conn.name),
                *await store.list("pending", connection=conn.name),
            ]
        usable = [
            a
            for a in candidates
            if a.command_hash == digest and same_person(a.requester, me) and a.connection == conn.name
        ]
        for a in usable:
            state = str(getattr(a.state, "value", a.state))
            if state == "approved" and await store.consume(a.id, a.session_id, digest):
                cm.approval("approved")
                session.approval_event(
                    ApprovalEvent(a.id, cmd.seq, "used", digest, a.reviewer or "", a.comment or "")
                )
                final = approved_decision(decision, a.id, a.reviewer)
                return RetryOutcome(session.final_decision(final), a.id)
        for a in usable:
            state = str(getattr(a.state, "value", a.state))
            if state == "pending":
                return RetryOutcome(decision, a.id, _pending_message(a.id), pending=True)
        if named_approval and not usable:
            return RetryOutcome(session.final_decision(
                deny_decision(decision, f"approval {named_approval} is not for this request", named_approval)
            ))
        if named_approval:
            state = str(getattr(usable[0].state, "value", usable[0].state))
            return RetryOutcome(session.final_decision(
                deny_decision(decision, f"approval {named_approval} is {state}", named_approval)
            ))
        approval = await session.gateway.create_approval(session, cmd, decision, digest)
    except Exception as exc:
        if type(exc).__name__ == "NotFoundError":
            return RetryOutcome(session.final_decision(
                deny_decision(decision, f"unknown approval {named_approval}", named_approval or "")
            ))
        cm.approval("store_unavailable")
        session.log.error("approval store unavailable, refusing request: %s", exc)
        return RetryOutcome(session.final_decision(
            deny_decision(decision, f"approval store unavailable: {exc}")
        ))
    session.approval_event(ApprovalEvent(approval.id, cmd.seq, "pending", digest))
    cm.approval("requested")
    notifier = session.gateway.notifier
    if notifier is not None:
        notifier.notify("approval.created", approval)
    return RetryOutcome(decision, approval.id, _pending_message(approval.id), pending=True)


def _pending_message(approval_id: str) -> str:
    return (
        f"this request needs a reviewer's approval (id {approval_id}); "
        f"a reviewer can run: hoopd approvals approve {approval_id} -- "
        "then send the same request again"
    )
