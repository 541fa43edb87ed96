"""Gateway token revocations: from the shared state store into every gateway.

``hoopd token revoke`` writes a revocation to the state store. Each gateway
loads the store's revocations before it listens and polls them every
``POLL_SECONDS``, so a revocation written on any host (or by any gateway
sharing a postgres store) applies everywhere within about a second:

* new logins with a revoked token are refused (``AuthError("revoked")``);
* live sessions that logged in with one are ended (``credential_revoked``).

Fail closed: until the revocations have been read once, gateway tokens are
refused (other credentials are not affected), because a revoked token must
never be accepted just because the store was down when the gateway started.
After a successful read, a failing poll keeps the last known revocations
(they only ever grow) and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from hoopd.model import AuthMethod

if TYPE_CHECKING:
    from hoopd.gateway import Gateway
    from hoopd.identity.tokens import TokenRevocation

log = logging.getLogger("hoopd.revocations")

POLL_SECONDS = 1.0
UNREAD = "token revocations could not be read from the state store"


class RevocationWatcher:
    def __init__(self, gateway: Gateway, poll_seconds: float = POLL_SECONDS) -> None:
        self.gateway = gateway
        self.poll_seconds = poll_seconds
        self.known: list[TokenRevocation] = []
        self.loaded = False
        self._failing = False  # log a failing store once, not every poll
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read once (refusing gateway tokens if that fails), then poll."""
        if not await self.poll():
            self._refuse_tokens(UNREAD)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="token-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def apply_to(self, tokens: Any) -> None:
        """A new token verifier (after a reload) gets what is known at once."""
        if tokens is None:
            return
        tokens.apply_revocations(self.known)
        if not self.loaded:
            tokens.revocations_unavailable = UNREAD

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            await self.poll()

    async def poll(self) -> bool:
        store = self.gateway.approvals
        if store is None:
            self.loaded = True  # no state store configured: nothing can be revoked
            return True
        try:
            found = await store.token_revocations(time.time())
        except Exception as exc:
            if not self._failing:
                log.warning("cannot read token revocations (keeping the last known): %s", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("token revocations readable again")
            self._failing = False
        new = [r for r in found if r not in self.known]
        tokens = self.gateway.tokens
        if not self.loaded:
            self.loaded = True
            if tokens is not None:
                tokens.revocations_unavailable = None
                log.info("token revocations loaded: %d", len(found))
        if new:
            self.known.extend(new)
            if tokens is not None:
                tokens.apply_revocations(new)
            for r in new:
                log.warning("gateway token revocation: %s %s (by %s: %s)", r.kind, r.value,
                            r.revoked_by or "?", r.reason or "no reason given")
            self._end_revoked_sessions()
        return True

    def _refuse_tokens(self, why: str) -> None:
        tokens = self.gateway.tokens
        if tokens is not None:
            tokens.revocations_unavailable = why
        log.error("%s: gateway tokens are refused until they can be read", why)

    def _end_revoked_sessions(self) -> None:
        tokens = self.gateway.tokens
        if tokens is None:
            return
        for session in list(self.gateway.sessions.values()):
            who = session.identity
            if who.method is AuthMethod.GATEWAY_TOKEN and tokens.is_revoked(
                who.credential_id, who.subject, who.issued_at or 0.0
            ):
                session.terminate("credential_revoked", "your gateway token has been revoked")
