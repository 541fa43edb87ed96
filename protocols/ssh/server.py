"""The asyncssh driver: one client connection, its gateway session, its
upstream connection and the channels between them.

Each client SSH connection gets one gateway ``Session`` (opened when
authentication completes) and one upstream SSH connection made with the
gateway's own credential to the pinned target. Each client session channel
is paired with one upstream channel; ``-L`` tunnels become upstream
``direct-tcpip`` channels; X11 channels the target opens (``ssh -X``) become
``x11`` channels to the client.

Flow control: a side's send buffer above its high-water mark pauses reading
on the other side's channel (asyncssh then stops opening the SSH window), a
congested recorder pauses both, and data that arrives before the upstream
channel is open is buffered up to ``PENDING_LIMIT`` before reading pauses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import re
import secrets
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from hoopd.aio import spawn
from hoopd.gateway import AuthFailed, SessionRefused
from hoopd.model import AuthMethod, Command, CommandKind, Identity, Stream, Verdict
from hoopd.session import SessionEnded
from hoopd.transfer import is_tar_stream

from .keys import identity_from_cert
from .lines import Enter, LineTracker, drawn_lines
from .output import MaskedStream, RecordBuffer
from .packets import skip_ignore_padding
from .risk import runs_full_screen
from .scp import ScpAudit, ScpError, ScpFile
from .sftp import FileOp, SftpAudit, SftpError
from .shparse import history_expansion, parse

if TYPE_CHECKING:
    from hoopd.session import Session

    from . import SshHandler

log = logging.getLogger("hoopd.ssh")

PENDING_LIMIT = 256 * 1024
BATCH_MAX = 256 * 1024
"""Output of a channel without a terminal that arrives in one event-loop pass
(asyncssh hands over every packet of one socket read in a row) is masked,
recorded and sent as one chunk of up to this many bytes: one masker call
instead of one per SSH packet, whose hold-back tail (up to the masker's
window, 16 KiB for the built-in rules) is scanned again on every call."""
UPSTREAM_PKTSIZE = 256 * 1024
UPSTREAM_WINDOW = 4 * 1024 * 1024
KBDINT_PROMPT = "Password (gateway token or API key): "
EXIT_REFUSED = 126
MAX_AUTH_FAILURES = 10
DROP_LINE = b"\x07\x05\x15\x03"
"""Never Enter: Ctrl-G (readline's abort: ends a key sequence in progress,
so that a Ctrl-X typed before the held key does not make the Ctrl-E that
follows Ctrl-X Ctrl-E, edit-and-execute, which ran the refused line),
Ctrl-E (end of line, for line editors; a plain character in a canonical
tty), Ctrl-U (kill to the start of the line: the whole line in a canonical
tty), Ctrl-C (shells and REPLs discard the line, prompt again)."""
PROMPT_WAIT = 2.0
"""After a drop, keys wait (at most this long, in seconds) for the shell's
fresh prompt. The tty turns the Ctrl-C into SIGINT when it arrives, but a
shell blocked in read() that finds a key already queued reads it before it
handles the signal: bash then keeps the refused line, joins the typed-ahead
keys to it and runs the result (seen: a refused ``rm -rf DIR`` followed by
``echo x`` ran ``m -rf DIRecho x``)."""
PROMPT_QUIET = 0.02
"""Seconds without output after the prompt appeared: it may come in pieces."""
TRANSFER_COMMANDS = frozenset(
    {"git-upload-pack", "git-receive-pack", "git-upload-archive", "sftp-server", "internal-sftp"}
)


def scp_direction(command: str) -> tuple[str, str] | None:
    """("upload" | "download", target) for a legacy ``scp -t/-f TARGET`` exec."""
    cmds = parse(command).commands()
    if len(cmds) != 1:
        return None
    argv = cmds[0].argv
    if not argv or argv[0].rsplit("/", 1)[-1] != "scp":
        return None
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-") and not a.startswith("--"))
    targets = [a for a in argv[1:] if not a.startswith("-")]
    target = targets[-1] if targets else ""
    if "t" in flags:
        return "upload", target
    if "f" in flags:
        return "download", target
    return None


def transfer_command(command: str) -> bool:
    """A single exec of a binary transfer protocol (scp -t/-f, rsync --server,
    git-upload-pack..., tar with its archive on stdin/stdout): its output must
    not be rewritten by masking."""
    parsed = parse(command)
    cmds = parsed.commands()
    if parsed.incomplete or len(cmds) != 1 or cmds[0].redirects:
        return False
    argv = cmds[0].argv
    if not argv or any(w.substitutions for w in cmds[0].words):
        return False
    name = argv[0].rsplit("/", 1)[-1]
    if name == "scp":
        return any(a.startswith("-") and not a.startswith("--") and ("t" in a or "f" in a) for a in argv[1:])
    if name == "rsync":
        return "--server" in argv
    if name == "tar":
        return is_tar_stream(argv)
    return name in TRANSFER_COMMANDS


_CSI = re.compile(rb"\x1b\[[0-9;?<=>]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b.|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")


def _visible(data: bytes | bytearray) -> str:
    """Terminal output without escape sequences, one line per CR/LF-separated redraw."""
    text = _CSI.sub(b"", data).replace(b"\r", b"\n")
    return "\n".join(line for line in text.decode("utf-8", "replace").split("\n") if line.strip())


def _prompted(output: bytes | bytearray) -> bool:
    """Does terminal output end in a prompt: a new line with something
    visible on it, not yet ended?"""
    end = output.rfind(b"\n")
    return end >= 0 and bool(_visible(output[end + 1 :]).strip())


class _Pausable:
    """Pause reading for several reasons at once; resume when none is left.

    A resume lets asyncssh hand over everything it buffered while paused,
    and a pause asked for during that hand-over (a consumer filling up
    again) waits until it is done. asyncssh (2.24) opens the SSH window again
    to its full size as soon as it delivers one buffered chunk, without
    counting the chunks still buffered, so pausing again with data left in
    its buffer would let the peer send another full window on top of it:
    each pause/resume cycle could grow that buffer by a window (an 80 MB
    download behind a slow recordings disk held 45 MB there with a 4 MiB
    window). Drained on every resume, the buffer never holds more than
    one window."""

    def __init__(self) -> None:
        self._pauses: set[str] = set()
        self._resuming = False
        self.chan: Any = None

    def pause(self, why: str) -> None:
        if not self._pauses and self.chan is not None and not self._resuming:
            self.chan.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if self._pauses or self.chan is None or self._resuming:
            return
        self._resuming = True
        try:
            self.chan.resume_reading()  # delivers what asyncssh buffered, synchronously
        finally:
            self._resuming = False
        if self._pauses:  # paused again during the delivery
            self.chan.pause_reading()


class GatewayServer(asyncssh.SSHServer):
    """One client connection."""

    def __init__(self, handler: SshHandler) -> None:
        self.entry = handler
        """The listener's connection; ``handler`` is the one the login name picked."""
        self.handler = handler
        self.conn: asyncssh.SSHServerConnection | None = None
        self.username = ""
        self.client_addr = "unknown"
        self._candidate: Identity | None = None
        self.session: Session | None = None
        self.upstream: asyncssh.SSHClientConnection | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.refused = ""
        self.channels: set[ClientChannel] = set()
        self.x11: _X11Forwarding | None = None
        self.closed = False
        self._setup_task: asyncio.Task[None] | None = None
        self._failures = 0
        self._login_timer: asyncio.TimerHandle | None = None

    # -- connection ----------------------------------------------------------
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self._login_timer = asyncio.get_running_loop().call_later(
            self.entry.options.login_timeout, self._login_timeout
        )
        skip_ignore_padding(conn)  # half the packets to the client (packets.py)
        peer = conn.get_extra_info("peername")
        if peer:
            self.client_addr = f"{peer[0]}:{peer[1]}"
        # asyncssh checks the CA signature and principals but does not hand the
        # certificate to validate_ca_key; wrap its check to read the identity.
        original = conn._validate_openssh_certificate

        async def validate_cert(username: str, cert: Any) -> Any:
            key = await original(username, cert)
            if key is None:
                return None
            identity = identity_from_cert(cert)
            if identity is None:
                return None
            self._candidate = identity
            return key

        conn._validate_openssh_certificate = validate_cert  # type: ignore[method-assign]
        # asyncssh answers x11-req by opening an X display on this host; the
        # gateway carries the request to the target instead (_X11Forwarding).
        conn.attach_x11_listener = self._x11_requested  # type: ignore[method-assign]

    async def _x11_requested(
        self, chan: Any, auth_proto: bytes, auth_data: bytes, screen: int
    ) -> str | None:
        """A client channel's ``x11-req`` (ssh -X/-Y), before its shell or
        exec: remembered for the upstream channel, or refused (None).
        Accepted before the target is asked (the client's request must be
        answered before its shell or exec goes on); a target that refuses
        is reported on the channel's stderr."""
        conn = self.conn
        if (
            conn is None
            or not self.handler.options.allow_x11_forwarding
            or not conn.check_key_permission("X11-forwarding")
            or not conn.check_certificate_permission("X11-forwarding")
        ):
            return None
        if not auth_proto or not auth_data or max(len(auth_proto), len(auth_data)) > X11_AUTH_MAX:
            return None
        channel = next((c for c in self.channels if c.chan is chan), None)
        if channel is None or channel.mode:  # after shell/exec: too late to carry
            return None
        channel.x11 = X11Request(bytes(auth_proto), bytes(auth_data), screen)
        return f"hoopd:0.{screen}"

    def _login_timeout(self) -> None:
        """Not logged in within ``options.login_timeout`` of connecting."""
        self._login_timer = None
        if self.closed or self.conn is None:
            return
        timeout = self.entry.options.login_timeout
        stage = f"authenticating as {self.username!r}" if self.username else "before authentication"
        log.info(
            "%s: client %s not logged in after %.0f s (%s): disconnecting",
            self.entry.connection.name, self.client_addr, timeout, stage,
        )  # fmt: skip
        self.entry.gateway.connection_metrics(self.entry.connection).auth_failed("login_timeout")
        self.conn.disconnect(
            asyncssh.DISC_BY_APPLICATION, f"hoopd: not logged in within {timeout:g} s"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        if self._setup_task is not None and not self._setup_task.done():
            self._setup_task.cancel()
        if not self.ready.done():
            self.ready.set_result(False)
        if self.upstream is not None:
            self.upstream.close()
        if self.session is not None:
            self.session.end("client_closed", str(exc) if exc else "")

    # -- authentication ------------------------------------------------------
    def begin_auth(self, username: str) -> bool:
        self.username = username
        # From the listener's connection every time: a client may change its
        # login name between authentication attempts.
        routed = self.entry.route(username)
        if routed is None:
            if self.conn is not None:
                self.conn.disconnect(
                    asyncssh.DISC_ILLEGAL_USER_NAME,
                    f"hoopd: no connection {username!r} behind this listener any more",
                )
            return True
        if routed is not self.handler:
            self.handler = routed
            self._candidate = None
            if self.conn is not None:
                # asyncssh decided agent forwarding for the listener's
                # connection; the routed connection's option is the one that
                # counts (asyncssh checks this when the client asks).
                self.conn._agent_forwarding = routed.options.allow_agent_forwarding
        if self.handler.connection.auth == "none":
            self._candidate = Identity.ANONYMOUS
            return False
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._credential(password)

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return ("", "", "", [(KBDINT_PROMPT, False)])

    async def validate_kbdint_response(self, username: str, responses: Any) -> bool:
        if len(responses) != 1:
            return False
        return await self._credential(responses[0])

    async def _credential(self, secret: str) -> bool:
        try:
            identity = await self.handler.gateway.authenticate(self.handler.connection, secret)
        except AuthFailed:
            self._auth_failed()
            return False
        self._candidate = identity
        return True

    def _auth_failed(self) -> None:
        """Disconnect after MAX_AUTH_FAILURES wrong passwords/keys (OpenSSH
        clients give up after a few; this stops guessing at line rate)."""
        self._failures += 1
        if self._failures >= MAX_AUTH_FAILURES and self.conn is not None:
            self.conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        entry = self.handler.authorized.get(bytes(key.public_data))
        if entry is None:
            self.handler.gateway.connection_metrics(self.handler.connection).auth_failed(
                "unknown_key"
            )
            self._auth_failed()
            return False
        self._candidate = Identity(
            subject=entry.subject,
            groups=frozenset(entry.groups),
            method=AuthMethod.SSH_KEY,
            issuer="authorized_keys",
            email=entry.email,
        )
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return bytes(key.public_data) == self.handler.ca_public

    def auth_completed(self) -> None:
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None
        self._setup_task = spawn(self._setup(), name="ssh-setup")

    # -- session and upstream --------------------------------------------------
    async def _setup(self) -> None:
        handler = self.handler
        conn_cfg = handler.connection
        up = handler.upstream_cfg
        identity = self._candidate or Identity.ANONYMOUS
        try:
            self.session = await handler.gateway.open_session(
                conn_cfg,
                identity,
                self.client_addr,
                {"login": self.username, "upstream": f"{up.user}@{up.host}:{up.port}"},
            )
        except SessionRefused as exc:
            self.refused = exc.message
            if not self.ready.done():
                self.ready.set_result(False)
            self._close_later()
            return
        session = self.session
        session.set_terminator(self._terminate)
        if self.closed:
            session.end("client_closed")
            return
        cm = session.metrics
        started = time.perf_counter()
        try:
            self.upstream = await asyncio.wait_for(
                asyncssh.connect(
                    up.host,
                    up.port,
                    username=up.user,
                    client_keys=[handler.upstream_key] if handler.upstream_key else None,
                    password=up.password.reveal() if up.password is not None else None,
                    known_hosts=([up.pinned_key], [], []),
                    config=None,
                    agent_path=None,
                    compression_algs=["none"],
                    encryption_algs=handler.ciphers,
                    client_factory=lambda: _UpstreamClient(self),
                    preferred_auth="publickey,password,keyboard-interactive",
                    x509_trusted_certs=None,
                ),
                up.connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            self._upstream_failed(
                "upstream_host_key",
                f"the target's host key does not match the pinned host_key for "
                f"{up.host}:{up.port}; refusing the session ({exc.reason})",
            )
            return
        except asyncssh.PermissionDenied:
            self._upstream_failed(
                "upstream_auth", f"the gateway could not log in to {up.user}@{up.host}:{up.port}"
            )
            return
        except (OSError, TimeoutError, asyncssh.Error) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            self._upstream_failed("upstream_unreachable", f"upstream unreachable: {reason}")
            return
        cm.upstream_connect.observe(time.perf_counter() - started)
        if self.closed or self.ready.done():
            self.upstream.close()
            return
        if handler.options.allow_x11_forwarding:
            # Where asyncssh looks for X11 channels the target opens (without
            # it, it refuses them).
            self.x11 = _X11Forwarding(self)
            self.upstream._x11_listener = self.x11  # type: ignore[assignment]
        self.ready.set_result(True)

    def _upstream_failed(self, code: str, message: str) -> None:
        session = self.session
        assert session is not None
        session.metrics.upstream_errors.inc()
        session.error(message, code)
        session.log.warning("%s", message)
        session.end(code, message)
        self.refused = message
        if not self.ready.done():
            self.ready.set_result(False)
        self._close_later()

    def _close_later(self) -> None:
        """Refused: give channels a moment to print why, then close."""

        def close() -> None:
            if self.conn is not None and not self.closed:
                self.conn.close()

        asyncio.get_running_loop().call_later(2.0, close)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.closed or self.upstream is None:
            return  # never established: _setup reports why
        if self.session is not None:
            self.session.end("upstream_closed", str(exc) if exc else "")
        if self.conn is not None:
            self.conn.close()

    def _terminate(self, reason: str, message: str) -> None:
        session = self.session
        for ch in list(self.channels):
            ch.gateway_message(message)
        if session is not None:
            session.error(message, reason)
            session.end(reason, message)
        if self.upstream is not None:
            self.upstream.close()
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"hoopd: {message}")

    # -- channels --------------------------------------------------------------
    def session_requested(self) -> ClientChannel:
        return ClientChannel(self)

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Any:
        if not self.handler.options.allow_port_forwarding:
            session = self.session
            if session is not None:
                cmd = session.command(
                    CommandKind.EXEC,
                    f"direct-tcpip {dest_host}:{dest_port}",
                    {"channel": "direct-tcpip", "origin": f"{orig_host}:{orig_port}"},
                )
                session.result(cmd, "refused", error="port forwarding is not allowed")
            raise asyncssh.ChannelOpenError(
                asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED,
                "hoopd: port forwarding is not allowed on this connection",
            )

        return _Tunnel(self, dest_host, dest_port, f"{orig_host}:{orig_port}").client

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # remote forwarding (-R) is not offered


class _TunnelEnd(asyncssh.SSHTCPSession[bytes], _Pausable):
    """One channel of a ``-L`` tunnel: the client's ``direct-tcpip`` channel
    (index 0) or the upstream one (index 1). A channel session rather than
    asyncssh's SSHReader/SSHWriter streams: the stream session pauses and
    resumes its channel with data still buffered, which lets the peer send
    another window on each cycle (the window problem ``_Pausable`` avoids)."""

    def __init__(self, tunnel: _Tunnel, index: int) -> None:
        _Pausable.__init__(self)
        self.tunnel = tunnel
        self.index = index

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def session_started(self) -> None:
        self.tunnel.end_started(self.index)

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.tunnel.data(self.index, data)

    def eof_received(self) -> bool:
        self.tunnel.eof(self.index)
        return True  # half-open: the other direction may still carry data

    def pause_writing(self) -> None:
        self.tunnel.ends[1 - self.index].pause("send_buffer")

    def resume_writing(self) -> None:
        self.tunnel.ends[1 - self.index].resume("send_buffer")

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.lost(self.index)


class _Tunnel:
    """A ``-L`` tunnel: the client's channel, once the command is allowed
    an upstream ``direct-tcpip`` channel, and the bytes between them (counted
    in the session's metrics, not recorded)."""

    def __init__(self, server: GatewayServer, host: str, port: int, origin: str) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.origin = origin
        self.client = _TunnelEnd(self, 0)
        self.upstream = _TunnelEnd(self, 1)
        self.ends = (self.client, self.upstream)
        self.cmd: Command | None = None
        self.open = False
        """The upstream channel is open and what the client sent before it was passed on."""
        self.pending: list[bytes] = []
        self.pending_len = 0
        self.counts = [0, 0]
        self.eofs = [False, False]
        self.started = 0.0
        self.finished = False
        self.recorded = False

    def end_started(self, index: int) -> None:
        if index == 0:  # the client opened its channel: now open the target's
            spawn(self.start(), name="ssh-tunnel")

    async def start(self) -> None:
        server = self.server
        if not await server.ready or server.upstream is None or server.session is None:
            self.close()
            return
        session = server.session
        cmd = session.command(
            CommandKind.EXEC,
            f"direct-tcpip {self.host}:{self.port}",
            {"channel": "direct-tcpip", "origin": self.origin},
        )
        found = server.handler.risk.rules_only(cmd.text)
        if found.rule_verdicts:
            decision = await session.decide(cmd, found)
            if decision.verdict is Verdict.DENY:
                session.result(cmd, "refused", error="; ".join(decision.reasons))
                self.close()
                return
        self.started = time.monotonic()
        self.cmd = cmd  # set first: the target's data can arrive before the open returns here
        try:
            await server.upstream.create_connection(lambda: self.upstream, self.host, self.port)
        except (asyncssh.Error, OSError) as exc:
            self.cmd = None
            reason = getattr(exc, "reason", "") or str(exc)
            session.result(cmd, "failed", error=reason)
            self.close()
            return
        self.opened()

    def opened(self) -> None:
        """The upstream channel is open: pass on what the client sent meanwhile."""
        if self.finished:  # the client went away meanwhile
            self.close()
            return
        self.open = True
        pending, self.pending, self.pending_len = self.pending, [], 0
        for data in pending:
            self.data(0, data)
        if self.eofs[0]:
            self.eof(0)
        self.client.resume("upstream")

    def data(self, index: int, data: bytes) -> None:
        session = self.server.session
        if session is None or self.finished:
            return
        if index == 0 and not self.open:  # asyncssh starts reading the client's channel at once
            self.pending.append(data)
            self.pending_len += len(data)
            if self.pending_len >= PENDING_LIMIT:
                self.client.pause("upstream")
            return
        assert self.cmd is not None
        self.counts[index] += len(data)
        if index == 0:
            session.client_data(data, record=False)
        else:
            session.upstream_data(data, Stream.STDOUT, command_seq=self.cmd.seq, record=False)
        try:
            self.ends[1 - index].chan.write(data)
        except (asyncssh.Error, OSError):  # the other channel is closing
            self.close()

    def eof(self, index: int) -> None:
        self.eofs[index] = True
        dst = self.ends[1 - index].chan
        if index == 0 and not self.open:
            return  # passed on once the upstream channel is open
        if dst is not None and dst.can_write_eof() and not dst.is_closing():
            dst.write_eof()
        if all(self.eofs):
            self.close()

    def lost(self, index: int) -> None:
        self.close()

    def close(self) -> None:
        """Close both channels (asyncssh still sends what they buffered) and
        record the result once."""
        self.finished = True
        for end in self.ends:
            if end.chan is not None:
                end.chan.close()
        session = self.server.session
        if self.cmd is not None and session is not None and not self.recorded:
            self.recorded = True
            with contextlib.suppress(SessionEnded):
                session.result(
                    self.cmd,
                    f"closed in={self.counts[0]} out={self.counts[1]}",
                    duration_ms=(time.monotonic() - self.started) * 1000,
                )


X11_AUTH_MAX = 1024
"""Longest X11 authorization name or data accepted (an MIT-MAGIC-COOKIE-1
cookie is 16 bytes): bounds what is buffered while a setup is read."""


@dataclass(frozen=True)
class X11Request:
    """A client's ``x11-req`` (ssh -X/-Y): the authorization its ssh client
    checks and swaps for the real one when an X11 connection comes back."""

    proto: bytes
    cookie: bytes
    screen: int


def _x11_refusal(order: bytes, reason: bytes) -> bytes:
    """An X11 connection-setup reply that fails with ``reason``."""
    fmt = ">" if order == b"B" else "<"
    padded = reason + b"\0" * (-len(reason) % 4)
    return struct.pack(f"{fmt}BBHHH", 0, len(reason), 11, 0, len(padded) // 4) + padded


def swap_x11_cookie(setup: bytes, cookies: dict[bytes, X11Request]) -> bytes | None:
    """``setup`` (the start of an X11 connection from the target) with the
    gateway's cookie replaced by the client's; None until the whole
    authorization has arrived. ValueError when it is not an X11 setup or
    carries no cookie the gateway handed out."""
    if len(setup) < 12:
        return None
    order = setup[:1]
    if order not in (b"B", b"l"):
        raise ValueError("not an X11 connection setup")
    proto_len, data_len = struct.unpack(">HH" if order == b"B" else "<HH", setup[6:10])
    if proto_len > X11_AUTH_MAX or data_len > X11_AUTH_MAX:
        raise ValueError("X11 authorization too long")
    data_at = 12 + proto_len + (-proto_len % 4)
    end = data_at + data_len + (-data_len % 4)
    if len(setup) < end:
        return None
    proto, cookie = setup[12 : 12 + proto_len], setup[data_at : data_at + data_len]
    for ours, request in cookies.items():
        if hmac.compare_digest(cookie, ours) and proto == request.proto:
            return setup[:data_at] + request.cookie + setup[data_at + data_len :]
    raise ValueError("X11 authorization does not match")


class _X11Forwarding:
    """X11 forwarding on one upstream connection, installed as asyncssh's
    X11 listener of that connection (``attach``/``detach``/
    ``forward_connection``, what ``SSHClientConnection`` calls).

    Each client channel that asked for X11 gets its own random cookie
    towards the target (same length as the client's), sent in the
    upstream ``x11-req``: the target's sshd hands its own fake cookie to
    programs there and puts ours back in their connection setups. An X11
    channel the target opens is relayed to the client as an ``x11`` channel
    once ours is found in its setup and replaced by the client's, which the
    user's ssh client checks and replaces by the real one. The real cookie
    never leaves the user's machine; the client's never reaches the target."""

    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self._asked: dict[str, X11Request] = {}
        self.cookies: dict[bytes, X11Request] = {}
        self._by_chan: dict[Any, bytes] = {}

    def ask(self, request: X11Request) -> str:
        """A key for asyncssh's ``x11_display``: ``attach`` finds the request by it."""
        key = f"hoopd-x11-{secrets.token_hex(8)}"
        self._asked[key] = request
        return key

    def forgotten(self, key: str) -> None:
        self._asked.pop(key, None)

    def forwarding(self, chan: Any) -> bool:
        """Did the target accept X11 forwarding on this upstream channel?"""
        return chan in self._by_chan

    # -- asyncssh's listener interface ---------------------------------------
    def attach(self, display: str, chan: Any, single_connection: bool) -> tuple[bytes, bytes, int]:
        request = self._asked.pop(display, None)
        if request is None:
            raise ValueError("no X11 request for this channel")
        cookie = secrets.token_bytes(len(request.cookie))
        self.cookies[cookie] = request
        self._by_chan[chan] = cookie
        return request.proto, cookie, request.screen

    def detach(self, chan: Any) -> bool:
        cookie = self._by_chan.pop(chan, None)
        if cookie is not None:
            self.cookies.pop(cookie, None)
        # Never "no channel left": asyncssh would drop this listener and make
        # its own next time, for a display on the gateway host.
        return False

    def forward_connection(self) -> Coroutine[Any, Any, _TunnelEnd]:
        return _X11Relay(self).start()


class _X11Relay(_Tunnel):
    """An X11 connection from the target: the target's ``x11`` channel
    (index 1), the client's (index 0, opened by the gateway before the
    target's is confirmed), the cookie swapped in the connection setup and
    the bytes between them (counted, not recorded). Flow control and the
    result are the tunnel's."""

    def __init__(self, x11: _X11Forwarding) -> None:
        super().__init__(x11.server, "", 0, "")
        self.x11 = x11
        self.setup: bytearray | None = bytearray()
        """What the target sent until the setup's authorization is complete."""

    def end_started(self, index: int) -> None:
        if index == 1:
            self.opened()

    async def start(self) -> _TunnelEnd:  # type: ignore[override]
        """The session for the target's channel once the client's is open;
        ChannelOpenError (the target's open fails) otherwise."""
        try:
            return await self._start()
        except asyncssh.ChannelOpenError:
            raise
        except Exception as exc:  # fail closed: asyncssh would leave the open unanswered
            log.error("X11 channel not relayed: %s", exc)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "hoopd: X11 channel failed") from None

    async def _start(self) -> _TunnelEnd:
        server = self.server
        session = server.session
        if not self.x11.cookies or session is None or session.ended or server.conn is None:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "X11 forwarding was not requested")
        cmd = session.command(CommandKind.EXEC, "x11", {"channel": "x11"})
        found = server.handler.risk.rules_only(cmd.text)
        if found.rule_verdicts:
            decision = await session.decide(cmd, found)
            if decision.verdict is Verdict.DENY:
                why = "; ".join(decision.reasons)
                session.result(cmd, "refused", error=why)
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, f"hoopd: {why}")
        self.started = time.monotonic()
        self.cmd = cmd
        try:
            await server.conn.create_x11_connection(lambda: self.client)
        except (asyncssh.Error, OSError) as exc:
            self.cmd = None
            reason = getattr(exc, "reason", "") or str(exc)
            session.result(cmd, "failed", error=reason)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, reason) from None
        if self.finished:  # the client closed it at once
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "the client closed the X11 channel")
        return self.upstream  # asyncssh confirms the target's channel with it

    def data(self, index: int, data: bytes) -> None:
        if index == 1 and self.setup is not None:
            self.setup += data
            try:
                swapped = swap_x11_cookie(bytes(self.setup), self.x11.cookies)
            except ValueError as exc:
                self._refuse(str(exc))
                return
            if swapped is None:
                return
            self.setup = None
            data = swapped
        super().data(index, data)

    def _refuse(self, why: str) -> None:
        assert self.setup is not None
        order = bytes(self.setup[:1])
        self.setup = None
        session = self.server.session
        if self.cmd is not None and session is not None and not self.recorded:
            self.recorded = True
            with contextlib.suppress(SessionEnded):
                session.result(self.cmd, "refused", error=why)
        chan = self.upstream.chan
        with contextlib.suppress(asyncssh.Error, OSError):
            if order in (b"B", b"l"):
                chan.write(_x11_refusal(order, b"hoopd: " + why.encode() + b"\n"))
        self.close()


class _UpstreamClient(asyncssh.SSHClient):
    def __init__(self, server: GatewayServer) -> None:
        self.server = server

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        skip_ignore_padding(conn)  # as towards the client (packets.py)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.upstream_lost(exc)


class ClientChannel(asyncssh.SSHServerSession[bytes], _Pausable):
    """A session channel from the client (shell, exec or subsystem)."""

    def __init__(self, server: GatewayServer) -> None:
        _Pausable.__init__(self)
        self.server = server
        self.handler = server.handler
        self.mode = ""
        self.command = ""
        self.subsystem = ""
        self.pty: tuple[str, tuple[int, int, int, int], Any] | None = None
        self.up: UpstreamChannel | None = None
        self.up_chan: Any = None
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._client_eof = False
        self._eof_sent = False
        self._holding = False
        self._hold_task: asyncio.Task[None] | None = None
        self.cmd: Command | None = None
        self.transfer = False
        self.audit: SftpAudit | None = None
        self.scp: tuple[str, str, ScpAudit] | None = None
        self.tracker: LineTracker | None = None
        self._continued = ""
        self._history: collections.deque[str] = collections.deque(maxlen=50)  # lines sent to the shell
        self._started = time.monotonic()
        self.out: MaskedStream | None = None
        self.err: MaskedStream | None = None
        self.inp: MaskedStream | None = None  # exec stdin, masked for the recording only
        self.alt_screen = False
        self._full_screen_ok = False  # the last line run starts an editor, pager...
        self._prompt = ""  # the shell's prompt, as drawn before the last line
        self._recent = bytearray()
        self._line_echo = bytearray()  # terminal output since the last Enter
        self._since_drop: bytearray | None = None  # terminal output since a line was dropped
        self._output_at = 0.0  # when the terminal output last came (loop time)
        self._unechoed: tuple[str, dict[str, Any]] | None = None
        self._ended = False
        self._recorder_wait: asyncio.Task[None] | None = None
        self._rec: RecordBuffer | None = None
        self._batch: list[bytes] = []  # output of this loop pass (no terminal), one stream
        self._batch_size = 0
        self._batch_stderr = False
        self._batch_due = False  # a call_soon to flush it is scheduled
        self._agent_set_up: asyncio.Event | None = None  # the client asked for ssh -A
        self.x11: X11Request | None = None  # the client asked for ssh -X/-Y (and may have it)

    @property
    def session(self) -> Session:
        assert self.server.session is not None
        return self.server.session

    # -- asyncssh callbacks ----------------------------------------------------
    def connection_made(self, chan: Any) -> None:
        self.chan = chan
        self.server.channels.add(self)
        if self.handler.options.allow_agent_forwarding:
            self._watch_agent_request(chan)

    def _watch_agent_request(self, chan: Any) -> None:
        """Learn whether (and when) the client forwarded its agent (ssh -A).
        asyncssh answers ``auth-agent-req`` itself, creating the agent socket
        in a task, and has no callback for it. The request arrives before
        exec/shell, so wrapping that task lets _open_upstream wait for the
        socket before it opens the target's channel."""
        finish = getattr(chan, "_finish_agent_req_request", None)
        if finish is None:  # an asyncssh without it: fail safe, no forwarding
            return
        done = asyncio.Event()

        async def finish_and_signal() -> None:
            try:
                await finish()
            finally:
                done.set()

        def requested() -> Coroutine[Any, Any, None]:
            self._agent_set_up = done
            return finish_and_signal()

        chan._finish_agent_req_request = requested

    async def _forwarded_agent(self) -> str | None:
        """The gateway-side socket of the client's forwarded agent, if the
        client forwarded it on this connection. Like sshd, forwarding holds
        for the connection: once a channel asked, later ones get it too."""
        if not self.handler.options.allow_agent_forwarding or self.server.conn is None:
            return None
        if self._agent_set_up is not None:
            await self._agent_set_up.wait()
        return self.server.conn.get_agent_path()

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        if not self.handler.options.allow_pty:
            return False
        self.pty = (term_type, tuple(term_size), term_modes)
        return True

    def shell_requested(self) -> bool:
        self.mode = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.mode = "exec"
        self.command = command
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem != "sftp":
            return False
        self.mode = "subsystem"
        self.subsystem = subsystem
        return True

    def session_started(self) -> None:
        spawn(self._start(), name="ssh-channel")

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self._holding and b"\x03" in data and self._hold_task is not None:
            self._hold_task.cancel()
        if self.up_chan is None or self._holding:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > PENDING_LIMIT:
                self.pause("pending")
            return
        self._forward(data)

    def eof_received(self) -> bool:
        self._client_eof = True
        if self.up_chan is not None and not self._holding and not self._pending:
            self._send_eof()
        return True

    def signal_received(self, signal: str) -> None:
        if self.up_chan is not None:
            self.up_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self.up_chan is not None:
            self.up_chan.send_break(msec)
            return True
        return False

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        if self.pty is not None:
            self.pty = (self.pty[0], (width, height, pixwidth, pixheight), self.pty[2])
        if self.server.session is not None and not self.session.ended:
            self.session.resize(width, height)
        if self.up_chan is not None:
            self.up_chan.change_terminal_size(width, height, pixwidth, pixheight)

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause("client_buffer")

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume("client_buffer")

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.channels.discard(self)
        self._ended = True
        if self.inp is not None:
            self.inp.flush()
            self.inp.close()
        if self._rec is not None:
            self._rec.flush()
        for s in (self.out, self.err):
            if s is not None:
                s.close()
        if self.up_chan is not None:
            self.up_chan.close()

    # -- start -------------------------------------------------------------------
    async def _start(self) -> None:
        ok = await self.server.ready
        if self._ended:
            return
        if not ok:
            self._refuse(self.server.refused or "the gateway cannot carry this session")
            return
        session = self.session
        opts = self.handler.options
        masker = self.handler.gateway.masker(self.handler.connection)
        flush_after: float | None = opts.output_flush
        if self.mode == "subsystem":
            self.transfer = True
            if not opts.file_transfer:
                self._refuse("file transfer (sftp/scp) is not allowed on this connection")
                return
            self.audit = SftpAudit()
            self.cmd = session.command(CommandKind.EXEC, "sftp", {"subsystem": "sftp"})
        elif self.mode == "exec":
            self.transfer = transfer_command(self.command)
            if self.transfer and not opts.file_transfer:
                self.cmd = session.command(
                    CommandKind.EXEC, self.command, {"transfer": True}, self._masked(self.command)
                )
                session.result(self.cmd, "refused", error="file transfer is not allowed")
                self._refuse("file transfer (sftp/scp) is not allowed on this connection")
                return
            attrs: dict[str, Any] = {"pty": self.pty is not None, "transfer": self.transfer}
            if await self._forwarded_agent() is not None:
                attrs["agent_forwarded"] = True
            if self.x11 is not None:
                attrs["x11_forwarded"] = True
            self.cmd = session.command(CommandKind.EXEC, self.command, attrs, self._masked(self.command))
            scp = scp_direction(self.command) if self.transfer else None
            if scp is not None:
                self.scp = (scp[0], scp[1], ScpAudit())
            found = self.handler.risk.assess(self.command)
            if found.score > 0 or found.rule_verdicts:
                decision = await session.decide(
                    self.cmd, found, on_held=self._held_message, shown=self._masked(self.command)
                )
                if self._ended:
                    return
                if decision.verdict is Verdict.DENY:
                    why = "; ".join(decision.reasons) or "denied by policy"
                    session.result(self.cmd, "refused", error=why)
                    self._refuse(f"command refused: {why}")
                    return
        elif self.mode != "shell":
            self._refuse("unsupported channel request")
            return
        if self.pty is not None and opts.shell_lines and not self.transfer:
            self.tracker = LineTracker()  # an interactive terminal (shell, or ssh -t host cmd)
        if self.pty is None and not self.transfer:
            self._rec = RecordBuffer(self._record, self.cmd.seq if self.cmd is not None else 0)
            self.inp = MaskedStream(masker, self._record_stdin, opts.output_flush)
        if self.pty is None:
            flush_after = opts.exec_output_flush  # None: never on a timer
        if not self.transfer:
            self.out = MaskedStream(masker, self._emit_stdout, flush_after)
            self.err = MaskedStream(masker, self._emit_stderr, flush_after)
        if self.pty is not None:
            session.resize(self.pty[1][0], self.pty[1][1])
        await self._open_upstream()

    async def _open_upstream(self) -> None:
        upstream = self.server.upstream
        assert upstream is not None
        kwargs: dict[str, Any] = {
            "encoding": None,
            "window": UPSTREAM_WINDOW,
            "max_pktsize": UPSTREAM_PKTSIZE,
        }
        env = self.chan.get_environment()
        if env:
            kwargs["env"] = dict(env)
        if self.pty is not None:
            kwargs["term_type"] = self.pty[0]
            kwargs["term_size"] = self.pty[1]
            kwargs["term_modes"] = self.pty[2]
        else:
            kwargs["request_pty"] = False
        if self.mode == "exec":
            kwargs["command"] = self.command
        elif self.mode == "subsystem":
            kwargs["subsystem"] = self.subsystem
        agent = await self._forwarded_agent()
        if agent is not None:
            # asyncssh reads this when it opens the session (to send
            # auth-agent-req) and when the target opens an agent channel
            # back (to connect to this socket, which leads to the client).
            upstream._agent_forward_path = agent
            self.session.log.info("ssh-agent forwarded to the target")
        x11, x11_key = self.server.x11, ""
        if self.x11 is not None and x11 is not None:
            x11_key = x11.ask(self.x11)
            # asyncssh sends the x11-req (attach gives it the cookie) and
            # carries on without X11 if the target refuses it.
            kwargs["x11_forwarding"] = "ignore_failure"
            kwargs["x11_display"] = x11_key
        try:
            up_chan, up = await upstream.create_session(lambda: UpstreamChannel(self), **kwargs)
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", "") or str(exc)
            if self.cmd is not None:
                self.session.result(self.cmd, "failed", error=reason)
            self._refuse(f"the target refused the channel: {reason}")
            return
        finally:
            if x11 is not None and x11_key:
                x11.forgotten(x11_key)
        if self._ended:
            up_chan.close()
            return
        if x11 is not None and x11_key:
            if x11.forwarding(up_chan):
                self.session.log.info("X11 forwarded to the target")
            else:
                self.session.error("the target refused X11 forwarding", "x11_refused")
                self.session.log.warning("the target refused X11 forwarding")
                with contextlib.suppress(OSError, asyncssh.Error):
                    self.chan.write_stderr(b"hoopd: X11 forwarding request failed: the target refused it\r\n")
        assert isinstance(up, UpstreamChannel)
        self.up = up
        self.up_chan = up_chan
        self._drain_pending()

    def _drain_pending(self) -> None:
        pending, self._pending, self._pending_size = self._pending, [], 0
        for i, chunk in enumerate(pending):
            if self._holding:
                self._pending = pending[i:] + self._pending
                self._pending_size = sum(len(c) for c in self._pending)
                return
            self._forward(chunk)
        if self._holding:
            return
        self.resume("pending")
        if self._client_eof:
            self._send_eof()

    def _send_eof(self) -> None:
        if not self._eof_sent and self.up_chan is not None:
            self._eof_sent = True
            if self.inp is not None:
                self.inp.flush()
            self.up_chan.write_eof()

    def _refuse(self, message: str) -> None:
        try:
            self.chan.write_stderr(f"hoopd: {message}\r\n".encode())
            self.chan.exit(EXIT_REFUSED)
        except (OSError, asyncssh.Error):
            pass

    def _held_message(self, approval_id: str, message: str) -> None:
        self.chan.write_stderr((message + "\r\n").encode())

    def gateway_message(self, message: str) -> None:
        """Tell the user something on this channel (session ending...)."""
        try:
            self._flush_batch()
            for s in (self.out, self.err):
                if s is not None:
                    s.flush()
            if self.pty is not None:
                self.chan.write(f"\r\nhoopd: {message}\r\n".encode())
            else:
                self.chan.write_stderr(f"hoopd: {message}\n".encode())
        except (OSError, asyncssh.Error):
            pass

    # -- client -> upstream ----------------------------------------------------------
    def _forward(self, data: bytes) -> None:
        session = self.session
        if session.ended:
            return
        if self.audit is not None:
            session.client_data(data, record=False)
            try:
                started, finished = self.audit.client_data(data)
            except SftpError as exc:
                self._protocol_error(str(exc))
                return
            self._file_ops(started, finished)
            self.up_chan.write(data)
        elif self.scp is not None and self.scp[0] == "upload":
            session.client_data(data, record=False)
            self._scp_feed(data)
            self.up_chan.write(data)
        elif self.tracker is not None and not self.alt_screen:
            session.client_data(data, record=False)
            if self.out is not None:
                self.out.typed(data)
            self._keystrokes(self.tracker.feed(data))
        elif self.inp is not None:
            session.client_data(data, record=False)
            self.inp.feed(data)
            self.up_chan.write(data)
        else:
            session.client_data(data, record=not self.transfer and self.pty is None)
            if self.pty is not None and self.out is not None:
                self.out.typed(data)
            self.up_chan.write(data)
        if session.congested:
            self._wait_for_recorder()

    def _record_stdin(self, data: bytes, masked: dict[str, int] | None) -> None:
        """Exec stdin as the recording keeps it: masked by content like the
        output (the target gets it as sent)."""
        if self._rec is not None and not self.session.ended:
            self._rec.add(Stream.STDIN, data, masked)

    def _keystrokes(self, pieces: list[Any]) -> None:
        for i, piece in enumerate(pieces):
            if not isinstance(piece, Enter):
                self.up_chan.write(piece)
                continue
            if self._judge_line(piece, pieces[i + 1 :]):
                return  # held: the rest waits for the decision
            self.up_chan.write(piece.key)

    def _judge_line(self, enter: Enter, rest: list[Any]) -> bool:
        """Record the line; True when it is held for a decision."""
        text = enter.line.text
        shown = ""
        if enter.line.uncertain:
            # The last lines the terminal showed: the prompt and the line as
            # the shell's editor drew it (after cursor edits, history recall),
            # and, should the drawing be misread, the text it was drawn with.
            echo = bytes(self._line_echo)
            drawn = [self._masked(x) for x in drawn_lines(echo, self.pty[1][0] if self.pty is not None else 80)[-2:]]
            raw = [x for x in (self._masked(y) for y in _visible(echo).splitlines()[-2:]) if x not in drawn]
            shown = "\n".join(raw + drawn)
            if not text.strip():
                text = drawn[-1] if drawn else ""
        if enter.partial:
            # Ctrl-D on a non-empty line: a canonical tty (sh, dash) hands the
            # line over without its newline. Judged as it stands (with what it
            # continues); not recorded unless held: the tracker keeps it, and
            # the Enter that ends it records the whole.
            if self._continued:
                text = self._continued + "\n" + text
            found = self._assess_line(text, enter, shown, complete=False)
            if found.score <= 0 and not found.rule_verdicts:
                return False
            return self._hold_line(text, self._line_attrs(enter, shown), found, enter, rest)
        self._unechoed = None
        self._note_prompt(text)
        self._line_echo.clear()
        if not text.strip():
            self._continued = ""
            return False
        if self._continued:
            text = self._continued + "\n" + text
        attrs = self._line_attrs(enter, shown)
        if parse(text).incomplete and len(text) < 16 * 1024:
            # The shell will (most likely) ask for more, and the whole is
            # judged then. What is there already is judged now: should the
            # shell see the line as complete after all (a construct the
            # parser reads differently), Enter runs it.
            self._continued = text
            found = self._assess_line(text, enter, shown, complete=False)
            if found.score <= 0 and not found.rule_verdicts:
                return False
            return self._hold_line(text, attrs, found, enter, rest)
        self._continued = ""
        self._history.append(text)
        self._full_screen_ok = runs_full_screen(text)
        found = self._assess_line(text, enter, shown)
        if found.score <= 0 and not found.rule_verdicts:
            # Recorded once the terminal has echoed it: input typed with echo
            # off (a password prompt) is not a command and is never recorded.
            if self._echoed(text):
                self.session.command(CommandKind.SHELL_LINE, text, attrs, self._masked(text))
            else:
                self._unechoed = (text, attrs)
            return False
        return self._hold_line(text, attrs, found, enter, rest)

    def _note_prompt(self, typed: str) -> None:
        """Remember the prompt the line was typed after (what the terminal
        drew before the typed text), to know the shell when it comes back."""
        drawn = drawn_lines(bytes(self._line_echo), self.pty[1][0] if self.pty is not None else 80)
        last, typed = (drawn[-1] if drawn else ""), typed.strip()
        if typed and last.endswith(typed) and len(last) > len(typed):
            prompt = last[: -len(typed)].strip()
            if len(prompt) >= 2:
                self._prompt = prompt

    def _masked(self, text: str) -> str:
        """Text as the masking rules leave it, for the recording and for
        reviewers: what the terminal showed, and command lines (a token in
        ``curl -H``, a key in ``export``: the echo of a typed line is masked
        in the recorded output, and so is the line's Command; an approval
        stays bound to the line as typed)."""
        masker = self.handler.gateway.masker(self.handler.connection)
        if masker is None or not getattr(masker, "active", False):
            return text
        try:
            return str(masker.mask_text(text)[0])
        except Exception:  # never record what could not be masked
            return "[not recorded: masking failed]"

    @staticmethod
    def _line_attrs(enter: Enter, shown: str) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if enter.line.uncertain:
            attrs = {"uncertain": True, "shown": shown[-1024:]}
        if enter.partial:
            attrs["key"] = "ctrl-d"
        if enter.editor:
            attrs["key"] = "ctrl-x ctrl-e"
        return attrs

    def _assess_line(self, text: str, enter: Enter, shown: str, complete: bool = True) -> Any:
        if enter.editor:
            return self.handler.risk.assess_recalled(
                text, shown.splitlines(), "edit-and-execute: the command is composed in an editor"
            )
        if history_expansion(text):
            return self.handler.risk.assess_recalled(text, [*self._history, *shown.splitlines()])
        if enter.line.uncertain:
            # Edited or recalled: judge what was typed *and* what the terminal
            # showed, loosely (a command starting at any word counts).
            return self.handler.risk.assess_loose([text, *shown.splitlines()])
        return self.handler.risk.assess(text, incomplete_is_unparseable=complete)

    def _hold_line(self, text: str, attrs: dict[str, Any], found: Any, enter: Enter, rest: list[Any]) -> bool:
        self._recent.clear()
        cmd = self.session.command(CommandKind.SHELL_LINE, text, attrs, self._masked(text))
        # Reading goes on while the line is held (bounded by PENDING_LIMIT), so
        # that Ctrl-C can cancel the wait.
        self._holding = True
        self._hold_task = spawn(self._decide_line(cmd, found, enter, rest), name="ssh-line-decision")
        return True

    def _echoed(self, text: str) -> bool:
        """Has the terminal echoed what was typed? (No echo: a password.)"""
        tail = text.strip()[-12:].encode("utf-8", "replace")
        found = tail in self._recent
        if found:
            self._recent.clear()
        return found

    async def _decide_line(self, cmd: Command, found: Any, enter: Enter, rest: list[Any]) -> None:
        session = self.session

        def on_held(approval_id: str, message: str) -> None:
            self.gateway_message(message.removeprefix("hoopd: "))

        cancelled = False
        try:
            decision = await session.decide(cmd, found, on_held=on_held, shown=self._masked(cmd.text))
        except asyncio.CancelledError:  # Ctrl-C while held (see data_received)
            decision, cancelled = None, True
        except Exception as exc:  # fail closed
            session.log.error("decision failed: %s", exc)
            decision = None
        self._hold_task = None
        if self._ended or self.up_chan is None:
            return
        if cancelled:
            self.gateway_message("cancelled; the line was not run")
            session.result(cmd, "cancelled", error="cancelled by the user (Ctrl-C)")
            rest = []
            self._drop_pending_through_ctrl_c()
            self._forget_line()
            await self._drop_line()
        elif decision is not None and decision.verdict in (Verdict.ALLOW, Verdict.MASK):
            self.up_chan.write(enter.key)
        else:
            why = "; ".join(decision.reasons) if decision is not None else "error"
            self.gateway_message(f"command refused: {why}")
            session.result(cmd, "refused", error=why)
            self._forget_line()
            await self._drop_line()
        if self._ended:
            return
        self._holding = False
        self._keystrokes(rest)
        if self._holding:
            return
        self._drain_pending()

    def _forget_line(self) -> None:
        """The shell drops the line (and what it continued): so does the
        tracker, which still holds a line that Ctrl-D handed over."""
        self._continued = ""
        if self.tracker is not None:
            self.tracker.clear()

    async def _drop_line(self) -> None:
        """Make the shell discard the held line, then wait for its fresh
        prompt (see PROMPT_WAIT); keys typed meanwhile stay pending."""
        loop = asyncio.get_running_loop()
        self._since_drop = bytearray()
        self.up_chan.write(DROP_LINE)
        deadline = loop.time() + PROMPT_WAIT
        try:
            while loop.time() < deadline and not self._ended:
                await asyncio.sleep(PROMPT_QUIET)
                if _prompted(self._since_drop) and loop.time() - self._output_at >= PROMPT_QUIET:
                    return
            self.session.log.info("no fresh prompt %.0f s after a dropped line; typed keys go on", PROMPT_WAIT)
        finally:
            self._since_drop = None

    def _drop_pending_through_ctrl_c(self) -> None:
        """Typed while held, up to and including the Ctrl-C that cancelled: gone."""
        joined = b"".join(self._pending)
        cut = joined.find(b"\x03")
        self._pending = [joined[cut + 1 :]] if cut >= 0 and joined[cut + 1 :] else []
        self._pending_size = sum(len(c) for c in self._pending)

    def _scp_feed(self, data: bytes) -> None:
        assert self.scp is not None
        direction, target, audit = self.scp
        try:
            files = audit.feed(data)
        except ScpError as exc:
            self.scp = None  # stop watching; the bytes still pass (scp reports its own errors)
            self.session.error(f"scp protocol not understood: {exc}", "protocol_error")
            return
        for f in files:
            self._scp_file(direction, target, f)

    def _scp_file(self, direction: str, target: str, f: ScpFile) -> None:
        arrow = f"{f.path} -> {target}" if direction == "upload" else f"{target}: {f.path}"
        self.session.command(
            CommandKind.EXEC,
            f"scp {direction} {arrow} ({f.size} bytes)",
            {"scp": direction, "path": f.path, "target": target, "size": f.size, "mode": f.mode},
        )

    def _protocol_error(self, message: str) -> None:
        session = self.session
        session.error(f"sftp protocol error: {message}", "protocol_error")
        if self.cmd is not None:
            session.result(self.cmd, "error", error=message)
        self.audit = None
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.close()

    def _file_ops(self, started: list[FileOp], finished: list[FileOp]) -> None:
        session = self.session
        for op in started:
            op.token = session.command(
                CommandKind.EXEC,
                op.describe(),
                {"sftp": op.op, "path": op.path, **({"target": op.target} if op.target else {})},
            )
        for op in finished:
            if isinstance(op.token, Command):
                status = op.status
                if op.op == "open":
                    status = f"{op.status} read={op.bytes_read} written={op.bytes_written}"
                session.result(op.token, status, error="" if op.status in ("ok", "eof") else op.status)

    def _wait_for_recorder(self) -> None:
        if self._recorder_wait is not None:
            return
        self.pause("recorder")
        if self.up is not None:
            self.up.pause("recorder")

        async def wait() -> None:
            await self.session.wait_uncongested()
            self._recorder_wait = None
            self.resume("recorder")
            if self.up is not None:
                self.up.resume("recorder")

        self._recorder_wait = spawn(wait(), name="ssh-recorder-wait")

    # -- upstream -> client ----------------------------------------------------------
    def _record(self, event: Any) -> None:
        if not self.session.ended:
            self.session.record(event)

    # Record (enqueue) first, then send: output never reaches the client once
    # its session's recording has failed. Enqueueing does not wake the
    # recorder thread, so it adds nothing noticeable to keystroke echo.
    def _emit_stdout(self, data: bytes, masked: dict[str, int] | None) -> None:
        if self._emit(data, masked, Stream.STDOUT):
            self.chan.write(data)

    def _emit_stderr(self, data: bytes, masked: dict[str, int] | None) -> None:
        if self._emit(data, masked, Stream.STDERR):
            self.chan.write_stderr(data)

    def _emit(self, data: bytes, masked: dict[str, int] | None, stream: Stream) -> bool:
        """Account for and record output; False when it must not be sent."""
        if self.session.ended:
            return False
        rec = self._rec
        try:
            if rec is None:  # a terminal: every chunk, with its own timestamp
                seq = self.cmd.seq if self.cmd is not None else 0
                self.session.upstream_data(data, stream, command_seq=seq, masked=masked)
            else:
                self.session.upstream_data(data, stream, masked=masked, record=False)
                rec.add(stream, data, masked)
        except SessionEnded:
            return False
        return True

    def upstream_output(self, data: bytes, stderr: bool) -> None:
        if self._rec is None:  # a terminal or a transfer: chunk by chunk
            self._output(data, stderr)
            return
        if self._batch and stderr != self._batch_stderr:
            self._flush_batch()
        self._batch.append(data)
        self._batch_size += len(data)
        self._batch_stderr = stderr
        if self._batch_size >= BATCH_MAX:
            self._flush_batch()
        elif not self._batch_due:
            self._batch_due = True
            asyncio.get_running_loop().call_soon(self._batch_timer)

    def _batch_timer(self) -> None:
        self._batch_due = False
        self._flush_batch()

    def _flush_batch(self) -> None:
        """Pass on the output batched so far (before EOF, exit and close too)."""
        batch = self._batch
        if not batch:
            return
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        self._batch = []
        self._batch_size = 0
        self._output(data, self._batch_stderr)

    def _output(self, data: bytes, stderr: bool) -> None:
        if self._ended or self.session.ended:
            return
        if self.tracker is not None:
            if b"\x1b[?1049" in data or b"\x1b[?47" in data:
                # Only a program the last line started (vim, less...) gets
                # its keys untracked: anyone can print the switch itself
                # (printf '\e[?1049h') and keep typing to the shell.
                entered = data.rfind(b"\x1b[?1049h") > data.rfind(b"\x1b[?1049l")
                self.alt_screen = entered and self._full_screen_ok
            elif self.alt_screen and self._prompt and self._prompt in _visible(data[data.rfind(b"\n") + 1 :]):
                self.alt_screen = False  # the shell's prompt again: the program is gone
            self._recent += data
            if len(self._recent) > 8192:
                del self._recent[:-4096]
            self._line_echo += data
            if len(self._line_echo) > 8192:
                del self._line_echo[:-4096]
            if self._since_drop is not None:
                self._since_drop += data
                if len(self._since_drop) > 8192:
                    del self._since_drop[:-4096]
                self._output_at = asyncio.get_running_loop().time()
            if self._unechoed is not None and self._echoed(self._unechoed[0]):
                text, attrs = self._unechoed
                self._unechoed = None
                self.session.command(CommandKind.SHELL_LINE, text, attrs, self._masked(text))
        if self.transfer:
            session = self.session
            seq = self.cmd.seq if self.cmd is not None else 0
            session.upstream_data(data, Stream.STDERR if stderr else Stream.STDOUT, command_seq=seq, record=False)
            if self.scp is not None and self.scp[0] == "download" and not stderr:
                self._scp_feed(data)
            if self.audit is not None:
                try:
                    _, finished = self.audit.server_data(data)
                except SftpError as exc:
                    self._protocol_error(str(exc))
                    return
                self._file_ops([], finished)
            if stderr:
                self.chan.write_stderr(data)
            else:
                self.chan.write(data)
        else:
            stream = self.err if stderr else self.out
            assert stream is not None
            stream.feed(data)
        if self.server.session is not None and self.session.congested:
            self._wait_for_recorder()

    def upstream_eof(self) -> None:
        self._flush_batch()
        for s in (self.out, self.err):
            if s is not None:
                s.flush()
        if self._rec is not None:
            self._rec.flush()
        with contextlib.suppress(OSError, asyncssh.Error):
            self.chan.write_eof()

    def upstream_closed(self, status: int | None, signal: tuple[Any, ...] | None) -> None:
        self._flush_batch()
        if self.inp is not None:
            self.inp.flush()
        for s in (self.out, self.err):
            if s is not None:
                s.flush()
                s.close()
        if self._rec is not None:
            self._rec.flush()
        if self.audit is not None:
            self._file_ops([], self.audit.close())
        if self.cmd is not None and self.server.session is not None:
            if signal is not None:
                result = f"signal {signal[0]}"
            elif status is not None:
                result = f"exit {status}"
            else:
                result = "closed"
            if not self.session.ended:
                self.session.result(
                    self.cmd, result, duration_ms=(time.monotonic() - self._started) * 1000
                )
        if self._ended:
            return
        try:
            if signal is not None:
                self.chan.exit_with_signal(*signal)
            elif status is not None:
                self.chan.exit(status)
            else:
                self.chan.close()
        except (OSError, asyncssh.Error):
            pass


class UpstreamChannel(asyncssh.SSHClientSession[bytes], _Pausable):
    def __init__(self, client: ClientChannel) -> None:
        _Pausable.__init__(self)
        self.client = client
        self.status: int | None = None
        self.signal: tuple[Any, ...] | None = None

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.client.upstream_output(data, datatype == asyncssh.EXTENDED_DATA_STDERR)

    def eof_received(self) -> bool:
        self.client.upstream_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = (signal, core_dumped, msg, lang)

    def pause_writing(self) -> None:
        self.client.pause("upstream_buffer")

    def resume_writing(self) -> None:
        self.client.resume("upstream_buffer")

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_closed(self.status, self.signal)
