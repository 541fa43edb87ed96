"""One client session through the gateway.

The session is the single path by which a handler reports what happens:
commands, decisions, output, errors. It records each event, counts it in the
metrics and logs it with the session id, so these three views can never
disagree and no handler can forget one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hoopd.log import SessionLogger
from hoopd.model import (
    ApprovalEvent,
    Command,
    CommandKind,
    CommandResult,
    Decision,
    ErrorEvent,
    Event,
    Identity,
    Output,
    Resize,
    SessionEnd,
    SessionStart,
    Stream,
    Verdict,
)
from hoopd.policy import Assessment, decide_command
from recorder.writer import RecorderUnavailable

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.gateway import Gateway
    from hoopd.metrics import ConnectionMetrics
    from recorder.writer import SessionRecording

class SessionEnded(Exception):
    """The session was ended (e.g. its recording failed): stop relaying."""


Terminator = Callable[[str, str], None]
"""Called with (reason, message) when the gateway ends a session from outside:
shutdown, recorder failure, credential expiry. The handler tells the client
in its protocol's terms and closes both sides."""


class Session:
    def __init__(
        self,
        gateway: Gateway,
        connection: ConnectionConfig,
        protocol: str,
        session_id: str,
        identity: Identity,
        client_addr: str,
        recording: SessionRecording,
        metrics: ConnectionMetrics,
        break_glass: bool = False,
    ) -> None:
        self.gateway = gateway
        self.connection = connection
        self.protocol = protocol
        self.id = session_id
        self.identity = identity
        self.client_addr = client_addr
        self.recording = recording
        self.metrics = metrics
        self.break_glass = break_glass
        self.log = SessionLogger(logging.getLogger(f"hoopd.session.{protocol}"), session_id)
        self.started = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.ended = False
        self.end_reason = ""
        self._command_seq = 0
        self._terminator: Terminator | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._done = asyncio.Event()
        self._terminating = False

    # -- lifecycle -----------------------------------------------------------
    def begin(self, decision: Decision, attrs: Mapping[str, Any]) -> None:
        self.record(
            SessionStart(
                session_id=self.id,
                connection=self.connection.name,
                protocol=self.protocol,
                identity=self.identity,
                client_addr=self.client_addr,
                gateway=self.gateway.config.gateway.id,
                attrs=dict(attrs),
            )
        )
        self._record_decision(decision)
        self.metrics.sessions_total.inc()
        self.metrics.sessions_active.inc()
        self.log.info(
            "session started: %s from %s on %s (%s)",
            self.identity.subject,
            self.client_addr,
            self.connection.name,
            "; ".join(decision.reasons),
        )

    def set_terminator(self, terminator: Terminator) -> None:
        self._terminator = terminator

    def expire_at(self, unix_time: float, grace: float) -> None:
        """End the session when its credential expires (plus grace)."""
        loop = asyncio.get_running_loop()
        delay = max(0.0, unix_time + grace - time.time())
        self._expiry = loop.call_later(
            delay, self.terminate, "credential_expired", "your credential has expired"
        )

    def terminate(self, reason: str, message: str) -> None:
        """End the session from outside the handler (it closes the sockets)."""
        if self.ended or self._terminating:
            return
        self._terminating = True
        self.log.warning("ending session: %s", message)
        self.end_reason = reason
        if self._terminator is not None:
            self._terminator(reason, message)
        else:
            self.end(reason, message)

    def end(self, reason: str, error: str = "") -> None:
        if self.ended:
            return
        self.ended = True
        reason = self.end_reason or reason
        if self._expiry is not None:
            self._expiry.cancel()
        try:
            self.recording.write(SessionEnd(reason, error, self.bytes_in, self.bytes_out))
        except RecorderUnavailable as exc:  # the end is still logged and counted
            self.log.error("could not record session end: %s", exc)
        self.recording.close()
        self.metrics.sessions_active.dec()
        self.metrics.ended(reason)
        self.gateway.session_ended(self)
        self.log.info(
            "session ended: %s%s (in %d B, out %d B, %.1fs)",
            reason,
            f": {error}" if error else "",
            self.bytes_in,
            self.bytes_out,
            time.monotonic() - self.started,
        )
        self._done.set()

    async def wait_ended(self) -> None:
        await self._done.wait()

    # -- recording -----------------------------------------------------------
    def record(self, event: Event) -> None:
        """Record an event, before the data it describes moves on. If the
        recorder has failed, the session is ended (fail closed) and
        ``SessionEnded`` tells the caller not to forward anything more."""
        try:
            self.recording.write(event)
        except RecorderUnavailable as exc:
            if not self.ended:
                self.terminate(
                    "recorder_failed",
                    "session recording failed; the gateway does not carry unrecorded traffic",
                )
            raise SessionEnded(str(exc)) from None

    @property
    def congested(self) -> bool:
        """The recorder is behind: stop reading from the client until it catches up."""
        return self.recording.congested

    def wait_uncongested(self) -> Awaitable[None]:
        return self.recording.wait_uncongested()

    def client_data(self, data: bytes, *, record: bool = True) -> None:
        """Bytes from the client to the upstream."""
        self.bytes_in += len(data)
        self.metrics.bytes_in.inc(len(data))
        if record:
            self.record(Output(Stream.STDIN, data))

    def upstream_data(
        self,
        data: bytes,
        stream: Stream = Stream.STDOUT,
        *,
        command_seq: int = 0,
        masked: Mapping[str, int] | None = None,
        record: bool = True,
    ) -> None:
        """Bytes from the upstream to the client, after masking."""
        self.bytes_out += len(data)
        self.metrics.bytes_out.inc(len(data))
        if masked:
            self.metrics.masked(dict(masked))
        if record:
            self.record(Output(stream, data, command_seq, masked or {}))

    def resize(self, cols: int, rows: int) -> None:
        self.record(Resize(cols, rows))

    def error(self, message: str, code: str = "") -> None:
        """Record an error the client was told about. Never raises: it is
        used on the way out, when the recorder may be the thing that failed."""
        with contextlib.suppress(SessionEnded):
            self.record(ErrorEvent(message, code))

    # -- commands ------------------------------------------------------------
    def command(
        self,
        kind: CommandKind,
        text: str,
        attrs: Mapping[str, Any] | None = None,
        recorded: str | None = None,
    ) -> Command:
        """A new command. ``recorded``: the text the recording keeps, if not
        ``text`` (values in it masked); policy and approvals use ``text``."""
        self._command_seq += 1
        cmd = Command(self._command_seq, kind, text, dict(attrs or {}))
        if recorded is None or recorded is text:
            self.record(cmd)
        else:
            self.record(Command(cmd.seq, kind, recorded, cmd.attrs))
        self.metrics.command(kind._value_)
        return cmd

    def result(
        self,
        cmd: Command,
        status: str,
        *,
        duration_ms: float = 0.0,
        rows: int | None = None,
        error: str = "",
    ) -> None:
        self.record(CommandResult(cmd.seq, status, duration_ms, rows, error))

    def _record_decision(self, decision: Decision) -> None:
        self.record(decision)
        self.metrics.decision(decision.verdict._value_)
        if decision.break_glass:
            self.log.warning("break-glass decision: %s", "; ".join(decision.reasons))

    async def decide(
        self,
        cmd: Command,
        found: Assessment,
        *,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        on_held: Callable[[str, str], Awaitable[None] | None] | None = None,
        shown: str | None = None,
    ) -> Decision:
        """Judge a command; hold it for a reviewer when policy says so.

        Returns the effective decision: ALLOW/MASK to forward, DENY to refuse
        (including a denied, expired or failed review). ``on_held(approval_id,
        message)`` lets the handler tell the waiting client how to get the
        command approved; ``shown`` is the command's text for reviewers, if
        not ``cmd.text`` (the approval stays bound to ``cmd.text``).
        """
        decision = decide_command(
            cmd.seq, self.connection.risk, self.identity, found, break_glass=self.break_glass
        )
        self._record_decision(decision)
        if decision.verdict is not Verdict.REVIEW:
            return decision
        return await self.gateway.hold_for_review(self, cmd, decision, params, on_held, shown)

    def approval_event(self, event: ApprovalEvent) -> None:
        self.record(event)

    def final_decision(self, decision: Decision) -> Decision:
        self._record_decision(decision)
        return decision
