"""The services every protocol handler shares, in one explicitly passed
object: config, recorder, metrics, TLS, identity, approvals and the registry
of live sessions.

``open_session`` is the one door into a session. It fails closed: if the
recorder cannot write, the session is refused before any byte reaches the
upstream, and the reason is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hoopd.approvals.models import Approval, command_hash
from hoopd.metrics import ConnectionMetrics, Metrics
from hoopd.model import ApprovalEvent, Command, Decision, Identity, Verdict
from hoopd.policy import authorize_session
from hoopd.session import Session

if TYPE_CHECKING:
    import ssl

    from hoopd.config import ConnectionConfig, GatewayConfig
    from hoopd.tls import TlsMaterial
    from recorder.writer import Recorder

log = logging.getLogger("hoopd.gateway")

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_session_id() -> str:
    """Time-ordered (sorts by start time in a directory listing) and unguessable:
    48 bits of milliseconds then 80 random bits, Crockford base32."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    out = []
    for _ in range(26):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


class SessionRefused(Exception):
    """The gateway will not carry this session. ``reason`` is a metric label;
    ``message`` is safe to show the client."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class AuthenticatorSlot:
    """Holds the current authenticator. The admin API and every handler keep
    this one object, so a reload that changes API keys or OIDC settings
    applies to the next login without rebuilding them."""

    def __init__(self, current: Any) -> None:
        self.current = current

    async def authenticate(self, credential: str) -> Identity:
        identity: Identity = await self.current.authenticate(credential)
        return identity

    async def exchange(self, *args: Any, **kwargs: Any) -> Any:
        return await self.current.exchange(*args, **kwargs)

    def session_deadline(self, identity: Identity) -> float | None:
        deadline: float | None = self.current.session_deadline(identity)
        return deadline

    async def swap(self, new: Any) -> None:
        old, self.current = self.current, new
        await old.close()

    async def close(self) -> None:
        await self.current.close()


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        metrics: Metrics,
        recorder: Recorder,
        tls: TlsMaterial,
        *,
        authenticator: Any = None,
        approvals: Any = None,
        notifier: Any = None,
        tokens: Any = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.recorder = recorder
        self.tls = tls
        self.authenticator = authenticator
        self.approvals = approvals
        self.notifier = notifier
        self.tokens = tokens
        """Issues gateway tokens (admin API token exchange)."""
        self.sessions: dict[str, Session] = {}
        self._conn_metrics: dict[tuple[str, str], ConnectionMetrics] = {}
        self._ssl_contexts: dict[str, ssl.SSLContext] = {}
        self._maskers: dict[tuple[str, int], tuple[tuple[str, ...], Any]] = {}
        self._masking_key: bytes | None = None
        self.accepting = True

    def connection_metrics(self, conn: ConnectionConfig) -> ConnectionMetrics:
        key = (conn.protocol, conn.name)
        cm = self._conn_metrics.get(key)
        if cm is None:
            cm = self._conn_metrics[key] = ConnectionMetrics(self.metrics, *key)
        return cm

    def masker(self, conn: ConnectionConfig) -> Any:
        """The compiled masker for a connection (``masking.engine.Masker``),
        built once per connection config: credential recognizers are on by
        default even when the connection says nothing about masking, and the
        secrets the gateway injects upstream are masked even with masking off
        (``hoopd.injected``). A credential read from a file that rotates
        changes the injected secrets: the masker is built again then."""
        from hoopd.injected import injected_secrets

        key = (conn.name, id(conn))
        literals = tuple(injected_secrets(conn.upstream))
        cached = self._maskers.get(key)
        if cached is not None and cached[0] == literals:
            return cached[1]
        from masking.config import MaskingConfig
        from masking.engine import build_masker

        masking = conn.masking if conn.masking is not None else MaskingConfig()
        masker = build_masker(masking, self.masking_key, literals=list(literals))
        self._maskers[key] = (literals, masker)
        return masker

    def forget_maskers(self) -> None:
        self._maskers.clear()

    @property
    def masking_key(self) -> bytes:
        if self._masking_key is None:
            configured = self.config.gateway.masking_key
            if configured is not None:
                self._masking_key = configured.reveal().encode()
            else:
                self._masking_key = load_or_create_secret(
                    self.config.gateway.data_dir / "masking-key"
                )
        return self._masking_key

    def server_ssl_context(self, conn: ConnectionConfig) -> ssl.SSLContext:
        client_ca = conn.tls.client_ca if conn.tls else None
        key = f"{conn.name}:{client_ca}"
        ctx = self._ssl_contexts.get(key)
        if ctx is None:
            ctx = self._ssl_contexts[key] = self.tls.server_context(client_ca)
        return ctx

    # -- identity ------------------------------------------------------------
    async def authenticate(self, conn: ConnectionConfig, credential: str) -> Identity:
        """Check a credential presented in the protocol (password, bearer).
        Raises ``AuthFailed`` with a metric reason; the handler answers with
        its protocol's generic authentication error."""
        cm = self.connection_metrics(conn)
        if self.authenticator is None:
            cm.auth_failed("no_identity_config")
            raise AuthFailed("unavailable", "authentication is not configured")
        try:
            identity: Identity = await self.authenticator.authenticate(credential)
        except Exception as exc:
            reason = getattr(exc, "reason", "error")
            cm.auth_failed(str(reason))
            log.info("authentication failed on %s: %s", conn.name, exc)
            raise AuthFailed(str(reason), str(exc)) from None
        return identity

    # -- sessions ------------------------------------------------------------
    async def open_session(
        self,
        conn: ConnectionConfig,
        identity: Identity,
        client_addr: str,
        attrs: Mapping[str, Any] | None = None,
    ) -> Session:
        """Authorize and start recording a session, or raise SessionRefused."""
        cm = self.connection_metrics(conn)
        if not self.accepting:
            cm.refused("shutting_down")
            raise SessionRefused("shutting_down", "the gateway is shutting down")
        if not self.recorder.healthy and not self.recorder.check_writable():
            cm.refused("recorder_unavailable")
            log.error(
                "refusing session on %s: recordings cannot be written (%s)",
                conn.name,
                self.recorder.last_error,
            )
            raise SessionRefused(
                "recorder_unavailable", "the gateway cannot record sessions right now"
            )
        grant_id = await self._active_grant(conn, identity)
        decision = authorize_session(conn, identity, grant_id=grant_id)
        session_id = new_session_id()
        from recorder.writer import RecorderUnavailable

        try:
            recording = self.recorder.open_session(session_id)
        except RecorderUnavailable as exc:
            cm.refused("recorder_unavailable")
            log.error("refusing session on %s: %s", conn.name, exc)
            raise SessionRefused(
                "recorder_unavailable", "the gateway cannot record sessions right now"
            ) from None
        session = Session(
            self,
            conn,
            conn.protocol,
            session_id,
            identity,
            client_addr,
            recording,
            cm,
            break_glass=decision.break_glass,
        )
        recording.on_failure = lambda why: session.terminate(
            "recorder_failed", f"session recording failed: {why}"
        )
        self.sessions[session_id] = session
        session.begin(decision, attrs or {})
        if decision.verdict is Verdict.DENY:
            cm.refused("denied")
            session.end("denied", "; ".join(decision.reasons))
            raise SessionRefused("denied", "access denied by policy")
        if identity.expires_at is not None:
            grace = float(getattr(self.config.identity, "expiry_grace_seconds", 0.0) or 0.0)
            session.expire_at(identity.expires_at, grace)
        return session

    async def _active_grant(self, conn: ConnectionConfig, identity: Identity) -> str | None:
        if self.approvals is None or identity.anonymous:
            return None
        if identity.groups.intersection(conn.allow_groups):
            return None  # no need to look
        try:
            grant = await self.approvals.active_grant(identity.subject, identity.groups, conn.name)
        except Exception as exc:
            log.warning("could not look up grants for %s: %s", identity.subject, exc)
            return None
        return grant.id if grant is not None else None

    def session_ended(self, session: Session) -> None:
        self.sessions.pop(session.id, None)

    def terminate_all(self, reason: str, message: str) -> None:
        for session in list(self.sessions.values()):
            session.terminate(reason, message)

    async def wait_sessions(self, timeout: float) -> bool:
        """Wait for live sessions to end; True if all ended in time."""
        sessions = list(self.sessions.values())
        if not sessions:
            return True
        waiters = [asyncio.ensure_future(s.wait_ended()) for s in sessions]
        _, pending = await asyncio.wait(waiters, timeout=timeout)
        for w in pending:
            w.cancel()
        return not pending

    # -- approvals -----------------------------------------------------------
    async def create_approval(
        self, session: Session, cmd: Command, decision: Decision, digest: str, shown: str | None = None
    ) -> Approval:
        """Record a pending approval of ``cmd`` (REVIEW ``decision``) for
        ``session``'s identity, bound to ``digest``, open for the connection's
        approval timeout; ``shown``: the text reviewers see and the store
        keeps, if not ``cmd.text`` (a password in it redacted). ``self.approvals``
        must be set; store errors propagate (the caller refuses the command)."""
        conn = session.connection
        approval: Approval = await self.approvals.create(
            requester=session.identity,
            connection=conn.name,
            session_id=session.id,
            command_text=cmd.text if shown is None else shown,
            command_hash=digest,
            reasons=list(decision.reasons),
            ttl=conn.approval.timeout,
        )
        return approval

    async def hold_for_review(
        self,
        session: Session,
        cmd: Command,
        decision: Decision,
        params: Sequence[Any] | Mapping[str, Any] | None,
        on_held: Callable[[str, str], Awaitable[None] | None] | None,
        shown: str | None = None,
    ) -> Decision:
        """Create an approval, wait for a reviewer, consume it. Any failure of
        the approval store denies the command (fail closed). The approval is
        bound to ``cmd.text``; ``shown`` is what reviewers see of it."""
        cm = session.metrics
        conn = session.connection
        digest = command_hash(cmd.text, params)
        if self.approvals is None:
            cm.approval("store_unavailable")
            return session.final_decision(
                deny_decision(decision, "approvals are not configured: held commands cannot run")
            )
        try:
            approval = await self.create_approval(session, cmd, decision, digest, shown)
        except Exception as exc:
            cm.approval("store_unavailable")
            session.log.error("approval store unavailable, denying command: %s", exc)
            return session.final_decision(
                deny_decision(decision, f"approval store unavailable: {exc}")
            )
        session.approval_event(ApprovalEvent(approval.id, cmd.seq, "pending", digest))
        cm.approval("requested")
        if self.notifier is not None:
            self.notifier.notify("approval.created", approval)
        message = (
            f"hoopd: this command needs a reviewer's approval (id {approval.id}). "
            f"A reviewer can run: hoopd approvals approve {approval.id}"
        )
        if on_held is not None:
            maybe = on_held(approval.id, message)
            if maybe is not None:
                await maybe
        started = time.monotonic()
        cm.approvals_pending.inc()
        try:
            final = await self.approvals.wait(approval.id, conn.approval.timeout)
        except Exception as exc:
            session.log.error("approval store failed while waiting: %s", exc)
            final = None
            failure = f"approval store unavailable: {exc}"
        finally:
            cm.approvals_pending.dec()
        waited = time.monotonic() - started
        if final is None:
            cm.approval("store_unavailable", waited)
            return session.final_decision(deny_decision(decision, failure, approval.id))
        state = str(getattr(final.state, "value", final.state))
        session.approval_event(
            ApprovalEvent(
                approval.id, cmd.seq, state, digest, final.reviewer or "", final.comment or ""
            )
        )
        if self.notifier is not None:
            self.notifier.notify("approval.decided", final)
        if state == "approved":
            try:
                used = await self.approvals.consume(approval.id, session.id, digest)
            except Exception as exc:
                used = False
                session.log.error("could not consume approval %s: %s", approval.id, exc)
            if used:
                cm.approval("approved", waited)
                session.approval_event(ApprovalEvent(approval.id, cmd.seq, "used", digest))
                return session.final_decision(
                    approved_decision(decision, approval.id, final.reviewer)
                )
            state = "unusable"
        cm.approval(state, waited)
        why = {
            "denied": f"denied by {final.reviewer}" + (f": {final.comment}" if final.comment else ""),
            "expired": "no reviewer decided in time",
        }.get(state, f"approval is {state}")
        return session.final_decision(
            deny_decision(decision, why, approval.id, final.reviewer or "")
        )


def approved_decision(decision: Decision, approval_id: str, reviewer: str | None) -> Decision:
    """A REVIEW ``decision`` turned into ALLOW by ``reviewer``'s approval."""
    return Decision(
        decision.command_seq,
        Verdict.ALLOW,
        decision.risk,
        (*decision.reasons, f"approved by {reviewer}"),
        decision.rule_ids,
        approval_id=approval_id,
        approver=reviewer or "",
    )


def deny_decision(
    decision: Decision, why: str, approval_id: str = "", approver: str = ""
) -> Decision:
    """``decision`` turned into DENY, with ``why`` added to its reasons."""
    return Decision(
        decision.command_seq,
        Verdict.DENY,
        decision.risk,
        (*decision.reasons, why),
        decision.rule_ids,
        approval_id=approval_id,
        approver=approver,
    )


class AuthFailed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def load_or_create_secret(path: Path, size: int = 32) -> bytes:
    """A random key kept in a 0600 file, created on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
