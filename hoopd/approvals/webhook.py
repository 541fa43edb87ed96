"""Chat / webhook notifications for approvals and grants.

:class:`WebhookNotifier` is fire-and-forget: :meth:`WebhookNotifier.notify`
only puts the event on a bounded queue (dropping it, with a warning and a
counter, when the queue is full) and returns at once; a background task posts
each event, retrying failures (connection errors, HTTP 429 and 5xx) with
exponential backoff. A held session never waits on a webhook.

Payloads:

* ``format="json"``::

    {"event": "approval.created", "approval": {...Approval.to_dict()...}}
    {"event": "grant.decided", "grant": {...Grant.to_dict()...}}

* ``format="slack"`` (Slack/Mattermost/Rocket.Chat incoming webhooks)::

    {"text": ":hourglass: alice asks to run on *prod-db* ...\\n```DROP TABLE t```\\n..."}

With ``secret`` set, each request carries
``X-Hoopd-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any, Literal

import aiohttp

from hoopd.approvals.models import Approval, Grant

log = logging.getLogger(__name__)

EventName = Literal[
    "approval.created",
    "approval.decided",
    "grant.requested",
    "grant.decided",
    "grant.revoked",
]

_MAX_TEXT = 1500


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_text(event: str, obj: Approval | Grant, public_url: str = "") -> str:
    """Human message for chat webhooks."""
    if isinstance(obj, Approval):
        cmd = _clip(obj.command_text).replace("```", "'''")
        if event == "approval.created":
            reasons = ", ".join(obj.reasons) or "policy"
            lines = [
                f":hourglass: *{obj.requester}* asks to run on *{obj.connection}* (approval `{obj.id}`, {reasons}):",
                f"```{cmd}```",
                f"Approve: `hoopd approvals approve {obj.id}` · Deny: `hoopd approvals deny {obj.id}`",
            ]
            if public_url:
                lines.append(f"{public_url.rstrip('/')}/api/v1/approvals/{obj.id}")
            return "\n".join(lines)
        icon = {"approved": ":white_check_mark:", "denied": ":no_entry:"}.get(
            obj.state.value, ":grey_question:"
        )
        note = f" — {obj.comment}" if obj.comment else ""
        return f"{icon} `{obj.id}` on *{obj.connection}* for {obj.requester} {obj.state.value} by *{obj.reviewer}*{note}\n```{cmd}```"
    who = obj.subject or f"group {obj.group}"
    if event == "grant.requested":
        why = f" — {obj.reason}" if obj.reason else ""
        return (
            f":key: *{obj.requester}* requests *{obj.connection}* for {who}, {obj.minutes} min "
            f"(grant `{obj.id}`){why}\nApprove: `hoopd grants approve {obj.id}`"
        )
    note = f" — {obj.comment}" if obj.comment else ""
    return f":key: grant `{obj.id}` ({obj.connection} for {who}) {obj.state.value} by *{obj.reviewer}*{note}"


def payload_for(
    event: str, obj: Approval | Grant, fmt: Literal["json", "slack"], public_url: str = ""
) -> dict[str, Any]:
    if fmt == "slack":
        return {"text": slack_text(event, obj, public_url)}
    key = "approval" if isinstance(obj, Approval) else "grant"
    return {"event": event, key: obj.to_dict()}


class WebhookNotifier:
    """Post approval/grant events to ``url``.

    ``retries`` is the number of retries after the first attempt; the n-th
    retry waits ``backoff * 2**(n-1)`` seconds (capped at ``max_backoff``).
    Call :meth:`close` on shutdown (it drains the queue for up to
    ``drain_timeout`` seconds, then cancels).
    """

    def __init__(
        self,
        url: str,
        format: Literal["json", "slack"] = "json",
        retries: int = 5,
        backoff: float = 1.0,
        *,
        max_backoff: float = 60.0,
        queue_size: int = 1000,
        timeout: float = 10.0,
        secret: str | None = None,
        public_url: str = "",
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        if format not in ("json", "slack"):
            raise ValueError("webhook format must be 'json' or 'slack'")
        self.url = url
        self.format: Literal["json", "slack"] = format
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.secret = secret
        self.public_url = public_url
        self._session_factory = session_factory
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def notify(self, event: EventName | str, obj: Approval | Grant) -> None:
        """Queue ``event`` for delivery and return immediately (never raises
        for delivery problems). Must be called from the event loop."""
        if self._closed:
            return
        body = json.dumps(payload_for(event, obj, self.format, self.public_url)).encode()
        try:
            self._queue.put_nowait((event, body))
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("webhook: queue full, dropped %s for %s", event, obj.id)
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hoopd-webhook")

    async def _run(self) -> None:
        session = (
            self._session_factory()
            if self._session_factory
            else aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        )
        try:
            while True:
                event, body = await self._queue.get()
                try:
                    await self._deliver(session, event, body)
                finally:
                    self._queue.task_done()
        finally:
            await session.close()

    async def _deliver(self, session: aiohttp.ClientSession, event: str, body: bytes) -> None:
        headers = {"Content-Type": "application/json", "User-Agent": "hoopd-webhook/1"}
        if self.secret:
            mac = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Hoopd-Signature"] = f"sha256={mac}"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))
            try:
                async with session.post(self.url, data=body, headers=headers) as resp:
                    if resp.status < 300:
                        self.sent += 1
                        return
                    if resp.status < 500 and resp.status != 429:
                        log.warning(
                            "webhook: %s rejected with HTTP %d, not retrying", event, resp.status
                        )
                        self.failed += 1
                        return
                    error = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                error = str(e) or type(e).__name__
            log.info("webhook: %s attempt %d failed: %s", event, attempt + 1, error)
        self.failed += 1
        log.warning("webhook: giving up on %s after %d attempts", event, self.retries + 1)

    async def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every queued event was delivered or given up; False on timeout."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, drain_timeout: float = 2.0) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            await self.drain(drain_timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
