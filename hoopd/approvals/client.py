"""Small synchronous client for the admin API (used by the ``hoopd`` CLI).

Example::

    c = ApprovalsClient("https://gw.example.com:8443", token)
    for a in c.list(state="pending"):
        print(a["id"], a["requester"], a["command_text"])
    c.approve("apr_0123456789abcdef", comment="looks fine")
    g = c.grants.request("prod-db", 30, reason="INC-42")
    c.grants.revoke(g["id"])
    gw_token = c.exchange_token("8h")["token"]   # when ``token`` is an OIDC token

Every method returns the parsed JSON (dicts / lists of dicts) or raises
:class:`ApiError` with the HTTP status and the server's message, or
:class:`ApiError` with status 0 when the gateway cannot be reached.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ApiError(Exception):
    """``status`` is the HTTP status (0: not reached); ``code`` the server's
    error code (``unauthorized``, ``forbidden``, ``self_approval``,
    ``not_found``, ``not_pending``, ``store_unavailable``, ...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if status else message)
        self.status = status
        self.code = code
        self.message = message


class ApprovalsClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.grants = GrantsClient(self)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str | None] | None = None,
    ) -> Any:
        url = self.base_url + path
        q = {k: v for k, v in (query or {}).items() if v}
        if q:
            url += "?" + urllib.parse.urlencode(q)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(
                req, timeout=self.timeout, context=self.ssl_context
            ) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                payload = json.loads(raw)
                code = str(payload.get("error", "error"))
                message = str(payload.get("message") or code)
                if payload.get("reason"):
                    message += f" ({payload['reason']})"
            except (ValueError, AttributeError):
                code, message = "error", raw.decode("utf-8", "replace")[:200] or e.reason
            raise ApiError(e.code, code, message) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ApiError(
                0, "unreachable", f"cannot reach gateway at {self.base_url}: {reason}"
            ) from None
        return json.loads(raw) if raw else None

    # approvals
    def list(self, state: str | None = None, connection: str | None = None) -> list[dict[str, Any]]:
        out = self.request(
            "GET", "/api/v1/approvals", query={"state": state, "connection": connection}
        )
        return list(out["approvals"])

    def show(self, approval_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/approvals/{_q(approval_id)}"))

    def approve(self, approval_id: str, comment: str = "") -> dict[str, Any]:
        return dict(
            self.request(
                "POST", f"/api/v1/approvals/{_q(approval_id)}/approve", {"comment": comment}
            )
        )

    def deny(self, approval_id: str, comment: str = "") -> dict[str, Any]:
        return dict(
            self.request("POST", f"/api/v1/approvals/{_q(approval_id)}/deny", {"comment": comment})
        )

    def exchange_token(self, ttl: str | float | None = None) -> dict[str, Any]:
        """Exchange this client's (OIDC) token for a gateway token."""
        return dict(self.request("POST", "/api/v1/token", {} if ttl is None else {"ttl": ttl}))


class GrantsClient:
    def __init__(self, client: ApprovalsClient) -> None:
        self._c = client

    def request(
        self,
        connection: str,
        minutes: int,
        *,
        subject: str | None = None,
        group: str | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"connection": connection, "minutes": minutes, "reason": reason}
        if subject:
            body["subject"] = subject
        if group:
            body["group"] = group
        return dict(self._c.request("POST", "/api/v1/grants", body))

    def list(self, state: str | None = None, connection: str | None = None) -> list[dict[str, Any]]:
        out = self._c.request(
            "GET", "/api/v1/grants", query={"state": state, "connection": connection}
        )
        return list(out["grants"])

    def approve(self, grant_id: str, comment: str = "") -> dict[str, Any]:
        return dict(
            self._c.request("POST", f"/api/v1/grants/{_q(grant_id)}/approve", {"comment": comment})
        )

    def deny(self, grant_id: str, comment: str = "") -> dict[str, Any]:
        return dict(
            self._c.request("POST", f"/api/v1/grants/{_q(grant_id)}/deny", {"comment": comment})
        )

    def revoke(self, grant_id: str, comment: str = "") -> dict[str, Any]:
        return dict(
            self._c.request("POST", f"/api/v1/grants/{_q(grant_id)}/revoke", {"comment": comment})
        )


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
