"""Approval and just-in-time grant records.

Both are frozen snapshots of a row in the state store; every change goes
through an :class:`~hoopd.approvals.store.ApprovalStore` method and returns a
new snapshot.
"""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hoopd.model import ApprovalEvent


class ApprovalState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"


class GrantState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    REVOKED = "revoked"
    EXPIRED = "expired"


def command_hash(text: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> str:
    """SHA-256 (hex) binding an approval to the exact command.

    The hashed bytes are the canonical JSON of ``[text, params]`` (sorted keys,
    no whitespace, UTF-8, non-JSON values by ``str``), so text and parameters
    can never be shifted into one another. ``params`` are the bind parameters
    of a prepared statement, the argv of an exec, ... (None when there are none).
    """
    canon = json.dumps(
        [text, params], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    """``apr_`` / ``grt_`` + 16 random hex characters."""
    return f"{prefix}_{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Approval:
    """A held command waiting for (or having received) a reviewer's decision.

    Single use: :meth:`ApprovalStore.consume` turns an ``approved`` approval
    into ``used`` exactly once, for the same ``session_id`` and
    ``command_hash``, before ``expires_at``.
    """

    id: str
    requester: str
    requester_groups: frozenset[str]
    connection: str
    session_id: str
    command_text: str
    command_hash: str
    reasons: tuple[str, ...]
    created_at: float
    expires_at: float
    state: ApprovalState
    reviewer: str = ""
    comment: str = ""
    decided_at: float | None = None

    @property
    def pending(self) -> bool:
        return self.state is ApprovalState.PENDING

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by the admin API and webhooks."""
        return {
            "id": self.id,
            "requester": self.requester,
            "requester_groups": sorted(self.requester_groups),
            "connection": self.connection,
            "session_id": self.session_id,
            "command_text": self.command_text,
            "command_hash": self.command_hash,
            "reasons": list(self.reasons),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "state": self.state.value,
            "reviewer": self.reviewer,
            "comment": self.comment,
            "decided_at": self.decided_at,
        }

    def to_event(self, command_seq: int) -> ApprovalEvent:
        """The recording event for this approval's current state."""
        return ApprovalEvent(
            approval_id=self.id,
            command_seq=command_seq,
            state=self.state.value,
            command_hash=self.command_hash,
            reviewer=self.reviewer,
            comment=self.comment,
        )


@dataclass(frozen=True, slots=True)
class Grant:
    """Session-level just-in-time access: ``connection`` for ``minutes`` to a
    ``subject`` (a person) or a ``group`` (exactly one of them is non-empty).

    ``expires_at`` bounds the *pending* request; once approved the grant is
    active from ``starts_at`` to ``ends_at``.
    """

    id: str
    requester: str
    subject: str
    group: str
    connection: str
    minutes: int
    reason: str
    state: GrantState
    created_at: float
    expires_at: float
    reviewer: str = ""
    comment: str = ""
    decided_at: float | None = None
    starts_at: float | None = None
    ends_at: float | None = None

    def active_at(self, now: float) -> bool:
        return (
            self.state is GrantState.APPROVED
            and self.starts_at is not None
            and self.ends_at is not None
            and self.starts_at <= now < self.ends_at
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "requester": self.requester,
            "subject": self.subject,
            "group": self.group,
            "connection": self.connection,
            "minutes": self.minutes,
            "reason": self.reason,
            "state": self.state.value,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "reviewer": self.reviewer,
            "comment": self.comment,
            "decided_at": self.decided_at,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
        }
