"""The asyncio driver for one client connection.

Phases: *handshake* (a coroutine reads startup packets: SSLRequest, GSSENC,
CancelRequest, StartupMessage; authenticates the client; opens the session;
logs in upstream) then *relay* (``data_received`` on both sides calls the
synchronous relay code; only held statements await).

Client -> server: messages are framed, statements become Commands and are
judged. Allowed ones are forwarded in the same write as the bytes around
them. A statement that needs review (or is denied) turns the rest of its
batch -- a simple Query, or extended messages up to Sync/Flush -- into a
*unit* that waits for the decision while later client bytes are stashed in
order. A denied unit is replaced by a statement that fails on the server
(``HOOPD DENIED``: a syntax error), so the server's transaction state and the
order of answers stay exactly as for a real error; its ErrorResponse is
swapped for the gateway's 42501.

Server -> client: frames are tracked (``_tracker``) to attribute rows,
completion tags and errors to Commands; masking rewrites only the messages
that change; one Output(rows) is recorded per received chunk.

COPY TO STDOUT under column rules: its Query waits like a held unit while
the gateway's own probe (``_copy_probe``) learns the columns; the probe's
answers are swallowed here, and the COPY's rows are masked by column
(``_copy_mask``) -- or the Query is refused as a denied unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any

from hoopd.aio import spawn
from hoopd.config import RiskSection
from hoopd.gateway import AuthFailed, SessionRefused
from hoopd.model import AuthMethod, CommandKind, Decision, Identity, Output, Stream, Verdict
from hoopd.policy import Assessment, decide_command
from hoopd.session import SessionEnded
from hoopd.tls import identity_from_peercert

from . import _messages as m
from . import _wire as w
from ._catalog import CatalogError, Database, Origin
from ._copy_format import ascii_safe
from ._copy_mask import CopyColumns, CopyShapeError, copy_data
from ._copy_probe import ASYNC_TYPES, Probe
from ._copy_stmt import CopyTarget, CopyUnsupported, copy_target
from ._masking import BinaryCopyHit, Hits
from ._recorded_sql import for_reviewers, recorded_sql
from ._scoring import Judge, Judged, combine
from ._tracker import (
    BIND,
    CLOSE,
    DENIED,
    DESC_OWN,
    DESC_PORTAL,
    DESC_STMT,
    EXEC,
    FCALL,
    LOST,
    PARSE,
    QUERY,
    SYNC,
    Portal,
    Running,
    Tracker,
)
from ._upstream import UpstreamError, UpstreamProtocol, connect, send_cancel

if TYPE_CHECKING:
    from hoopd.session import Session

    from . import PostgresHandler

log = logging.getLogger("hoopd.postgres")

HANDSHAKE_LIMIT = 64 * 1024
STASH_LIMIT = 4 * 1024 * 1024
RECORDED_PARAM_BYTES = 64 * 1024
"""A longer Bind parameter is recorded by its length and SHA-256 only: the
recording needs no bulk values, and masking 50 MB dense with personal data
(~4 MB/s) would hold the event loop for seconds."""
UNIT_MAX_BYTES = STASH_LIMIT
UNIT_MAX_MESSAGES = 4096
"""A held extended batch that grows past either limit before its Sync is
decided with what it has, as if the client had sent Flush there (the rest of
the batch is judged as it comes): collecting it whole would hold all of it,
and a client that never sends Sync, in memory."""
INFLIGHT_MAX = 8192
"""Answers the gateway may be waiting for (the tracker's queue) before it
stops reading from the client; it reads again at half. A client that
pipelines without reading its results is held back here, not by the
server's socket buffers with every pipelined statement tracked in memory.
Above what the server holds back unflushed (8 KiB of answers, at most
~1600 of them), so a pipeline without Sync cannot wait on itself."""
ROW_DESCRIPTION_CACHE = 256
_FOREVER = float("inf")
_RENAMING_TAGS = ("ALTER ", "DO", "CALL")
"""Completion tags of statements that can rename columns or tables: the
catalog's names for the database are dropped (``_catalog``)."""
DENY_SQL = "HOOPD DENIED"
SQLSTATE_DENIED = "42501"
FUNCTION_CALL_SCORE = 75

NORMAL, COLLECTING, DECIDING = range(3)
_ALLOWED = (Verdict.ALLOW, Verdict.MASK)
_DEFAULT_RISK = RiskSection()
_GUC_BLOCKED = frozenset({"user", "database", "options", "replication", "application_name"})


_MASKED_OTHER = frozenset({w.COPY_DATA, w.NOTIFICATION, w.ERROR, w.NOTICE, w.PARAMETER_STATUS})
"""Backend messages other than DataRow whose text is masked."""
_COMMAND_COMPLETE, _READY, _ROW_DESCRIPTION, _COPY_DATA = (
    w.COMMAND_COMPLETE, w.READY, w.ROW_DESCRIPTION, w.COPY_DATA
)  # fmt: skip
_TAGS: dict[bytes, str] = {}
"""CommandComplete body -> its tag, and tag -> the count in it: routine
traffic repeats a few tags ("SELECT 1"), so each is decoded once."""
_COUNTS: dict[str, int | None] = {}
_TAGS_MAX = 1024
FAST_RESULT = True
"""Take ``_one_result`` when it applies (tests turn it off to compare)."""
_I32 = struct.Struct("!i")
_SIMPLE = {"protocol": "simple"}
_SQL = CommandKind.SQL
_COPY_STDOUT = "copy_stdout"
"""The risk scorer's category for COPY ... TO STDOUT."""
COPY_RULE = "copy_columns"
"""Rule id of a COPY refused because it cannot be masked by column."""
_COPY_NOT_ALONE = (
    "a COPY TO STDOUT is masked by column only as the single statement of its query"
)


Reg = tuple[int, str, list[Running], Any]
"""An answer to expect: (kind, name, statements, the Statement/Portal a
Describe is about)."""
CopyProbe = tuple[Running, Judged, "CopyTarget | str", bool]
"""A COPY TO STDOUT waiting for its columns: the statement, its judgement,
what to probe (or why it cannot be), and whether its allow decision is
still to be recorded."""


class ClientGone(Exception):
    pass


class FatalError(Exception):
    def __init__(self, sqlstate: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.hint = hint


@dataclass(slots=True)
class Unit:
    """Statements judged together: a simple Query, or extended messages up to
    Sync/Flush."""

    simple: bool
    data: list[bytes] = field(default_factory=list)
    regs: list[Reg] = field(default_factory=list)
    items: list[tuple[Running, Assessment, Any]] = field(default_factory=list)
    ends_with_sync: bool = False
    partial: bool = False
    """Earlier messages of this batch already went to the server."""
    decide: bool = True
    """Some statement needs a decision (review/deny); False when the unit
    only waits for COPY column probes."""
    probes: list[CopyProbe] = field(default_factory=list)
    size: int = 0
    """Bytes in ``data``."""
    cut: bool = False
    """Decided before its batch ended (UNIT_MAX_BYTES/UNIT_MAX_MESSAGES): the
    batch goes on after it."""


class UnattributedRows(Exception):
    """DataRows came when the tracker expects none: the gateway and the
    server disagree about what runs, so the rows cannot be masked by column."""

    def __init__(self, rows: int) -> None:
        super().__init__(f"{rows} rows of no statement")
        self.rows = rows


class ClientConnection(asyncio.Protocol):
    def __init__(self, handler: PostgresHandler) -> None:
        self.handler = handler
        self.conn = handler.connection
        self.gateway = handler.gateway
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.judge: Judge | None = None
        self.up: UpstreamProtocol | None = None
        self.tracker = Tracker(self)
        self.masking = handler.masking if handler.masking.active else None
        self._copy_names = bool(self.masking is not None and self.masking.by_name)
        """COPY TO STDOUT needs its columns probed (column rules apply)."""
        self._copy_cols: CopyColumns | None = None
        """The COPY TO streaming now, masked by column."""
        self._probes: list[CopyProbe] = []
        self._probing = 0
        """COPY column probes sent and not yet answered (a cheap test for
        the backend path before it asks the tracker)."""
        self._q_held = False
        self._own: list[tuple[int, bytes]] = []
        self._copy_in: Any = None
        """The stream masker of the COPY FROM STDIN data being recorded."""
        """Messages of the gateway's own to send before the client message
        at that offset of the buffer being framed (``_take``)."""
        self._described = ""
        """The client's previous message was a Describe of this portal
        (b"" for the unnamed one; "" for anything else)."""
        self._in_batch = False
        """The Query being framed comes inside an extended batch (no Sync yet)."""
        self._client_encoding = "UTF8"
        self.prepared = handler.scorer.new_tracker()
        self._offload_min = handler.scorer.offload_min_chars
        self._analysed = False
        """The frames coming back from the parse worker: do not send them again."""
        self._risk = self.conn.risk or _DEFAULT_RISK
        self.cframer = w.Framer(frontend=True, max_length=handler.options.max_client_message)
        self.bframer = w.Framer(frontend=False)
        self.key: tuple[int, int] | None = None
        self.backend_key: tuple[int, int] = (0, 0)
        self.tls = False
        self.state = NORMAL
        self.unit: Unit | None = None
        self._stash: list[bytes] = []
        self._stash_size = 0
        self._hs = bytearray()
        self._hs_waiter: asyncio.Future[None] | None = None
        self._relay = False
        self._closed = False
        self._client_terminated = False
        self._gated = False
        """A cap's CancelRequest is on its way: hold client bytes until it
        landed, so it cannot hit the client's next statement."""
        self._ended = False
        self._task: asyncio.Task[None] | None = None
        self._decision: asyncio.Task[None] | None = None
        self._pauses: set[str] = set()
        self._session_rows = 0
        self._session_bytes = 0
        self._db: Database | None = None
        """The catalog of the session's database, when column rules need the
        names of result columns' tables and columns (``_catalog``)."""
        self._rd_cache: dict[bytes, tuple[Any, Any, float]] = handler.row_descriptions
        """RowDescription bytes -> (columns, masking plan, valid until)."""
        self._held_up: list[bytes] | None = None
        """Server bytes held (from a RowDescription on) while the catalog is asked."""
        self._renamed = False
        """A statement that can rename columns ran in the open transaction."""
        opts = handler.options
        self._caps = any(
            x is not None
            for x in (
                opts.max_rows_per_statement,
                opts.max_bytes_per_statement,
                opts.max_rows_per_session,
                opts.max_bytes_per_session,
            )
        )

    # == asyncio.Protocol (client side) =========================================
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._task is not None:
            # uvloop's start_tls announces the TLS transport again
            self.transport = transport  # type: ignore[assignment]
            return
        self.transport = transport  # type: ignore[assignment]
        self._task = spawn(self._run(), name="pg-handshake")

    def data_received(self, data: bytes) -> None:
        if self._relay:
            self._client_data(data)
            return
        self._hs += data
        if len(self._hs) > HANDSHAKE_LIMIT:
            self._abort("handshake too large")
            return
        self._wake()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._wake()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._decision is not None and not self._decision.done():
            self._decision.cancel()
        self.handler.unregister_key(self.key)
        if self.up is not None and self.up.transport is not None and not self.up.closed:
            with contextlib.suppress(Exception):
                self.up.transport.write(w.terminate())
            self.up.transport.close()
        self._end("client_closed", str(exc) if exc else "")

    def pause_writing(self) -> None:
        if self.up is not None:
            self.up.pause("client_buffer")

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume("client_buffer")

    # == small helpers =============================================================
    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _wake(self) -> None:
        if self._hs_waiter is not None and not self._hs_waiter.done():
            self._hs_waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _to_client(self, data: bytes, stream: Stream = Stream.STDOUT) -> None:
        """Bytes the gateway itself says to the client (recorded as seen)."""
        self._write(data)
        if self.session is not None and not self.session.ended:
            self.session.upstream_data(data, stream)

    def _end(self, reason: str, error: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        if self.session is not None:
            self.session.end(reason, error)

    def _abort(self, why: str) -> None:
        log.debug("aborting client connection: %s", why)
        if self.transport is not None:
            self.transport.abort()

    def _fatal(self, sqlstate: str, message: str, hint: str = "", reason: str = "error") -> None:
        """Tell the client why, then close both sides."""
        self._write(w.error_response(sqlstate, message, severity="FATAL", hint=hint))
        if self.session is not None and not self.session.ended:
            self.session.error(message, sqlstate)
        self._end(reason, message)
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()
        if self.transport is not None:
            self.transport.close()

    # == handshake ===================================================================
    async def _need(self, n: int) -> None:
        while len(self._hs) < n:
            if self._closed:
                raise ClientGone
            self._hs_waiter = asyncio.get_running_loop().create_future()
            await self._hs_waiter
            self._hs_waiter = None

    async def _read_startup(self) -> bytes:
        await self._need(4)
        (length,) = struct.unpack_from("!i", self._hs, 0)
        if length < 8 or length > w.MAX_STARTUP_LENGTH:
            raise w.ProtocolViolation("invalid startup packet length")
        await self._need(length)
        pkt = bytes(self._hs[:length])
        del self._hs[:length]
        return pkt

    async def _read_typed(self) -> tuple[int, bytes]:
        await self._need(5)
        t = self._hs[0]
        (length,) = struct.unpack_from("!i", self._hs, 1)
        if t not in w.FRONTEND_TYPES or length < 4 or length > HANDSHAKE_LIMIT:
            raise w.ProtocolViolation("invalid message during authentication")
        await self._need(1 + length)
        msg = bytes(self._hs[: 1 + length])
        del self._hs[: 1 + length]
        return t, msg

    def _peer(self) -> tuple[str, str]:
        assert self.transport is not None
        peer = self.transport.get_extra_info("peername")
        if not peer:
            return "unknown", "unknown"
        return str(peer[0]), f"{peer[0]}:{peer[1]}"

    async def _run(self) -> None:
        try:
            login = await self._log_in()
            if login is not None:
                await self._start_session(*login)
        except ClientGone:
            self._end("client_closed")
        except asyncio.CancelledError:
            self._end("client_closed")
        except w.ProtocolViolation as exc:
            self._fatal("08P01", f"invalid frontend message: {exc}", reason="protocol_error")
        except FatalError as exc:
            self._fatal(exc.sqlstate, exc.message, exc.hint, reason="error")
        except Exception as exc:  # a bug: say so in protocol terms, then close
            log.exception("postgres handshake failed")
            self._fatal("XX000", f"hoopd internal error: {type(exc).__name__}")

    async def _negotiate(self) -> dict[str, str] | None:
        """Startup packets until a StartupMessage. None: handled (cancel)."""
        assert self.transport is not None
        for _ in range(4):
            pkt = await self._read_startup()
            code = m.startup_code(pkt, 0, len(pkt))
            if code == w.SSL_REQUEST:
                if self.tls or self._hs:
                    raise w.ProtocolViolation("unexpected SSLRequest")
                if not self._tls_enabled():
                    self.transport.write(b"N")
                    continue
                self.transport.write(b"S")
                await self._start_tls()
                continue
            if code == w.GSSENC_REQUEST:
                self.transport.write(b"N")
                continue
            if code == w.CANCEL_REQUEST:
                pid, key = m.cancel_key(pkt, 0, len(pkt))
                target = self.handler.find_key(pid, key)
                if target is not None:
                    await target.cancel()
                self.transport.close()
                return None
            major = code >> 16
            if major != 3:
                raise FatalError("0A000", f"unsupported frontend protocol {major}.{code & 0xFFFF}")
            params = m.startup_params(pkt, 0, len(pkt))
            unknown = [k for k in params if k.startswith("_pq_.")]
            if (code & 0xFFFF) > 0 or unknown:
                self.transport.write(w.negotiate_protocol_version(0, unknown))
            for k in unknown:
                params.pop(k)
            return params
        raise w.ProtocolViolation("too many startup packets")

    async def _log_in(self) -> tuple[dict[str, str], Identity] | None:
        """Startup packets and credentials, within ``options.login_timeout``
        (None: a CancelRequest, or the timeout before a startup message)."""
        params: dict[str, str] | None = None
        deadline = asyncio.timeout(self.handler.options.login_timeout)
        try:
            async with deadline:
                params = await self._negotiate()
                if params is None:
                    return None
                if params.get("replication", "false") not in ("false", "off", "0", "no"):
                    raise FatalError("0A000", "replication connections are not supported by hoopd")
                return params, await self._authenticate()
        except TimeoutError:
            if not deadline.expired():
                raise
        # Logged and counted (hoopd_auth_failures_total{reason="login_timeout"})
        host, _ = self._peer()
        when = "during authentication" if params is not None else "before its startup message"
        log.info(
            "%s: client %s not logged in after %.0f s (%s): closing",
            self.conn.name, host, self.handler.options.login_timeout, when,
        )  # fmt: skip
        self.gateway.connection_metrics(self.conn).auth_failed("login_timeout")
        if params is not None:
            raise FatalError("57014", "canceling authentication due to timeout")
        # (before a startup message there is no protocol to answer in)
        self._end("login_timeout")
        if self.transport is not None:
            self.transport.close()
        return None

    def _tls_enabled(self) -> bool:
        tls = self.conn.tls
        return tls is None or tls.enabled

    async def _start_tls(self) -> None:
        assert self.transport is not None
        ctx = self.gateway.server_ssl_context(self.conn)
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(self.transport, self, ctx, server_side=True)
        except (ssl.SSLError, OSError, ConnectionError) as exc:
            log.info("TLS handshake with a client failed: %s", exc)
            raise ClientGone from None
        if new is None:
            raise ClientGone
        self.transport = new
        self.tls = True

    def _plaintext_ok(self) -> bool:
        if self.tls:
            return True
        if not self.handler.options.allow_plaintext_loopback:
            return False
        host, _ = self._peer()
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    async def _authenticate(self) -> Identity:
        assert self.transport is not None
        conn = self.conn
        if conn.auth == "none":
            return Identity.ANONYMOUS
        if conn.auth == "tls-client-cert":
            found = identity_from_peercert(self.transport.get_extra_info("peercert")) if self.tls else None
            if found is None:
                raise FatalError("28000", "a client certificate is required")
            subject, groups = found
            return Identity(subject=subject, groups=groups, method=AuthMethod.TLS_CLIENT_CERT)
        if not self._plaintext_ok():
            raise FatalError(
                "28000",
                "hoopd requires TLS for this connection",
                "connect with sslmode=require (or verify-full with the gateway's CA)",
            )
        self.transport.write(w.auth_cleartext())
        t, msg = await self._read_typed()
        if t != w.PASSWORD:
            raise w.ProtocolViolation("expected a password message")
        credential = m.password(msg, 0, len(msg)).decode("utf-8", "replace").strip()
        if not credential:
            raise FatalError("28P01", "password authentication failed")
        try:
            return await self.gateway.authenticate(conn, credential)
        except AuthFailed:
            raise FatalError(
                "28P01",
                "password authentication failed",
                "use a gateway token, API key or OIDC token as the password",
            ) from None

    def _upstream_startup(self, params: dict[str, str]) -> dict[str, str]:
        up = self.handler.upstream
        allowed = set(self.handler.options.passthrough)
        out = {"user": up.user, "database": up.database}
        if "database" in allowed and params.get("database"):
            out["database"] = params["database"]
        for key in ("application_name", "options"):
            if key in allowed and key in params:
                out[key] = params[key]
        for k, v in params.items():
            if k not in _GUC_BLOCKED:
                out[k] = v
        return out

    async def _start_session(self, params: dict[str, str], identity: Identity) -> None:
        _, client_addr = self._peer()
        startup = self._upstream_startup(params)
        up = self.handler.upstream
        if self.handler.catalog is not None:
            self._db = self.handler.catalog.database(startup["database"])
            self._rd_cache = self._db.row_descriptions
        attrs = {
            "upstream": f"{up.host}:{up.port}",
            "database": startup["database"],
            "db_user": up.user,
            "client_user": params.get("user", ""),
            "application_name": params.get("application_name", ""),
            "tls": self.tls,
        }
        try:
            session = await self.gateway.open_session(self.conn, identity, client_addr, attrs)
        except SessionRefused as exc:
            raise FatalError("28000", exc.message) from None
        self.session = session
        self.judge = Judge(
            self.handler.scorer, self.prepared, self._risk, session.identity, session.break_glass
        )
        session.set_terminator(self._terminate)
        if self._closed:
            self._end("client_closed")
            return
        started = time.perf_counter()
        try:
            proto, login = await asyncio.wait_for(connect(up, startup), up.connect_timeout)
        except (TimeoutError, OSError, UpstreamError) as exc:
            session.metrics.upstream_errors.inc()
            detail = str(exc) or type(exc).__name__
            session.log.warning("database login failed: %s", detail)
            code = "08001" if not isinstance(exc, UpstreamError) else "08006"
            if isinstance(exc, UpstreamError) and exc.sqlstate == "3D000":
                raise FatalError("3D000", str(exc)) from None
            raise FatalError(code, "hoopd could not connect to the database") from None
        session.metrics.upstream_connect.observe(time.perf_counter() - started)
        self.up = proto
        if self._closed:
            if proto.transport is not None:
                proto.transport.close()
            self._end("client_closed")
            return
        self.backend_key = (login.backend_pid, login.backend_key)
        self.key = self.handler.register_key(self)
        out = [w.auth_ok()]
        out += [self._login_message(w.parameter_status(k, v)) for k, v in login.parameters]
        assert self.judge is not None
        for k, v in login.parameters:
            if k == "client_encoding":
                self._client_encoding = v
            elif k == "standard_conforming_strings":
                self.judge.backslash_escapes = v != "on"
        self.judge.wide_encoding = not ascii_safe(self._client_encoding)
        out += [self._login_message(notice) for notice in login.notices]
        out.append(w.backend_key_data(*self.key))
        out.append(w.ready_for_query(login.status))
        self._write(b"".join(out))
        proto.on_lost = self._upstream_lost
        proto.on_pause = self._upstream_write_paused
        leftover = proto.take_buffer()
        proto.on_data = self._upstream_data
        self._relay = True
        if leftover:
            self._upstream_data(leftover)
        if self._hs:
            data = bytes(self._hs)
            self._hs.clear()
            self._client_data(data)

    def _login_message(self, msg: bytes) -> bytes:
        """A ParameterStatus or NoticeResponse of the database's login,
        masked by content as later ones are: ``ALTER ROLE ... SET
        application_name`` or a login event trigger's RAISE NOTICE can put
        anything there."""
        if self.masking is None:
            return msg
        masked, _ = self.masking.mask_other(msg[0], msg, 0, len(msg), False)
        return msg if masked is None else masked

    # == external events =============================================================
    async def cancel(self) -> None:
        """A CancelRequest with this session's gateway key arrived."""
        if self.state == DECIDING and self._decision is not None and not self._decision.done():
            self._decision.cancel()
            return
        if self.up is None:
            return
        pid, key = self.backend_key
        try:
            await send_cancel(self.handler.upstream, pid, key)
        except (TimeoutError, OSError) as exc:
            log.info("could not forward a cancel request: %s", exc)

    def _terminate(self, reason: str, message: str) -> None:
        if self.session is not None:
            self.session.error(message, reason)
        self._end(reason, message)
        self._write(w.error_response("57P01", f"hoopd: {message}", severity="FATAL"))
        if self.up is not None and self.up.transport is not None:
            self.up.transport.abort()
        if self.transport is not None:
            self.transport.close()

    def _upstream_lost(self, exc: Exception | None) -> None:
        if self._client_terminated:
            self._end("client_closed")
        else:
            self._end("upstream_closed", str(exc) if exc else "")
        if self.transport is not None:
            self.transport.close()

    def _upstream_write_paused(self, paused: bool) -> None:
        if paused:
            self.pause("upstream_buffer")
        else:
            self.resume("upstream_buffer")

    def _wait_for_recorder(self) -> None:
        session = self.session
        if session is None or not session.congested:
            return
        self.pause("recorder")
        if self.up is not None:
            self.up.pause("recorder")

        async def wait() -> None:
            assert session is not None
            await session.wait_uncongested()
            self.resume("recorder")
            if self.up is not None:
                self.up.resume("recorder")

        spawn(wait(), name="pg-recorder-wait")

    # == client -> server ==============================================================
    def _client_data(self, data: bytes) -> None:
        if self.state != NORMAL or self._gated:
            if self.state == DECIDING or self._gated:
                self._stash_add(data)
                return
        elif data[:1] == b"Q" and not self.cframer.pending() and self._quick_query(data):
            return
        try:
            buf, frames = self.cframer.feed(data)
            if frames and not self._analysing(buf, frames):
                self._client_frames(buf, frames)
        except w.ProtocolViolation as exc:
            self._fatal("08P01", f"invalid frontend message: {exc}", reason="protocol_error")

    def _quick_query(self, data: bytes) -> bool:
        """Hot path: ``data`` is exactly one simple Query whose statements
        are all allowed. False (nothing done) if it is not: the general path
        takes it."""
        n = len(data)
        if n < 6 or _I32.unpack_from(data, 1)[0] != n - 1 or data.find(b"\0", 5) != n - 1:
            return False
        session = self.session
        judge = self.judge
        assert session is not None and judge is not None
        if n > self._offload_min:
            return False  # its text may be one for the parse worker
        stmts = self.handler.scorer.split(data[5 : n - 1].decode("utf-8", "replace"))
        if len(stmts) == 1:
            # one statement (pgbench, most drivers): no lists of judgements
            text = stmts[0].strip()
            j = judge(text)
            if not j.allowed or (self._copy_names and _COPY_STDOUT in j.assessment.categories):
                return False
            try:
                cmd = session.command(_SQL, text, _SIMPLE, self._recorded(text))
                session.final_decision(j.decision(cmd.seq))
            except SessionEnded:
                return True
            runs = [Running(cmd, perf_counter())]
        else:
            if not stmts:
                return False
            texts = [stmt.strip() for stmt in stmts]
            judged = [judge(text) for text in texts]
            for j in judged:
                if not j.allowed or (self._copy_names and _COPY_STDOUT in j.assessment.categories):
                    return False
            runs = []
            try:
                for text, j in zip(texts, judged, strict=True):
                    cmd = session.command(_SQL, text, _SIMPLE, self._recorded(text))
                    session.final_decision(j.decision(cmd.seq))
                    runs.append(Running(cmd, perf_counter()))
            except SessionEnded:
                return True
        tracker = self.tracker
        tracker.expect_query(runs)
        tracker.outstanding_batch = False
        session.client_data(data, record=False)
        self._send_up(data)
        if session.congested:
            self._wait_for_recorder()
        if len(tracker.queue) > INFLIGHT_MAX:
            self.pause("inflight")
        return True

    def _analysing(self, buf: bytes, frames: list[w.Frame]) -> bool:
        """If statement texts in ``frames`` are long enough for the parse
        worker and not analysed yet: hold the frames and what follows them
        (as a held statement is held) while it analyses them, then take them
        again -- True. The event loop, shared by every session, stays free."""
        if self._analysed:
            # Their analyses may have been evicted since by other sessions'
            # (then they are parsed here, on the loop): never loop on it.
            self._analysed = False
            return False
        longest = self._offload_min
        scorer = self.handler.scorer
        texts: list[str] = []
        for t, s, e in frames:
            if e - s <= longest:
                continue  # no text in it can be that long
            if t == w.Q:
                texts += [stmt.strip() for stmt in scorer.split(m.query_text(buf, s, e))]
            elif t == w.P:
                texts.append(m.parse_msg(buf, s, e).query.strip())
        wanted = [text for text in texts if scorer.needs_analysis(text)]
        if not wanted:
            return False
        self._stash = [buf[frames[0][1] : frames[-1][2]] + self.cframer.take_tail()]
        self._stash_size = len(self._stash[0])
        self._gated = True
        spawn(self._analyse(wanted), name="pg-analyse")
        return True

    async def _analyse(self, texts: list[str]) -> None:
        scorer = self.handler.scorer
        try:
            for text in texts:
                scorer.prime(text, await self.handler.parse_worker.analyse(text))
        finally:
            self._gated = False
            if not self._closed:
                self._analysed = True
                self._replay_stash()
                self._analysed = False

    def _stash_add(self, data: bytes) -> None:
        self._stash.append(data)
        self._stash_size += len(data)
        if self._stash_size > STASH_LIMIT:
            self.pause("stash")

    def _send_up(self, data: bytes) -> None:
        up = self.up
        if up is not None and up.transport is not None and not up.transport.is_closing():
            up.transport.write(data)

    def _client_frames(self, buf: bytes, frames: list[w.Frame]) -> None:
        session = self.session
        assert session is not None
        tracker = self.tracker
        region = frames[0][1]  # first byte not yet forwarded
        regs: list[Reg] = []
        batch_at = region  # where the current extended batch starts in buf
        batch_regs = 0
        batch_items: list[tuple[Running, Assessment, Any]] = []
        batch_partial = tracker.outstanding_batch
        copy_frames: list[w.Frame] = []
        self._own.clear()
        for i, (t, s, e) in enumerate(frames):
            if self.state == COLLECTING:
                unit = self.unit
                assert unit is not None
                unit.data.append(buf[s:e])
                unit.size += e - s
                self._in_batch = True
                self._frame(t, buf, s, e, unit.regs, unit.items)
                if self._own:
                    own = b"".join(d for _, d in self._own)
                    self._own.clear()
                    unit.data[-1] = own + unit.data[-1]
                    unit.size += len(own)
                if t in (w.S, w.H) or t == w.X:
                    unit.ends_with_sync = t == w.S
                    self._begin_decision(buf[e:])
                    return
                if unit.size > UNIT_MAX_BYTES or len(unit.data) > UNIT_MAX_MESSAGES:
                    unit.cut = True
                    session.log.info(
                        "a held batch reached %d messages, %d bytes before its Sync:"
                        " deciding it now, the rest of the batch follows",
                        len(unit.data), unit.size,
                    )  # fmt: skip
                    self._begin_decision(buf[e:])
                    return
                continue
            if t == w.COPY_DATA or t == w.COPY_DONE or t == w.COPY_FAIL:
                copy_frames.append((t, s, e))
                if batch_at == s:
                    batch_at = e  # COPY FROM data opens no extended batch
                continue
            if t == w.X:
                self._client_terminated = True
                self._flush_regs(regs)
                self._send_up(self._take(buf, region, e))
                session.client_data(buf[region:e], record=False)
                if self.up is not None and self.up.transport is not None:
                    self.up.transport.close()
                if self.transport is not None:
                    self.transport.close()
                return
            if t == w.Q or t == w.F:
                # a simple query is a batch of its own
                self._in_batch = batch_partial or batch_at < s
                batch_at, batch_regs, batch_items = s, len(regs), []
            hold = self._frame(t, buf, s, e, regs, batch_items)
            if hold:
                # forward what came before this batch; the batch becomes a unit
                self._flush_regs(regs[:batch_regs])
                if batch_at > region:
                    self._send_up(self._take(buf, region, batch_at))
                    session.client_data(buf[region:batch_at], record=False)
                unit = Unit(simple=t in (w.Q, w.F), partial=batch_partial and t == w.E)
                start_idx = next(j for j, f in enumerate(frames) if f[1] == batch_at)
                unit.data = [self._take(buf, f[1], f[2]) for f in frames[start_idx : i + 1]]
                self._own.clear()
                unit.size = sum(map(len, unit.data))
                unit.regs = regs[batch_regs:]
                unit.items = batch_items
                if t == w.Q:
                    unit.decide = self._q_held
                    unit.probes, self._probes = self._probes, []
                self.unit = unit
                if t in (w.Q, w.F):
                    self._begin_decision(buf[e:])
                    return
                self.state = COLLECTING
                region = e
                continue
            if t in (w.S, w.H, w.Q, w.F):
                batch_at, batch_regs, batch_items = e, len(regs), []
                batch_partial = False
        if self.state == COLLECTING:
            # the unit continues in the next chunk; keep its bytes
            return
        end = frames[-1][2]
        self._flush_regs(regs)
        tracker.outstanding_batch = batch_at < end
        self._send_up(self._take(buf, region, end))
        session.client_data(buf[region:end], record=False)
        if copy_frames:
            self._record_copy_in(buf, copy_frames)
        if session.congested:
            self._wait_for_recorder()
        if len(tracker.queue) > INFLIGHT_MAX:
            self.pause("inflight")

    def _record_copy_in(self, buf: bytes, frames: list[w.Frame]) -> None:
        """Record COPY FROM STDIN data as it went up, masked by content (as
        Bind parameters are): a stream masker per COPY, so that a value
        split between CopyData messages is still found."""
        session = self.session
        assert session is not None
        masking = self.handler.masking
        parts: list[bytes] = []
        for t, s, e in frames:
            if t == w.COPY_DATA and masking.scans:
                if self._copy_in is None:
                    self._copy_in = masking.masker.stream()
                data = self._copy_in.feed(buf[s + 5 : e])
                if data:
                    parts.append(copy_data(data))
                continue
            if t != w.COPY_DATA and self._copy_in is not None:
                rest = self._copy_in.flush()
                self._copy_in = None
                if rest:
                    parts.append(copy_data(rest))
            parts.append(buf[s:e])
        if parts:
            session.record(Output(Stream.STDIN, b"".join(parts)))

    def _take(self, buf: bytes, start: int, end: int) -> bytes:
        """buf[start:end] with the gateway's own messages (``_own``) in it."""
        own = self._own
        if not own:
            return buf[start:end]
        parts: list[bytes] = []
        p = start
        for at, data in own:
            if start <= at < end:
                parts += (buf[p:at], data)
                p = at
        parts.append(buf[p:end])
        return b"".join(parts)

    def _flush_regs(self, regs: list[Reg]) -> None:
        tracker = self.tracker
        for kind, name, runs, target in regs:
            tracker.expect(kind, name, runs, target=target)

    def _frame(
        self,
        t: int,
        buf: bytes,
        s: int,
        e: int,
        regs: list[Reg],
        items: list[tuple[Running, Assessment, Any]],
    ) -> bool:
        """Bookkeeping for one client message. True if it must be held."""
        tracker = self.tracker
        described, self._described = self._described, ""
        if t == w.Q:
            text = m.query_text(buf, s, e)
            runs: list[Running] = []
            hold = False
            probes: list[CopyProbe] = []
            for stmt in self.handler.scorer.split(text):
                run, verdict = self._judge(stmt.strip(), {"protocol": "simple"}, None, items, probes)
                runs.append(run)
                hold = hold or verdict not in _ALLOWED
            regs.append((QUERY, "", runs, None))
            if probes and len(runs) > 1:
                # the probe runs before the whole Query: an earlier statement
                # in it (CREATE, SET search_path...) could make the COPY's
                # columns other than the probed ones -- fail closed
                probes = [(r, j, _COPY_NOT_ALONE, d) for r, j, _, d in probes]
            self._q_held = hold
            self._probes = probes
            return hold or bool(probes)
        if t == w.P:
            pm = m.parse_msg(buf, s, e)
            st = tracker.on_parse(pm.name, pm.query)
            if pm.name:
                self.prepared.prepare(pm.name, pm.query)
            regs.append((PARSE, pm.name, [], None if pm.name else st))
            return False
        if t == w.B:
            bm = m.bind_msg(buf, s, e)
            texts = self._statement_texts(bm.statement)
            bound = tracker.on_bind(bm.portal, bm.statement, bm.result_formats)
            bound.bind = bm
            bound.texts = texts
            regs.append((BIND, bm.portal, [], bound))
            return False
        if t == w.D:
            kind, name = m.describe_or_close(buf, s, e)
            # what the answer describes is the statement or portal of that name
            # *now*: a pipeline may re-Parse/re-Bind the name before it arrives
            if kind == ord("S"):
                regs.append((DESC_STMT, name, [], tracker.statements.get(name)))
            else:
                regs.append((DESC_PORTAL, name, [], tracker.portals.get(name)))
                self._described = name or "\0"
            return False
        if t == w.E:
            name, _max_rows = m.execute_msg(buf, s, e)
            portal = tracker.portals.get(name)
            bind = getattr(portal, "bind", None)
            params, shown = self._params(bind)
            attrs: dict[str, Any] = {"protocol": "extended"}
            if name:
                attrs["portal"] = name
            if shown:
                attrs["params"] = shown
            text, unknown = self._portal_text(name)
            if self.masking is not None and described != (name or "\0"):
                # The columns the rows will have are known for certain only
                # from a Describe of this portal right before it runs (a
                # statement described earlier may not be the one the server
                # runs; the client need not describe at all): ask for one,
                # and keep its answer from the client.
                if portal is None:
                    portal = Portal(None, None)
                regs.append((DESC_OWN, name, [], portal))
                raw = buf[s + 5 : buf.index(b"\0", s + 5) + 1]
                self._own.append((s, w.message(w.D, b"P" + raw)))
            if unknown:
                run, verdict = self._judge_unknown(text, attrs, params, items, unknown)
            else:
                run, verdict = self._judge(text, attrs, params, items)
            run.portal = portal
            regs.append((EXEC, name, [run], None))
            return verdict not in _ALLOWED
        if t == w.C:
            kind, name = m.describe_or_close(buf, s, e)
            tracker.on_close(kind, name)
            if kind == ord("S") and name:
                self.prepared.deallocate(name)
            regs.append((CLOSE, name, [], None))
            return False
        if t == w.S:
            tracker.on_sync()
            regs.append((SYNC, "", [], None))
            return False
        if t == w.H:
            return False
        if t == w.F:
            oid, args = m.function_call(buf, s, e)
            run, verdict = self._judge_function(oid, len(args), items)
            regs.append((FCALL, "", [run], None))
            return verdict not in _ALLOWED
        if t == w.PASSWORD:
            raise w.ProtocolViolation("unexpected password message")
        return False

    def _statement_texts(self, name: str) -> tuple[str | None, ...]:
        """The texts a statement named in a Bind sent now may hold on the
        server (None: one the gateway does not know). A Parse, Close,
        PREPARE or DEALLOCATE may have failed or been skipped there."""
        if name:
            # every body prepared under the name (Parse or SQL PREPARE),
            # nothing known if it was never prepared or was forgotten
            candidates = getattr(self.prepared, "candidates", None)
            bodies = tuple(candidates(name)) if candidates is not None else ()
            return bodies or (None,)
        found = self.tracker.statement_versions(name)
        return tuple(None if v is LOST else v.query for v in found) or (None,)

    def _portal_text(self, name: str) -> tuple[str, str]:
        """(statement text to judge for an Execute of portal ``name``, why
        it is not known -- '' if it is). Several possible texts are judged
        together, as one text."""
        texts: list[str] = []
        unknown = ""
        for portal in self.tracker.portal_candidates(name):
            if portal is LOST:
                unknown = f"portal {name!r}: the gateway lost track of its earlier bindings"
                continue
            for text in portal.texts or (None,):
                if text is None:
                    unknown = "the prepared statement it runs was not prepared where the gateway saw it"
                elif text.strip() not in texts:
                    texts.append(text.strip())
        if not texts and not unknown:
            unknown = f"portal {name!r} was not bound where the gateway saw it"
        if len(texts) > 1:
            return (
                "/* hoopd: the server may run any of these (an earlier Parse, Bind or"
                " Close may not have taken effect) */\n" + ";\n".join(texts)
            ), unknown
        return (texts[0] if texts else ""), unknown

    def _judge_unknown(
        self,
        text: str,
        attrs: dict[str, Any],
        params: Any,
        items: list[tuple[Running, Assessment, Any]],
        why: str,
    ) -> tuple[Running, Verdict]:
        """An Execute whose statement the gateway cannot know: judged as
        an EXECUTE of an unknown prepared statement (high)."""
        session = self.session
        assert session is not None
        shown = f"-- Execute: {why}" + (f"\n{text}" if text else "")
        cmd = session.command(CommandKind.SQL, shown, attrs, self._recorded(shown))
        verdicts = {
            r.rule_id: r.action for r in (self._risk.rules or ()) if r.match == "unknown_prepared"
        }
        found = Assessment(
            75, frozenset({"unknown_prepared", "execute"}), (f"Execute: {why}",), verdicts
        )
        if text:
            found = combine([found, self.judge(text).assessment]) if self.judge else found
        run = Running(cmd)
        items.append((run, found, params))
        decision = decide_command(
            cmd.seq, self._risk, session.identity, found, break_glass=session.break_glass
        )
        if decision.verdict in _ALLOWED:
            session.final_decision(decision)
        return run, decision.verdict

    def _recorded(self, text: str) -> str:
        """The statement text as the recording keeps it (``_recorded_sql``)."""
        return text if self.masking is None else recorded_sql(self.masking, text)

    def _params(self, bind: Any) -> tuple[list[str | None] | None, list[str | None] | None]:
        """(params for the approval hash, params as recorded: masked; one
        longer than RECORDED_PARAM_BYTES by its length and digest only).

        A binary parameter is shown in hex, unless its bytes are UTF-8 text
        that a masking rule hits (text types are plain UTF-8 in binary, and
        asyncpg sends every parameter in binary): then the masked text."""
        if bind is None or not bind.params:
            return None, None
        raw: list[str | None] = []
        for i, v in enumerate(bind.params):
            if v is None:
                raw.append(None)
            elif bind.param_format(i) == 0:
                raw.append(v.decode("utf-8", "replace"))
            else:
                raw.append("\\x" + v.hex())
        masking = self.handler.masking
        shown: list[str | None] = []
        for i, p in enumerate(raw):
            if p is None:
                shown.append(None)
            elif len(bind.params[i]) > RECORDED_PARAM_BYTES:
                shown.append(_unrecorded(bind.params[i]))
            elif not masking.scans:
                shown.append(p)
            elif bind.param_format(i) == 0:
                shown.append(masking.masker.mask_text(p)[0])
            else:
                shown.append(_binary_shown(masking.masker, bind.params[i], p))
        return raw, shown

    def _judge(
        self,
        text: str,
        attrs: dict[str, Any],
        params: Any,
        items: list[tuple[Running, Assessment, Any]],
        probes: list[CopyProbe] | None = None,
    ) -> tuple[Running, Verdict]:
        """Judge one statement. A COPY TO STDOUT under column rules is, in a
        simple Query (``probes`` given), queued for a column probe -- its
        allow decision is recorded once the probe succeeded -- and refused
        anywhere else: its columns cannot be learned there (fail closed)."""
        session = self.session
        assert session is not None and self.judge is not None
        judged = self.judge(text)
        cmd = session.command(CommandKind.SQL, text, attrs, self._recorded(text))
        run = Running(cmd)
        if self._copy_names and _COPY_STDOUT in judged.assessment.categories:
            if probes is not None and not self._in_batch:
                target: CopyTarget | str
                try:
                    target = copy_target(text)
                except CopyUnsupported as exc:
                    target = str(exc)
                items.append((run, judged.assessment, params))
                probes.append((run, judged, target, judged.allowed))
                return run, judged.verdict
            judged = self._refused(
                judged,
                "a COPY TO STDOUT in an extended-protocol batch cannot be masked by column"
                " (its columns are learned only for a simple query)",
            )
        items.append((run, judged.assessment, params))
        if judged.allowed:
            session.final_decision(judged.decision(cmd.seq))
        return run, judged.verdict

    def _refused(self, judged: Judged, why: str) -> Judged:
        """``judged`` turned into a refusal (42501) by the rule COPY_RULE."""
        found = judged.assessment
        refused = Assessment(
            found.score,
            found.categories,
            (*found.reasons, why),
            {**found.rule_verdicts, COPY_RULE: Verdict.DENY},
        )
        session = self.session
        assert session is not None
        session.log.warning("COPY refused: %s", why)
        decision = decide_command(0, self._risk, session.identity, refused, break_glass=session.break_glass)
        return Judged(refused, decision)

    def _judge_function(
        self, oid: int, nargs: int, items: list[tuple[Running, Assessment, Any]]
    ) -> tuple[Running, Verdict]:
        session = self.session
        assert session is not None
        text = f"-- FunctionCall oid={oid} args={nargs}"
        cmd = session.command(CommandKind.SQL, text, {"protocol": "function_call", "oid": oid})
        found = Assessment(
            FUNCTION_CALL_SCORE,
            frozenset({"function_call"}),
            ("protocol-level FunctionCall: the function is opaque to the gateway",),
        )
        run = Running(cmd)
        items.append((run, found, None))
        decision = decide_command(
            cmd.seq, self.conn.risk, session.identity, found, break_glass=session.break_glass
        )
        if decision.verdict in _ALLOWED:
            session.final_decision(decision)
        return run, decision.verdict

    # -- held units ------------------------------------------------------------------
    def _begin_decision(self, rest: bytes) -> None:
        """``rest``: the framed buffer after the unit -- its later messages
        and the partial one the framer holds, which is dropped there (taken
        twice, its bytes would reach the server twice)."""
        self.state = DECIDING
        self.cframer.take_tail()
        self._stash = [rest] if rest else []
        self._stash_size = len(rest)
        self._decision = spawn(self._decide_unit(), name="pg-hold")

    async def _decide_unit(self) -> None:
        unit = self.unit
        session = self.session
        assert unit is not None and session is not None
        items = unit.items
        denied_msg = ""
        code = SQLSTATE_DENIED
        try:
            if unit.decide and len(items) == 1:
                run, found, params = items[0]
                decision = await session.decide(
                    run.cmd, found, params=params, on_held=self._on_held, shown=for_reviewers(run.cmd.text)
                )
            elif unit.decide:
                text = ";\n".join(r.cmd.text for r, _, _ in items)
                batch = session.command(
                    CommandKind.SQL,
                    text,
                    {"batch_of": [r.cmd.seq for r, _, _ in items], "statements": len(items)},
                    ";\n".join(self._recorded(r.cmd.text) for r, _, _ in items),
                )
                decision = await session.decide(
                    batch,
                    combine([a for _, a, _ in items]),
                    params=[p for _, _, p in items],
                    on_held=self._on_held,
                    shown=for_reviewers(text),
                )
            if unit.decide and decision.verdict not in _ALLOWED:
                why = decision.reasons[-1] if decision.reasons else "denied by policy"
                ident = f" (approval {decision.approval_id})" if decision.approval_id else ""
                denied_msg = f"hoopd: statement refused{ident}: {why}"
            elif unit.probes:
                why = await self._learn_copy_columns(unit.probes)
                if why:
                    denied_msg = f"hoopd: COPY refused: {why}"
        except asyncio.CancelledError:
            if self._closed:
                return
            denied_msg = "canceling statement due to user request"
            code = "57014"
        except Exception as exc:
            log.exception("deciding a held statement failed")
            denied_msg = f"hoopd: statement refused: {type(exc).__name__}"
        if self._closed or session.ended:
            return
        if denied_msg:
            self._deny_unit(unit, denied_msg, code)
        else:
            self._flush_regs(unit.regs)
            data = b"".join(unit.data)
            self._send_up(data)
            session.client_data(data, record=False)
        if unit.cut:
            self.tracker.outstanding_batch = True
        self.unit = None
        self.state = NORMAL
        self._decision = None
        self._replay_stash()

    async def _learn_copy_columns(self, probes: list[CopyProbe]) -> str:
        """Probe the columns of each COPY TO STDOUT of a Query, one after the
        other, and give each its masking plan. Returns why the Query must be
        refused ('' if it may run); the refused COPY gets a deny decision."""
        session = self.session
        masking = self.masking
        assert session is not None and masking is not None
        why = ""
        for i, (run, judged, target, deferred) in enumerate(probes):
            why = await self._probe_one(run, target) if isinstance(target, CopyTarget) else target
            if self._closed or session.ended:
                return why
            if why:
                session.log.warning("COPY refused: %s", why)
                for later, j, _, d in probes[i:]:
                    if d or later is run:
                        session.final_decision(
                            Decision(
                                later.cmd.seq, Verdict.DENY, j.risk, (*j.reasons, why),
                                (*j.rule_ids, COPY_RULE), "", "", j.break_glass,
                            )
                        )  # fmt: skip
                return why
            if deferred:
                session.final_decision(judged.decision(run.cmd.seq))
        return why

    async def _probe_one(self, run: Running, target: CopyTarget) -> str:
        masking = self.masking
        assert masking is not None
        encoding = target.encoding or self._client_encoding
        if not target.binary and not ascii_safe(encoding):
            return f"COPY data in encoding {encoding} cannot be masked by column"
        if self.tracker.discarding:
            # after an error in its extended batch the server ignores the
            # COPY (and would end that state at the probe's own Sync): no
            # probe; a COPY that runs unprobed ends the session
            return ""
        run.copy = ()  # probed: nothing to mask unless set below
        probe = Probe(target)
        probe.future = asyncio.get_running_loop().create_future()
        self.tracker.expect_probe(probe)
        self._probing += 1
        self._send_up(probe.request())
        try:
            await probe.future
        except asyncio.CancelledError:
            probe.cancel()
            raise
        if probe.error is not None:
            code = probe.error.get("C", "")
            if code == "25P02":
                # the transaction is aborted: the COPY fails the same way, no rows
                return ""
            msg = masking.mask_error_fields(probe.error).get("M", "")
            return f"its columns could not be learned for masking ({code}: {msg})"
        if probe.columns is None:
            return "its columns could not be learned for masking (no result description)"
        cols = probe.columns
        if self._db is not None and self.handler.catalog is not None:
            oids = self._db.missing([c.table_oid for c in cols if c.table_oid], time.monotonic())
            try:
                if oids:
                    await self.handler.catalog.learn(self._db, oids)
            except CatalogError:
                return "the names of its columns could not be learned for masking"
        plan = masking.plan(cols, None, self._origins(cols))
        if not any(plan.rules):
            return ""  # no column is masked by name: content masking as for any COPY
        if target.binary:
            return (
                "binary COPY data cannot be masked by column (a column rule applies to "
                + ", ".join(c.name for c, r in zip(probe.columns, plan.rules, strict=True) if r)
                + "); use FORMAT text or csv"
            )
        run.copy = (plan, probe.columns, target.fmt)
        return ""

    def _replay_stash(self) -> None:
        if self.state == DECIDING or self._gated:
            return
        stash, self._stash, self._stash_size = self._stash, [], 0
        self.resume("stash")
        if stash:
            self._client_data(b"".join(stash))

    def _deny_unit(self, unit: Unit, message: str, code: str) -> None:
        runs = [r for r, _, _ in unit.items]
        session = self.session
        assert session is not None
        session.error(message, code)
        if unit.simple:
            self.tracker.expect(DENIED, "", runs, message=f"{code}\0{message}")
            self._send_up(w.query(DENY_SQL))
            return
        self.tracker.expect(DENIED, "x", runs, message=f"{code}\0{message}")
        data = w.parse("", DENY_SQL)
        if unit.ends_with_sync:
            self.tracker.expect(SYNC)
            data += w.sync()
        else:
            data += w.message(w.H)
        self._send_up(data)

    def _on_held(self, approval_id: str, message: str) -> None:
        timeout = self.conn.approval.timeout
        self._to_client(
            w.notice_response(
                "00000",
                message,
                detail=f"The statement waits up to {int(timeout)} s for a decision.",
                hint=f"hoopd approvals approve {approval_id}",
            )
        )

    # == sink (results of statements) ===================================================
    def complete(self, run: Running, tag: str) -> None:
        if self._db is not None and tag.startswith(_RENAMING_TAGS):
            self._db.forget()
            self._renamed = True  # and again once committed (_ready)
        session = self.session
        if session is None:
            return
        rows = _tag_count(tag)
        session.result(
            run.cmd,
            tag,
            duration_ms=(perf_counter() - run.started) * 1000.0,
            rows=run.rows if rows is None else rows,
        )

    def failed(self, run: Running, fields: dict[str, str]) -> None:
        if self.session is None:
            return
        self.session.result(
            run.cmd,
            "error",
            duration_ms=(time.perf_counter() - run.started) * 1000.0,
            rows=run.rows,
            error=f"{fields.get('C', '')}: {fields.get('M', '')}",
        )

    def skipped(self, run: Running, why: str) -> None:
        if self.session is None:
            return
        if "\0" in why:
            code, why = why.split("\0", 1)
            status = "denied" if code == SQLSTATE_DENIED else "canceled"
        else:
            status = "skipped"
        self.session.result(run.cmd, status, rows=0, error=why)

    # == server -> client ================================================================
    def _upstream_data(self, data: bytes) -> None:
        if self._held_up is not None:
            self._held_up.append(data)
            return
        session = self.session
        transport = self.transport
        if session is None or transport is None or transport.is_closing():
            return
        try:
            buf, start, end, others, rows = self.bframer.feed_rows(data)
            if end == start:
                return
            out, counts, seq = self._backend(buf, start, end, others, rows)
            if "inflight" in self._pauses and len(self.tracker.queue) <= INFLIGHT_MAX // 2:
                self.resume("inflight")
        except BinaryCopyHit:
            self._fatal(
                "42501",
                "hoopd: a masking rule matched binary COPY data, which cannot be masked in place",
                reason="masking_failed",
            )
            return
        except CopyShapeError as exc:
            self._fatal("42501", f"hoopd: COPY data cannot be masked by column: {exc}", reason="masking_failed")
            return
        except UnattributedRows as exc:
            # Fail closed: without their statement the rows' columns (and so
            # the column rules) are unknown; they are not passed on.
            log.error("%d rows from the database match no statement the gateway tracked", exc.rows)
            self._fatal(
                "08P01", "hoopd: rows from the database match no statement the gateway tracked",
                reason="masking_failed",
            )
            return
        except w.ProtocolViolation as exc:
            self._fatal("08P01", f"hoopd: invalid data from the database: {exc}")
            return
        if out:
            try:
                # recorded before it moves on: a failed recorder ends the session
                session.upstream_data(out, Stream.ROWS, command_seq=seq, masked=counts)
            except SessionEnded:
                return
            transport.write(out)
            if session.congested:
                self._wait_for_recorder()

    def _backend(
        self, buf: bytes, start: int, end: int, others: list[w.RowsFrame], rows: int
    ) -> tuple[bytes, dict[str, int], int]:
        """Track, count and mask one run of complete backend messages.

        DataRows come in blocks between the other messages; a block is only
        looked at row by row when it has to be (a prefilter hit in it, a
        column rule or binary number column, a cap about to be exceeded).
        Otherwise the original bytes go on untouched."""
        if FAST_RESULT and not self._caps:
            done = self._one_result(buf, start, end, others, rows)
            if done is not None:
                return done
        if self._db is not None and others:
            end, others, rows = self._hold_for_catalog(buf, end, others, rows)
        tracker = self.tracker
        masking = self.masking
        hits: Hits | None = None
        if masking is not None and masking.scans and self._needs_scan(start, end, others, rows):
            hits = masking.hits(buf, start, end)
        pieces: list[bytes] = []
        seg = start
        counts: dict[str, int] = {}
        current = tracker.current
        run = current()
        seq = run.cmd.seq if run is not None else 0
        pos = start  # first byte of the current block of DataRows
        before = 0
        caps = self._caps
        for t, s, e, nrows in others:
            if nrows != before:
                plan = run.plan if run is not None else None
                if self._probing and tracker.probe_head() is not None:
                    seg = self._probe_rows(buf, pos, s, pieces, seg)
                elif run is None and masking is not None:
                    raise UnattributedRows(nrows - before)
                elif (
                    hits is None
                    and not caps
                    and (masking is None or run is None or (plan is not None and not plan.forced))
                ):
                    # only counted (what _rows does when no row needs a look)
                    n = nrows - before
                    nbytes = s - pos
                    if run is not None:
                        run.rows += n
                        run.bytes += nbytes
                    self._session_rows += n
                    self._session_bytes += nbytes
                else:
                    seg = self._rows(buf, pos, s, nrows - before, run, hits, pieces, seg, counts)
                before = nrows
            replacement = self._backend_message(t, buf, s, e, run)
            if self._copy_cols is not None and (t == _COPY_DATA or t == w.COPY_DONE):
                replacement = self._copy_columns(t, buf, s, e, counts)
            if (
                hits is not None
                and masking is not None
                and replacement is None
                and t in _MASKED_OTHER
                and hits.touch(s, e)
            ):
                replacement, c = masking.mask_other(t, buf, s, e, tracker.copy_out_binary)
                for k, n in c.items():
                    counts[k] = counts.get(k, 0) + n
            if replacement is not None:
                pieces.append(buf[seg:s])
                pieces.append(replacement)
                seg = e
            if t == _COPY_DATA and run is not None:
                run.bytes += e - s
            pos = e
            nxt = current()
            if nxt is not run:
                run = nxt
                if run is not None:
                    seq = run.cmd.seq
        if rows != before:
            if self._probing and tracker.probe_head() is not None:
                seg = self._probe_rows(buf, pos, end, pieces, seg)
            else:
                if run is None and masking is not None:
                    raise UnattributedRows(rows - before)
                seg = self._rows(buf, pos, end, rows - before, run, hits, pieces, seg, counts)
        if not pieces:
            return (buf[seg:end] if seg or end != len(buf) else buf), counts, seq
        pieces.append(buf[seg:end])
        return b"".join(pieces), counts, seq

    def _probe_rows(self, buf: bytes, pos: int, stop: int, pieces: list[bytes], seg: int) -> int:
        """DataRows of the COPY column probe: read, and dropped from what the
        client gets. Returns the new ``seg``."""
        probe = self.tracker.probe_head()
        unpack = _I32.unpack_from
        p = pos
        while p < stop:
            e = p + 1 + unpack(buf, p + 1)[0]
            probe.message(w.DATA_ROW, buf, p, e)
            p = e
        pieces.append(buf[seg:pos])
        return stop

    def _copy_columns(self, t: int, buf: bytes, s: int, e: int, counts: dict[str, int]) -> bytes | None:
        """A CopyData (or the CopyDone) of a COPY masked by column: the
        message(s) to send instead, None to send it as it is. Content rules
        are applied here to what changed (``_backend`` does the rest)."""
        cols = self._copy_cols
        masking = self.masking
        assert cols is not None and masking is not None
        if t == _COPY_DATA:
            new, c = cols.feed(buf[s + 5 : e])
            if new is None:
                return None
        else:
            self._copy_cols = None
            new, c = cols.finish()
        for k, n in c.items():
            counts[k] = counts.get(k, 0) + n
        out = b""
        if new:
            out = copy_data(new)
            if masking.scans:
                masked, c = masking.mask_other(_COPY_DATA, out, 0, len(out), False)
                if masked is not None:
                    out = masked
                for k, n in c.items():
                    counts[k] = counts.get(k, 0) + n
        return out if t == _COPY_DATA else out + buf[s:e]

    def _one_result(
        self, buf: bytes, start: int, end: int, others: list[w.RowsFrame], rows: int
    ) -> tuple[bytes, dict[str, int], int] | None:
        """The commonest answer, with fewer steps than the loop in _backend:
        the whole result of the last statement of a simple Query --
        [RowDescription, DataRows,] CommandComplete, ReadyForQuery -- when no
        row needs a look (too short for a content match, no cap, no forced
        masking plan). Leaves the tracker, counts and recording exactly as the
        loop would; None (nothing done) for anything else."""
        if len(others) == 3:
            (t0, s0, e0, r0), (t1, s1, e1, r1), (t2, s2, _, _) = others
            if t0 != _ROW_DESCRIPTION or r0 or r1 != rows:
                return None
        elif len(others) == 2 and not rows:
            (t1, s1, e1, _), (t2, s2, _, _) = others
            t0 = s0 = e0 = 0
        else:
            return None
        if t1 != _COMMAND_COMPLETE or t2 != _READY:
            return None
        tracker = self.tracker
        queue = tracker.queue
        if not queue:
            return None
        h = queue[0]
        if h.kind != QUERY or h.index != len(h.running) - 1:
            return None
        run = h.running[-1]
        if run.done or run.capped:
            return None
        if t0:
            masking = self.masking
            # what _needs_scan says here: the DataRows are buf[e0:s1]
            if (
                rows
                and masking is not None
                and masking.scans
                and (s1 - e0) - 7 * rows - 4 >= masking.min_width
            ):
                return None
            hit = self._rd_cache.get(buf[s0:e0])
            if (
                hit is None
                or (hit[1] is not None and hit[1].forced)
                or (hit[2] != _FOREVER and hit[2] <= time.monotonic())  # names to learn again
            ):
                return None
            run.columns, run.plan = hit[0], hit[1]
            if rows:
                nbytes = s1 - e0
                run.rows += rows
                run.bytes += nbytes
                self._session_rows += rows
                self._session_bytes += nbytes
        tracker.command_complete(_command_tag(buf[s1 + 5 : e1]))
        tracker.ready(buf[s2 + 5 : s2 + 6])
        if self._renamed:
            self._ready(buf[s2 + 5])
        if self.judge is not None and self.judge.encoding_changing and not queue:
            self.judge.encoding_changing = False
        nxt = tracker.current()
        seq = (nxt if nxt is not None else run).cmd.seq
        return (buf[start:end] if start or end != len(buf) else buf), {}, seq

    def _needs_scan(self, start: int, end: int, others: list[w.RowsFrame], rows: int) -> bool:
        """Can anything in buf[start:end] hold a content match?"""
        other_bytes = 0
        for t, s, e, _ in others:
            if t in _MASKED_OTHER:
                return True
            other_bytes += e - s
        if not rows:
            return False
        assert self.masking is not None
        row_bytes = (end - start) - other_bytes
        # A DataRow is at least 7 bytes (type, length, column count), and 11
        # with a value (plus the value's length): the longest value here is
        # at most row_bytes - 7 * (rows - 1) - 11 bytes. If that is shorter
        # than the shortest possible match, no value can hold one.
        return row_bytes - 7 * rows - 4 >= self.masking.min_width

    def _rows(
        self,
        buf: bytes,
        pos: int,
        stop: int,
        n: int,
        run: Running | None,
        hits: Hits | None,
        pieces: list[bytes],
        seg: int,
        counts: dict[str, int],
    ) -> int:
        """``n`` DataRows in buf[pos:stop] for ``run``. Returns the new ``seg``
        (first byte not yet copied to ``pieces``)."""
        nbytes = stop - pos
        masking = self.masking
        plan = None
        if masking is not None and run is not None:
            # (rows of no statement -- the server and the tracker disagree --
            # cannot be attributed; they are counted only)
            plan = run.plan if run.plan is not None else self._plan(run)
            if not plan.forced and (hits is None or not hits.touch(pos, stop)):
                plan = None
        capped = self._caps and run is not None and (run.capped or self._may_exceed(run, n, nbytes))
        if plan is None and not capped:
            if run is not None:
                run.rows += n
                run.bytes += nbytes
            self._session_rows += n
            self._session_bytes += nbytes
            return seg
        # row by row
        assert run is not None
        unpack = _I32.unpack_from
        cols = run.columns or []
        nrows = 0
        size = 0
        p = pos
        while p < stop:
            e = p + 1 + unpack(buf, p + 1)[0]
            if capped and self._over_cap(run, nrows, size + e - p):
                # drop the row; the statement is being canceled
                pieces.append(buf[seg:p])
                seg = p = e
                continue
            nrows += 1
            size += e - p
            if plan is not None and masking is not None and (
                plan.forced or (hits is not None and hits.touch(p, e))
            ):
                new, c = masking.mask_row(buf, p, e, plan, cols)
                for k, v in c.items():
                    counts[k] = counts.get(k, 0) + v
                if new is not None:
                    pieces.append(buf[seg:p])
                    pieces.append(new)
                    seg = e
            p = e
        run.rows += nrows
        run.bytes += size
        self._session_rows += nrows
        self._session_bytes += size
        return seg

    def _may_exceed(self, run: Running, rows: int, size: int) -> bool:
        opts = self.handler.options
        return (
            (opts.max_rows_per_statement is not None and run.rows + rows > opts.max_rows_per_statement)
            or (opts.max_bytes_per_statement is not None and run.bytes + size > opts.max_bytes_per_statement)
            or (opts.max_rows_per_session is not None and self._session_rows + rows > opts.max_rows_per_session)
            or (
                opts.max_bytes_per_session is not None
                and self._session_bytes + size > opts.max_bytes_per_session
            )
        )

    def _plan(self, run: Running | None) -> Any:
        masking = self.masking
        if run is None or masking is None:
            return None
        if run.plan is not None:
            return run.plan
        cols = run.columns
        formats: tuple[int, ...] | None = None
        portal = run.portal
        if cols is None and portal is not None:
            cols = portal.columns or (portal.statement.columns if portal.statement else None)
            formats = portal.result_formats
            run.columns = cols
        if cols is None:
            # rows without a known description: content-scan every value of hit rows
            from ._masking import RowPlan

            run.plan = RowPlan([], [], False, True)
            return run.plan
        run.plan = masking.plan(cols, formats, self._origins(cols))
        return run.plan

    def _backend_message(self, t: int, buf: bytes, s: int, e: int, run: Running | None) -> bytes | None:
        """Tracker bookkeeping; returns a replacement for the message (b"" drops it)."""
        tracker = self.tracker
        probe = tracker.probe_head() if self._probing else None
        if probe is not None and t not in ASYNC_TYPES:
            status = probe.message(t, buf, s, e)
            if status is not None:
                tracker.probe_done(status)
                self._probing -= 1
            return b""  # the probe's answers are the gateway's own
        if self._copy_cols is not None and t in (_COMMAND_COMPLETE, w.ERROR, _READY):
            self._copy_cols = None  # the COPY ended without CopyDone: a held partial row is dropped
        if t == _COMMAND_COMPLETE:
            if run is not None and run.capped:
                tracker.command_complete("capped")
                return self._cap_error(run)
            tracker.command_complete(_command_tag(buf[s + 5 : e]))
        elif t == _READY:
            tracker.ready(buf[s + 5 : s + 6])
            if self._renamed:
                self._ready(buf[s + 5])
            if self.judge is not None and self.judge.encoding_changing and not tracker.queue:
                # answered: a new client_encoding was reported before this
                self.judge.encoding_changing = False
        elif t == _ROW_DESCRIPTION:
            own = tracker.queue and tracker.queue[0].kind == DESC_OWN
            self._row_description(buf, s, e)
            if own:
                return b""
        elif t == w.ERROR:
            fields = m.error_fields(buf, s, e)
            if self.masking is not None:
                fields = self.masking.mask_error_fields(fields)
            if run is not None and run.capped and fields.get("C") == "57014":
                tracker.error(fields)
                return self._cap_error(run)
            h = tracker.error(fields)
            if h is not None and h.kind == DENIED:
                code, msg = h.message.split("\0", 1)
                return w.error_response(code, msg, hint=_deny_hint(code))
            if h is None and self.session is not None:
                self.session.error(fields.get("M", ""), fields.get("C", ""))
        elif t in (w.PARSE_COMPLETE, w.BIND_COMPLETE, w.CLOSE_COMPLETE):
            kind = {w.PARSE_COMPLETE: PARSE, w.BIND_COMPLETE: BIND, w.CLOSE_COMPLETE: CLOSE}[t]
            tracker.simple_ack(kind)
        elif t == w.NO_DATA:
            own = tracker.queue and tracker.queue[0].kind == DESC_OWN
            tracker.no_data()
            if own:
                return b""
        elif t == w.EMPTY_QUERY:
            tracker.command_complete("EMPTY")
        elif t == w.PORTAL_SUSPENDED:
            tracker.portal_suspended()
        elif t == w.COPY_OUT or t == w.COPY_BOTH:
            overall, _ = m.copy_response(buf, s, e)
            tracker.copy_out = True
            tracker.copy_out_binary = overall == 1
            if t == w.COPY_OUT and self._copy_names:
                if run is None or run.copy is None:
                    # Every COPY TO STDOUT is probed or refused before it is
                    # sent; one that was not (the risk scorer did not see a
                    # COPY in it) cannot be masked by column: fail closed.
                    raise CopyShapeError("its columns were not learned before it ran")
                if run.copy:
                    plan, cols, fmt = run.copy
                    if overall == 1:
                        raise CopyShapeError("the server sent binary COPY data for a text COPY")
                    self._copy_cols = CopyColumns(self.masking, plan, cols, fmt)
        elif t == w.PARAMETER_STATUS:
            name, value = m.parameter_status(buf, s, e)
            if name == "client_encoding":
                self._client_encoding = value
                if not ascii_safe(value) and self.judge is not None:
                    self.judge.wide_encoding = True  # for the rest of the session
            elif name == "standard_conforming_strings" and self.judge is not None:
                self.judge.backslash_escapes = value != "on"
        elif t == w.COPY_IN:
            tracker.copy_in = True
        elif t == w.FUNCTION_RESULT:
            tracker.function_result()
        elif t == w.BACKEND_KEY:
            return b""  # never reveal the backend's key data
        return None

    def _row_description(self, buf: bytes, s: int, e: int) -> None:
        """Columns of the result that starts, decoded once per distinct
        RowDescription (and planned once for masking)."""
        hit = self._rd_cache.get(buf[s:e])
        if hit is None:
            hit = self._describe(buf, s, e)
        run = self.tracker.row_description(hit[0])
        if run is not None:
            run.plan = hit[1]

    def _describe(self, buf: bytes, s: int, e: int, cols: Any = None) -> tuple[Any, Any, float]:
        """Decode (unless ``cols`` are given) and plan a RowDescription, with
        the column names the catalog has for it; cached until those names
        expire."""
        if cols is None:
            cols = m.row_description(buf, s, e)
        until = _FOREVER
        if self._db is not None:
            until = self._db.valid_until({c.table_oid for c in cols if c.table_oid})
        plan = self.masking.plan(cols, None, self._origins(cols)) if self.masking is not None else None
        hit = (cols, plan, until)
        cache = self._rd_cache
        if len(cache) >= ROW_DESCRIPTION_CACHE:
            del cache[next(iter(cache))]
        cache[buf[s:e]] = hit
        return hit

    def _origins(self, cols: Sequence[m.Column]) -> list[Origin | None] | None:
        db = self._db
        if db is None:
            return None
        return [db.origin(c.table_oid, c.column) if c.table_oid else None for c in cols]

    # -- column names from the catalog ---------------------------------------------------
    def _hold_for_catalog(
        self, buf: bytes, end: int, others: list[w.RowsFrame], rows: int
    ) -> tuple[int, list[w.RowsFrame], int]:
        """Stop before the first RowDescription whose tables the catalog must
        be asked about: the server stream from there waits (read paused)
        until the names are learned. Returns what to relay now."""
        db = self._db
        assert db is not None
        cache = self._rd_cache
        now = 0.0
        for i, (t, s, e, before) in enumerate(others):
            if t != _ROW_DESCRIPTION:
                continue
            hit = cache.get(buf[s:e])
            if hit is not None:
                if hit[2] == _FOREVER:
                    continue
                now = now or time.monotonic()
                if hit[2] > now:
                    continue
            now = now or time.monotonic()
            cols = m.row_description(buf, s, e)
            missing = db.missing([c.table_oid for c in cols if c.table_oid], now)
            if not missing:
                self._describe(buf, s, e, cols)
                continue
            self._held_up = [buf[s:end], self.bframer.take_tail()]
            if self.up is not None:
                self.up.pause("catalog")
            spawn(self._learn_names(db, missing), name="pg-catalog")
            return s, others[:i], before
        return end, others, rows

    async def _learn_names(self, db: Database, oids: list[int]) -> None:
        assert self.handler.catalog is not None
        try:
            await self.handler.catalog.learn(db, oids)
        except Exception as exc:  # CatalogError, or a bug: never relay the rows unnamed
            log.error("could not learn the names of result columns for masking: %s", exc)
            self._held_up = None
            self._fatal(
                "58000",
                "hoopd: the names of the result's columns could not be learned for masking",
                reason="masking_failed",
            )
            return
        held, self._held_up = self._held_up, None
        if self.up is not None:
            self.up.resume("catalog")
        if held:
            self._upstream_data(b"".join(held))

    def _ready(self, status: int) -> None:
        """ReadyForQuery after a statement that can rename: once its
        transaction has ended, the catalog's names are dropped again (a
        lookup in between saw the names from before the commit)."""
        if status == 73 and self._db is not None:  # b"I": no transaction open
            self._db.forget()
            self._renamed = False

    # -- caps -------------------------------------------------------------------------
    def _over_cap(self, run: Running, pending_rows: int, pending_bytes: int) -> bool:
        if run.capped:
            return True
        opts = self.handler.options
        rows = run.rows + pending_rows + 1
        size = run.bytes + pending_bytes
        why = ""
        if opts.max_rows_per_statement is not None and rows > opts.max_rows_per_statement:
            why = f"more than {opts.max_rows_per_statement} rows (max_rows_per_statement)"
        elif opts.max_bytes_per_statement is not None and size > opts.max_bytes_per_statement:
            why = f"more than {opts.max_bytes_per_statement} bytes (max_bytes_per_statement)"
        elif (
            opts.max_rows_per_session is not None
            and self._session_rows + pending_rows + 1 > opts.max_rows_per_session
        ):
            why = f"more than {opts.max_rows_per_session} rows in this session (max_rows_per_session)"
        elif (
            opts.max_bytes_per_session is not None
            and self._session_bytes + pending_bytes > opts.max_bytes_per_session
        ):
            why = (
                f"more than {opts.max_bytes_per_session} bytes in this session "
                "(max_bytes_per_session)"
            )
        if not why:
            return False
        run.capped = why
        if self.session is not None:
            self.session.error(f"result limit exceeded: {why}", "54000")
        self._gated = True
        spawn(self._cap_cancel(), name="pg-cap-cancel")
        return True

    async def _cap_cancel(self) -> None:
        try:
            await self.cancel()
        finally:
            self._gated = False
            if not self._closed:
                self._replay_stash()

    def _cap_error(self, run: Running) -> bytes:
        return w.error_response(
            "54000",
            f"hoopd: statement canceled: its result has {run.capped}",
            hint="narrow the query (WHERE, LIMIT) or ask an administrator to raise the limit",
        )


def _binary_shown(masker: Any, value: bytes, as_hex: str) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return as_hex
    masked, counts = masker.mask_text(text)
    return masked if counts else as_hex


def _unrecorded(value: bytes) -> str:
    digest = hashlib.sha256(value).hexdigest()
    return f"[parameter of {len(value)} bytes, not recorded; sha256 {digest}]"


def _tag_count(tag: str) -> int | None:
    """The count in a CommandComplete tag ("SELECT 5", "INSERT 0 3"); None
    for tags without one ("CREATE TABLE": the rows seen are recorded)."""
    try:
        return _COUNTS[tag]
    except KeyError:
        pass
    last = tag[tag.rfind(" ") + 1 :]
    count = int(last) if last.isdigit() and last.isascii() else None
    if len(_COUNTS) >= _TAGS_MAX:
        _COUNTS.clear()
    _COUNTS[tag] = count
    return count


def _command_tag(body: bytes) -> str:
    """The tag of a CommandComplete body (the bytes after the length)."""
    tag = _TAGS.get(body)
    if tag is None:
        tag = (body[:-1] if body[-1:] == b"\0" else body).decode("utf-8", "replace")
        if len(_TAGS) >= _TAGS_MAX:
            _TAGS.clear()
        _TAGS[body] = tag
    return tag


def _deny_hint(code: str) -> str:
    if code == SQLSTATE_DENIED:
        return "the statement did not run; the session is still usable"
    return ""
