"""Approvals: held commands waiting for a reviewer, and just-in-time grants.

Public API::

    from hoopd.approvals import (
        Approval, ApprovalState, Grant, GrantState, command_hash,
        ApprovalStore, SQLiteStore, PostgresStore, open_store,
        ApprovalError, StoreUnavailable, NotFoundError, NotPendingError, SelfApprovalError,
    )
    from hoopd.approvals.webhook import WebhookNotifier
    from hoopd.approvals.api import add_routes
    from hoopd.approvals.client import ApprovalsClient

See docs/approvals.md.
"""

from hoopd.approvals.models import Approval, ApprovalState, Grant, GrantState, command_hash
from hoopd.approvals.postgres import PostgresStore
from hoopd.approvals.sqlite import SQLiteStore
from hoopd.approvals.store import (
    DEFAULT_APPROVAL_TTL,
    DEFAULT_GRANT_REQUEST_TTL,
    ApprovalError,
    ApprovalStore,
    NotFoundError,
    NotPendingError,
    SelfApprovalError,
    StoreUnavailable,
    open_store,
)

__all__ = [
    "DEFAULT_APPROVAL_TTL",
    "DEFAULT_GRANT_REQUEST_TTL",
    "Approval",
    "ApprovalError",
    "ApprovalState",
    "ApprovalStore",
    "Grant",
    "GrantState",
    "NotFoundError",
    "NotPendingError",
    "PostgresStore",
    "SQLiteStore",
    "SelfApprovalError",
    "StoreUnavailable",
    "command_hash",
    "open_store",
]
