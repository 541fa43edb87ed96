"""Admin HTTP API for approvals, grants and token exchange (aiohttp).

Routes added by :func:`add_routes` (all JSON; prefix ``/api/v1``)::

    GET  /api/v1/approvals[?state=pending&connection=prod-db]
    GET  /api/v1/approvals/{id}
    POST /api/v1/approvals/{id}/approve        {"comment": "..."}   (body optional)
    POST /api/v1/approvals/{id}/deny           {"comment": "..."}
    POST /api/v1/grants                        {"connection": "prod-db", "minutes": 30,
                                                "subject": "alice" | "group": "oncall",
                                                "reason": "INC-42"}
    GET  /api/v1/grants[?state=&connection=]
    POST /api/v1/grants/{id}/approve|deny|revoke  {"comment": "..."}
    POST /api/v1/token                         {"ttl": "8h"}   (OIDC bearer only)

Authentication: ``Authorization: Bearer <gateway token | API key | OIDC JWT>``.

Authorization: a caller may decide (approve/deny) an approval or grant only
if one of its groups is in ``reviewers_for(connection)``; nobody decides their
own request (403 with the reason). Approvals and grants are listed/shown to
reviewers of their connection and to their requester (and a grant's subject);
others get 404. A grant may be revoked by a reviewer, its requester or its
subject.

Status codes: 401 missing/invalid credential (``{"error": "unauthorized",
"reason": <AuthError.reason>}``), 403 not a reviewer / self-approval, 404
unknown or not visible, 409 no longer pending, 400 bad request, 503 state
store or identity provider unavailable (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from aiohttp import web

from hoopd.approvals.models import Approval, ApprovalState, Grant, GrantState
from hoopd.approvals.store import (
    ApprovalStore,
    NotFoundError,
    NotPendingError,
    SelfApprovalError,
    StoreUnavailable,
    same_person,
)
from hoopd.identity.authenticator import Authenticator
from hoopd.identity.errors import AuthError
from hoopd.identity.tokens import TokenTooLarge, parse_ttl
from hoopd.model import AuthMethod, Identity

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_COMMENT = 2000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class TokenIssuer(Protocol):
    """What :func:`add_routes` needs to mint gateway tokens
    (:class:`hoopd.identity.tokens.GatewayTokens` fits)."""

    @property
    def max_ttl_seconds(self) -> int: ...

    def issue(
        self, sub: str, groups: Iterable[str] = (), ttl: float | str = 3600, *, email: str = ""
    ) -> str: ...


class Notifier(Protocol):
    def notify(self, event: str, obj: Approval | Grant) -> None: ...


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="hoopd"'} if status == 401 else None
    return web.json_response(
        {"error": code, "message": message, **extra}, status=status, headers=headers
    )


class _Reply(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def add_routes(
    app: web.Application,
    store: ApprovalStore,
    authenticator: Authenticator,
    reviewers_for: Callable[[str], set[str]],
    token_issuer: TokenIssuer | None,
    notifier: Notifier | None = None,
) -> None:
    """Register the approvals/grants/token routes on ``app``.

    ``reviewers_for(connection)`` returns the groups whose members may review
    that connection. ``token_issuer`` None disables ``POST /api/v1/token``
    (404). ``notifier`` (e.g. :class:`~hoopd.approvals.webhook.WebhookNotifier`)
    is told about decisions made through the API.
    """

    def notify(event: str, obj: Approval | Grant) -> None:
        if notifier is not None:
            try:
                notifier.notify(event, obj)
            except Exception:  # pragma: no cover - a notifier must never break the API
                log.exception("notifier failed")

    async def caller(request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not cred.strip():
            raise _Reply(error(401, "unauthorized", "missing bearer credential", reason="missing"))
        try:
            return await authenticator.authenticate(cred.strip())
        except AuthError as e:
            if e.reason == "unavailable":
                raise _Reply(error(503, "unavailable", str(e), reason=e.reason)) from None
            log.info("admin api: authentication failed: %s (%s)", e.reason, e)
            raise _Reply(
                error(401, "unauthorized", "invalid credential", reason=e.reason)
            ) from None

    def is_reviewer(ident: Identity, connection: str) -> bool:
        return bool(ident.groups & set(reviewers_for(connection)))

    def may_see_approval(ident: Identity, a: Approval) -> bool:
        return same_person(ident.subject, a.requester) or is_reviewer(ident, a.connection)

    def may_see_grant(ident: Identity, g: Grant) -> bool:
        return (
            same_person(ident.subject, g.requester)
            or (bool(g.subject) and same_person(ident.subject, g.subject))
            or is_reviewer(ident, g.connection)
        )

    async def body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            data = await request.json()
        except ValueError:
            raise _Reply(error(400, "bad_request", "body must be JSON")) from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise _Reply(error(400, "bad_request", "body must be a JSON object"))
        return data

    def comment_of(data: dict[str, Any]) -> str:
        c = data.get("comment", "")
        if not isinstance(c, str) or len(c) > MAX_COMMENT:
            raise _Reply(
                error(
                    400,
                    "bad_request",
                    f"comment must be a string of at most {MAX_COMMENT} characters",
                )
            )
        return c

    def guarded(fn: Handler) -> Handler:
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                return await fn(request)
            except _Reply as r:
                return r.response
            except StoreUnavailable as e:
                log.error("admin api: %s", e)
                return error(503, "store_unavailable", str(e))
            except SelfApprovalError as e:
                return error(403, "self_approval", str(e))
            except NotFoundError:
                return error(404, "not_found", "no such approval or grant")
            except NotPendingError as e:
                return error(409, "not_pending", str(e), state=e.state)

        return wrapper

    def state_param(
        request: web.Request, enum: type[ApprovalState] | type[GrantState]
    ) -> str | None:
        s = request.query.get("state")
        if s is None or s == "":
            return None
        if s not in {m.value for m in enum}:
            raise _Reply(error(400, "bad_request", f"unknown state {s!r}"))
        return s

    # -- approvals -------------------------------------------------------------

    @guarded
    async def list_approvals(request: web.Request) -> web.StreamResponse:
        ident = await caller(request)
        items = await store.list(
            state_param(request, ApprovalState), request.query.get("connection") or None
        )
        return web.json_response(
            {"approvals": [a.to_dict() for a in items if may_see_approval(ident, a)]}
        )

    @guarded
    async def show_approval(request: web.Request) -> web.StreamResponse:
        ident = await caller(request)
        a = await store.get(request.match_info["id"])
        if not may_see_approval(ident, a):
            raise NotFoundError(a.id)
        return web.json_response(a.to_dict())

    async def decide_approval(request: web.Request, approve: bool) -> web.StreamResponse:
        ident = await caller(request)
        data = await body(request)
        a = await store.get(request.match_info["id"])
        if not may_see_approval(ident, a):
            raise NotFoundError(a.id)
        if not is_reviewer(ident, a.connection):
            return error(
                403,
                "forbidden",
                f"{ident.subject} is not a reviewer for connection {a.connection!r}",
            )
        decided = await store.decide(a.id, ident, approve, comment_of(data))
        log.info("approval %s %s by %s", decided.id, decided.state.value, ident.subject)
        notify("approval.decided", decided)
        return web.json_response(decided.to_dict())

    @guarded
    async def approve(request: web.Request) -> web.StreamResponse:
        return await decide_approval(request, True)

    @guarded
    async def deny(request: web.Request) -> web.StreamResponse:
        return await decide_approval(request, False)

    # -- grants ------------------------------------------------------------------

    @guarded
    async def request_grant(request: web.Request) -> web.StreamResponse:
        ident = await caller(request)
        data = await body(request)
        connection, minutes = data.get("connection"), data.get("minutes")
        subject, group, reason = data.get("subject"), data.get("group"), data.get("reason", "")
        if not isinstance(connection, str) or not connection:
            return error(400, "bad_request", "connection is required")
        if not isinstance(minutes, int) or isinstance(minutes, bool):
            return error(400, "bad_request", "minutes must be an integer")
        for name, v in (("subject", subject), ("group", group)):
            if v is not None and not isinstance(v, str):
                return error(400, "bad_request", f"{name} must be a string")
        if not isinstance(reason, str) or len(reason) > MAX_COMMENT:
            return error(400, "bad_request", "reason must be a short string")
        try:
            g = await store.request_grant(
                ident, connection, minutes, subject=subject, group=group, reason=reason
            )
        except ValueError as e:
            return error(400, "bad_request", str(e))
        notify("grant.requested", g)
        return web.json_response(g.to_dict(), status=201)

    @guarded
    async def list_grants(request: web.Request) -> web.StreamResponse:
        ident = await caller(request)
        items = await store.list_grants(
            state_param(request, GrantState), request.query.get("connection") or None
        )
        return web.json_response(
            {"grants": [g.to_dict() for g in items if may_see_grant(ident, g)]}
        )

    async def grant_action(request: web.Request, action: str) -> web.StreamResponse:
        ident = await caller(request)
        data = await body(request)
        g = await store.get_grant(request.match_info["id"])
        if not may_see_grant(ident, g):
            raise NotFoundError(g.id)
        comment = comment_of(data)
        if action == "revoke":
            own = same_person(ident.subject, g.requester) or (
                bool(g.subject) and same_person(ident.subject, g.subject)
            )
            if not own and not is_reviewer(ident, g.connection):
                return error(403, "forbidden", f"{ident.subject} may not revoke grant {g.id}")
            out = await store.revoke_grant(g.id, ident, comment)
            notify("grant.revoked", out)
        else:
            if not is_reviewer(ident, g.connection):
                return error(
                    403,
                    "forbidden",
                    f"{ident.subject} is not a reviewer for connection {g.connection!r}",
                )
            out = await store.decide_grant(g.id, ident, action == "approve", comment)
            notify("grant.decided", out)
        log.info("grant %s %s by %s", out.id, out.state.value, ident.subject)
        return web.json_response(out.to_dict())

    @guarded
    async def grant_approve(request: web.Request) -> web.StreamResponse:
        return await grant_action(request, "approve")

    @guarded
    async def grant_deny(request: web.Request) -> web.StreamResponse:
        return await grant_action(request, "deny")

    @guarded
    async def grant_revoke(request: web.Request) -> web.StreamResponse:
        return await grant_action(request, "revoke")

    # -- token exchange --------------------------------------------------------

    @guarded
    async def exchange_token(request: web.Request) -> web.StreamResponse:
        ident = await caller(request)
        if token_issuer is None:
            return error(404, "not_found", "token exchange is disabled")
        if ident.method is not AuthMethod.OIDC:
            return error(
                403, "forbidden", "only an identity-provider (OIDC) token can be exchanged"
            )
        data = await body(request)
        raw_ttl = data.get("ttl", token_issuer.max_ttl_seconds)
        try:
            ttl = parse_ttl(raw_ttl) if isinstance(raw_ttl, str | int | float) else -1.0
            if ttl <= 0:
                raise ValueError("ttl must be a positive duration")
            ttl = min(ttl, float(token_issuer.max_ttl_seconds))
            token = token_issuer.issue(ident.subject, ident.groups, ttl, email=ident.email)
        except TokenTooLarge as e:
            return error(422, "token_too_large", str(e))
        except ValueError as e:
            return error(400, "bad_request", str(e))
        log.info("issued gateway token for %s (ttl %ss)", ident.subject, int(ttl))
        return web.json_response(
            {
                "token": token,
                "token_type": "hoopd-gateway",
                "subject": ident.subject,
                "groups": sorted(ident.groups),
                "expires_at": int(time.time()) + round(ttl),
                "ttl_seconds": round(ttl),
            }
        )

    r = app.router
    r.add_get(f"{PREFIX}/approvals", list_approvals)
    r.add_get(f"{PREFIX}/approvals/{{id}}", show_approval)
    r.add_post(f"{PREFIX}/approvals/{{id}}/approve", approve)
    r.add_post(f"{PREFIX}/approvals/{{id}}/deny", deny)
    r.add_post(f"{PREFIX}/grants", request_grant)
    r.add_get(f"{PREFIX}/grants", list_grants)
    r.add_post(f"{PREFIX}/grants/{{id}}/approve", grant_approve)
    r.add_post(f"{PREFIX}/grants/{{id}}/deny", grant_deny)
    r.add_post(f"{PREFIX}/grants/{{id}}/revoke", grant_revoke)
    r.add_post(f"{PREFIX}/token", exchange_token)
