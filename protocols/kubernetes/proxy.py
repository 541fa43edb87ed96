"""The HTTP side: authenticate, classify, decide, forward, mask, record."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_plus

import aiohttp
import yaml
from aiohttp import web
from multidict import CIMultiDict

from hoopd.aio import spawn
from hoopd.approvals.models import command_hash
from hoopd.approvals.store import same_person
from hoopd.gateway import AuthFailed, SessionRefused, approved_decision, deny_decision
from hoopd.model import (
    ApprovalEvent,
    AuthMethod,
    CommandKind,
    Decision,
    Identity,
    Stream,
    Verdict,
)
from hoopd.policy import Assessment, decide_command
from hoopd.tls import identity_from_peercert

from . import _proto
from ._paths import KubeRequest, classify
from .bodies import BodyMasker
from .exec import refusal_trace, relay_websocket
from .risk import assess, summary, with_rules
from .status import status_body, status_response, unauthorized
from .upstream import (
    IDEMPOTENT,
    REUSE_IDLE,
    ResponseTooLarge,
    Target,
    UpstreamConn,
    UpstreamError,
    UpstreamResponse,
)

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.gateway import Gateway
    from hoopd.model import Command
    from hoopd.session import Session

    from .config import KubeOptions, KubeUpstream

log = logging.getLogger("hoopd.kubernetes")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "authorization",
        "accept-encoding",
    }
)
IDENTITY_HEADER_PREFIXES = ("impersonate-", "x-remote-")
"""Headers that tell the API server who the caller is: only the gateway
says that. ``Impersonate-*`` (kubectl ``--as``) and the front-proxy headers
``X-Remote-User``/``-Group``/``-Extra-*`` (the API server's
``--requestheader-*-headers`` defaults; honoured when the gateway's client
certificate is trusted as a front proxy) are dropped from the client's request."""
RESERVED_PREFIX = "system:"
"""Kubernetes' own users and groups (``system:masters`` is cluster-admin
whatever RBAC says). An identity provider's group of that name is not
impersonated, and a subject of that name is refused: only RBAC bindings the
cluster admin made for the gateway's users should apply."""


def _has_dot_segment(path: str) -> bool:
    """``.`` or ``..`` as a segment of the (decoded) path; kubectl never sends one."""
    return "/." in path and any(seg in (".", "..") for seg in path.split("/"))


def impersonated_groups(identity: Identity) -> list[str]:
    return sorted(g for g in identity.groups if not g.startswith(RESERVED_PREFIX))


RESPONSE_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "upgrade",
        "date",
        "server",
    }
)
SPDY_MESSAGE = (
    "hoopd: exec/attach/port-forward over SPDY is not supported by this gateway; "
    "use kubectl 1.30 or newer (websocket v5.channel.k8s.io)"
)


WEBSOCKET_VERBS = frozenset({"exec", "attach", "portforward", "proxy"})
"""Requests relayed as websockets (channel protocols); any other upgrade is refused."""

UNMASKABLE_ENCODINGS = ("protobuf", "cbor", "yaml")
"""Response encodings the API server offers that the gateway cannot mask
structurally: binary ones it cannot read at all, and YAML, where content
rules alone would pass a Secret's base64 ``data`` and env values in clear."""


def json_accept(accept: str) -> str:
    """Drop protobuf, CBOR and YAML from an Accept header: the gateway masks
    objects as JSON, so the upstream must answer JSON."""
    if not accept:
        return "application/json"
    kept = [
        part.strip()
        for part in accept.split(",")
        if part.strip() and not _unmaskable_encoding(part)
    ]
    return ",".join(kept) or "application/json"


def _unmaskable_encoding(media_type: str) -> bool:
    low = media_type.lower()
    return any(name in low for name in UNMASKABLE_ENCODINGS)


def _refused_encoding(kr: KubeRequest, content_type: str) -> bool:
    """A response the gateway answers 502 instead of passing: binary
    encodings always; YAML for API objects (a proxied pod's or service's
    YAML, or a file under /logs/, is that program's text: content-masked)."""
    low = content_type.lower()
    if "protobuf" in low or "cbor" in low:
        return True
    return "yaml" in low and kr.resource_request and kr.verb != "proxy"


class ClientConn:
    """State of one client TCP connection: who it is and its session."""

    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol
        self.session: Session | None = None
        self.identity: Identity | None = None
        self.auth_header: str | None = None
        self.sockets: set[web.WebSocketResponse] = set()
        self.is_closed = False
        self.upstream: UpstreamConn | None = None  # keep-alive connection to the API server
        # (headers, identity, token) -> upstream header block: kubectl repeats a
        # few header sets on a connection (JSON and Table Accepts alternate)
        self.head_cache: dict[tuple[object, Identity, str | None], str] = {}
        self.timed_out: tuple[str, str] | None = None
        """(reason, message) once the client was too slow: how the session ends."""

    def closed(self, exc: BaseException | None) -> None:
        self.is_closed = True
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        if self.session is not None:
            if self.timed_out is not None:
                self.session.end(*self.timed_out)
            else:
                self.session.end("client_closed", str(exc) if exc else "")

    def terminate(self, reason: str, message: str) -> None:
        session = self.session
        if session is not None:
            session.error(message, reason)
            session.end(reason, message)
        for ws in list(self.sockets):
            spawn(_close_ws(ws, message), name="kube-close-ws")
        if self.upstream is not None:
            self.upstream.close()
        transport = getattr(self.protocol, "transport", None)
        if transport is not None:
            transport.close()


async def _close_ws(ws: web.WebSocketResponse, message: str) -> None:
    try:
        await ws.send_bytes(b"\x02" + f"\r\nhoopd: {message}\r\n".encode())
        await ws.close(code=1001, message=message[:100].encode())
    except Exception:
        pass


class _Refused(NamedTuple):
    """An exec/attach/port-forward refusal kept for kubectl's SPDY retry."""

    expires: float
    code: int
    message: str
    body: bytes
    content_type: str


class _Info:
    __slots__ = ("attrs", "found", "kr", "text")

    def __init__(self, kr: KubeRequest, text: str, attrs: dict[str, object]) -> None:
        self.kr = kr
        self.text = text
        self.attrs = attrs  # shared: copy before changing
        self.found: Assessment | None = None


class KubeProxy:
    def __init__(self, connection: ConnectionConfig, gateway: Gateway) -> None:
        self.connection = connection
        self.gateway = gateway
        self.upstream: KubeUpstream = connection.upstream
        self.options: KubeOptions = connection.options  # type: ignore[assignment]
        self.base = self.upstream.base_url()
        self.http: aiohttp.ClientSession | None = None  # websockets only
        self.target: Target | None = None
        self.bodies: BodyMasker | None = None
        self._refusals: dict[tuple[str, str], _Refused] = {}
        self._info: dict[tuple[str, str, str], _Info] = {}
        self._injected_token: str | None = None

    async def start(self) -> None:
        ssl_ctx = self.upstream.ssl_context()
        self.target = Target(self.base, ssl_ctx, self.upstream.connect_timeout)
        self.target.limit = self.options.max_response_bytes
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_ctx, limit=0, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.upstream.connect_timeout, connect=None
            ),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
            trace_configs=[refusal_trace(self.upstream.connect_timeout)],
        )
        self._injected_token = self.upstream.bearer()
        self.bodies = self._body_masker()

    def _body_masker(self) -> BodyMasker:
        return BodyMasker(
            self.gateway.masker(self.connection),
            mask_env=self.options.mask_env,
            configmap_keys=self.options.configmap_keys,
        )

    # ------------------------------------------------------------------ identity
    async def identify(self, request: web.BaseRequest, state: ClientConn) -> Identity | None:
        conn = self.connection
        if conn.auth == "none":
            return Identity.ANONYMOUS
        header = request.headers.get("Authorization", "")
        if header and header == state.auth_header and state.identity is not None:
            exp = state.identity.expires_at
            if exp is None or exp > time.time():
                return state.identity
        if not header:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            found = identity_from_peercert(peer)
            if found is not None:
                return Identity(subject=found[0], groups=found[1], method=AuthMethod.TLS_CLIENT_CERT)
            if conn.auth == "tls-client-cert":
                return None
        if conn.auth == "tls-client-cert":
            return None
        try:
            identity = await self.gateway.authenticate(conn, header)
        except AuthFailed:
            return None
        state.auth_header, state.identity = header, identity
        return identity

    async def session_for(
        self, state: ClientConn, identity: Identity, request: web.BaseRequest, kr: KubeRequest
    ) -> Session | web.Response:
        session = state.session
        if session is not None and not session.ended and session.identity == identity:
            return session
        if session is not None:
            session.end("identity_changed")
        if self.upstream.impersonate and identity.subject.startswith(RESERVED_PREFIX):
            log.warning("refused: identity %r is a name Kubernetes reserves", identity.subject)
            return status_response(
                403, f"hoopd: {identity.subject!r} is a name Kubernetes reserves; it is not impersonated", "Forbidden"
            )
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client_addr = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        try:
            session = await self.gateway.open_session(
                self.connection,
                identity,
                client_addr,
                {
                    "upstream": self.base,
                    "user_agent": request.headers.get("User-Agent", ""),
                    "first_request": self._recorded(kr.text()),
                },
            )
        except SessionRefused as exc:
            return status_response(403, f"hoopd: {exc.message}", "Forbidden")
        state.session = session
        session.set_terminator(state.terminate)
        if state.is_closed:
            session.end("client_closed")
        return session

    # ------------------------------------------------------------------ headers
    def upstream_token(self) -> str | None:
        """The bearer token to inject now. When a token file has rotated, the
        masker is rebuilt first, so the new token is masked in the very
        response that could echo it."""
        token = self.upstream.bearer()
        if token != self._injected_token:
            self._injected_token = token
            if self.bodies is not None:
                self.bodies = self._body_masker()
        return token

    def upstream_headers(
        self, request: web.BaseRequest, identity: Identity, *, websocket: bool = False
    ) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for key, value in request.headers.items():
            low = key.lower()
            if low in HOP_BY_HOP or low.startswith(IDENTITY_HEADER_PREFIXES):
                continue
            if websocket and low.startswith("sec-websocket-"):
                continue
            headers.add(key, value)
        headers["Accept"] = json_accept(request.headers.get("Accept", ""))
        headers["Accept-Encoding"] = "identity"
        token = self.upstream_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.upstream.impersonate and not identity.anonymous:
            headers["Impersonate-User"] = identity.subject
            for group in impersonated_groups(identity):
                headers.add("Impersonate-Group", group)
        return headers

    def request_head(
        self,
        request: web.BaseRequest,
        identity: Identity,
        body: bytes,
        state: ClientConn | None = None,
        target: str | None = None,
    ) -> bytes:
        """The upstream request head (HTTP/1.1, ends with the blank line):
        the same header rules as ``upstream_headers``. The header block is
        remembered per client connection (kubectl repeats the same headers)."""
        assert self.target is not None
        token = self.upstream_token()
        key = (request.raw_headers, identity, token)
        cache = state.head_cache if state is not None else None
        block = cache.get(key) if cache is not None else None
        if block is None:
            block = self._header_block(request, identity, token)
            if cache is not None:
                if len(cache) >= 8:
                    cache.clear()
                cache[key] = block
        length = f"Content-Length: {len(body)}\r\n" if body or request.method in ("POST", "PUT", "PATCH") else ""
        target = request.raw_path if target is None else target
        return f"{request.method} {target} HTTP/1.1\r\n{block}{length}\r\n".encode()

    def _header_block(self, request: web.BaseRequest, identity: Identity, token: str | None) -> str:
        assert self.target is not None
        out = [f"Host: {self.target.host_header}\r\n"]
        accept = ""
        for key, value in request.headers.items():
            low = key.lower()
            if low == "accept":
                accept = value if not accept else f"{accept},{value}"
                continue
            if low in HOP_BY_HOP or low.startswith(IDENTITY_HEADER_PREFIXES):
                continue
            out.append(f"{key}: {value}\r\n")
        out.append(f"Accept: {json_accept(accept)}\r\nAccept-Encoding: identity\r\n")
        if token:
            out.append(f"Authorization: Bearer {_header_value(token)}\r\n")
        if self.upstream.impersonate and not identity.anonymous:
            out.append(f"Impersonate-User: {_header_value(identity.subject)}\r\n")
            for group in impersonated_groups(identity):
                out.append(f"Impersonate-Group: {_header_value(group)}\r\n")
        return "".join(out)

    def failure_reason(self, exc: BaseException) -> str:
        """Why the upstream failed, for the client's Status and the recording,
        masked: a head the parser refuses is quoted (a bad status or header
        line), and it holds whatever the upstream put there, an echoed
        request header too."""
        return self._recorded(str(exc) or type(exc).__name__)

    def _recorded(self, text: str) -> str:
        """``text`` masked by content for the recording and for reviewers: a
        Command's text holds an exec's command line (``-- sh -c 'curl -H
        "Authorization: ..."'``); the risk rules and the approval's binding
        use it as sent."""
        masker = self.bodies.masker if self.bodies is not None else None
        return masker.mask_text(text)[0] if masker is not None else text

    async def send(self, state: ClientConn, method: str, head: bytes, body: bytes) -> UpstreamResponse:
        """On the client connection's upstream connection (opened or reopened
        as needed); a reused connection the server closed meanwhile is retried
        once on a new one for idempotent methods."""
        assert self.target is not None
        conn = state.upstream
        if conn is not None and (
            conn.closed
            or conn.busy
            or (method not in IDEMPOTENT and time.monotonic() - conn.idle_since > REUSE_IDLE)
        ):
            conn.close()
            conn = None
        if conn is not None:
            try:
                return await conn.request(method, head, body)
            except UpstreamError:
                if conn._got_bytes or method not in IDEMPOTENT:
                    raise
                conn.close()
        conn = await self.target.connect()
        if state.is_closed:
            conn.close()
            raise UpstreamError("client went away")
        state.upstream = conn
        return await conn.request(method, head, body)

    # ------------------------------------------------------------------ entry
    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The whole body, or its first ``max_body + 1`` bytes: ``read(n)``
        gives what has arrived, a body that comes in several reads needs
        several. TimeoutError: no byte for ``body_timeout``."""
        limit = self.options.max_body + 1
        whole = getattr(request, "whole_body", None)
        if whole is not None:  # the fast path's request: read in full already
            return whole[:limit]
        timeout = self.options.body_timeout
        parts: list[bytes] = []
        size = 0
        while size < limit:
            chunk = await asyncio.wait_for(request.content.read(limit - size), timeout)
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _body_timed_out(self, request: web.BaseRequest, state: ClientConn) -> web.Response:
        timeout = self.options.body_timeout
        peer = request.transport.get_extra_info("peername") if request.transport else None
        log.info(
            "%s: client %s: no request body bytes for %g s: closing",
            self.connection.name, peer[0] if peer else "unknown", timeout,
        )  # fmt: skip
        message = f"hoopd: no request body bytes for {timeout:g} s"
        state.timed_out = ("body_timeout", message)
        resp = status_response(408, message, "Timeout")
        resp.force_close()
        return resp

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        state: ClientConn = request.protocol.kube  # type: ignore[attr-defined]
        identity = await self.identify(request, state)
        if identity is None:
            resp = unauthorized()
            if getattr(request, "whole_body", None) is None:
                # aiohttp's server owns this connection: its parser bounds
                # neither a whole head (128 lines of 64 KiB) nor its time
                # (only the 120 s keep-alive), so an unknown client gets no
                # second request on it
                resp.force_close()
            return resp
        # the query as sent: classify decodes it once, as the API server does
        # (aiohttp's query_string is decoded already: twice, an exec's "%27"
        # read as a quote)
        if _has_dot_segment(request.path):
            # /api/v1/x/../namespaces/doomed: the gateway judges the path as
            # sent, a proxy in front of the API server may resolve it first
            log.info("refused a path with dot segments: %r", request.path[:200])
            return status_response(400, "hoopd: a path with '.' or '..' segments is refused", "BadRequest")
        info = self.request_info(request.method, request.path, request.raw_path.partition("?")[2])
        kr = info.kr
        got = await self.session_for(state, identity, request, kr)
        if isinstance(got, web.Response):
            return got
        session = got
        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade.startswith("spdy"):
            return self.refuse_spdy(session, kr)
        body: Any = None
        raw = b""
        opaque = False
        if request.can_read_body:
            if (request.content_length or 0) > self.options.max_body:
                return status_response(413, "hoopd: request body too large")
            try:
                raw = await self._read_body(request)
            except (aiohttp.ClientError, ConnectionError):
                return status_response(400, "hoopd: could not read the request body")
            except TimeoutError:
                return self._body_timed_out(request, state)
            if len(raw) > self.options.max_body:
                return status_response(413, "hoopd: request body too large")
            body, opaque = decode_body(request.content_type, raw)
        text, attrs = info.text, info.attrs
        if raw and request.method == "DELETE":
            # the API server takes a DELETE's options from its body when it has
            # one, and then ignores the query: ?dryRun=All beside a body is no dry run
            dry_run = delete_dry_run(body)
            if dry_run != kr.dry_run:
                kr = dataclasses.replace(kr, dry_run=dry_run)
                text, attrs = kr.text(), kr.attrs()
        if kr.write and body is not None:
            attrs = {**attrs, "object": summary(body)}
        elif kr.write and opaque:
            attrs = {**attrs, "object": {"opaque": request.content_type}}
        cmd = session.command(CommandKind.K8S, text, attrs, self._recorded(text))
        if kr.file_transfer and not self.options.file_transfer:
            # Refused by the connection, whatever the risk: no reviewer is asked.
            message = "hoopd: file transfer (kubectl cp) is not allowed on this connection"
            session.final_decision(Decision(cmd.seq, Verdict.DENY, reasons=(message,)))
            self._remember_refusal(session, cmd, message)
            session.result(cmd, "403", error="file transfer is not allowed")
            return status_response(403, message, "Forbidden")
        if body is None and not opaque and kr is info.kr:
            found = info.found
            if found is None:
                found = info.found = self.assess(kr, None, False, cmd.text)
        else:
            found = self.assess(kr, body, opaque, cmd.text)
        started = time.perf_counter()
        params = request_params(request.method, request.raw_path, raw)
        if self.connection.approval.mode == "retry":
            decision, refusal = await self.decide_retry(session, cmd, found, params)
            if refusal is not None:
                self._remember_refusal(session, cmd, refusal)
                session.result(cmd, "403", error="approval required")
                return status_response(403, refusal, "Forbidden")
        else:
            decision = await session.decide(cmd, found, params=params, shown=self._recorded(cmd.text))
        if decision.verdict is Verdict.DENY:
            message = "hoopd: request denied: " + "; ".join(decision.reasons or ("by policy",))
            self._remember_refusal(session, cmd, message)
            session.result(cmd, "403", error="denied")
            return status_response(403, message, "Forbidden")
        if upgrade == "websocket":
            if kr.verb not in WEBSOCKET_VERBS:
                # e.g. a watch, which the API server also serves over a websocket
                # (events as text frames): the relay masks channel output by
                # content only, so a Secret's base64 data would pass
                message = (
                    f"hoopd: {kr.verb} over a websocket is not supported by this gateway; "
                    "send it as a plain HTTP request"
                )
                session.result(cmd, "400", error="websocket upgrade refused")
                return status_response(400, message, "BadRequest")
            return await relay_websocket(self, request, state, session, cmd, kr, started)
        return await self.forward(request, session, cmd, kr, raw, started)

    def request_info(self, method: str, path: str, query_string: str) -> _Info:
        """Classification, command text and attrs of a request line (cached:
        clients repeat the same requests), plus the assessment of its
        body-less form once computed."""
        key = (method, path, query_string)
        info = self._info.get(key)
        if info is None:
            kr = classify(method, path, query_string)
            info = _Info(kr, kr.text(), kr.attrs())
            if len(path) + len(query_string) <= 2048:
                if len(self._info) >= 4096:
                    self._info.clear()
                self._info[key] = info
        return info

    def assess(self, kr: KubeRequest, body: Any, opaque: bool, text: str) -> Assessment:
        return with_rules(
            assess(kr, body, opaque_body=opaque, protected_namespaces=self.options.protected_namespaces),
            text,
            self.connection.risk,
        )

    # ------------------------------------------------------------------ approvals
    async def decide_retry(
        self, session: Session, cmd: Command, found: Assessment, params: dict[str, str] | None = None
    ) -> tuple[Decision, str | None]:
        """approval.mode retry: a held request is refused with the approval id;
        the same request from the same person succeeds once after approval.
        ``params`` (``request_params``) bind it to the request the reviewer
        was shown, not only to its text."""
        approvals = self.gateway.approvals
        identity = session.identity
        conn = self.connection
        digest = command_hash(cmd.text, params)
        decision = decide_command(cmd.seq, conn.risk, identity, found, break_glass=session.break_glass)
        if decision.verdict is not Verdict.REVIEW:
            return session.final_decision(decision), None
        if approvals is None:
            return session.final_decision(
                deny_decision(decision, "approvals are not configured: held commands cannot run")
            ), None
        try:
            for appr in await approvals.list("approved", conn.name):
                if (
                    appr.command_hash == digest
                    and same_person(appr.requester, identity.subject)
                    and await approvals.consume(appr.id, appr.session_id, digest)
                ):
                        session.approval_event(ApprovalEvent(appr.id, cmd.seq, "used", digest, appr.reviewer or ""))
                        session.metrics.approval("approved")
                        return session.final_decision(
                            approved_decision(decision, appr.id, appr.reviewer)
                        ), None
            pending = None
            for appr in await approvals.list("pending", conn.name):
                if appr.command_hash == digest and same_person(appr.requester, identity.subject):
                    pending = appr
                    break
            if pending is None:
                pending = await self.gateway.create_approval(
                    session, cmd, decision, digest, self._recorded(cmd.text)
                )
                session.metrics.approval("requested")
                if self.gateway.notifier is not None:
                    self.gateway.notifier.notify("approval.created", pending)
        except Exception as exc:
            session.log.error("approval store unavailable, denying request: %s", exc)
            return session.final_decision(deny_decision(decision, f"approval store unavailable: {exc}")), None
        session.record(
            Decision(
                cmd.seq,
                Verdict.REVIEW,
                decision.risk,
                decision.reasons,
                decision.rule_ids,
                approval_id=pending.id,
            )
        )
        session.approval_event(ApprovalEvent(pending.id, cmd.seq, "pending", digest))
        message = (
            f"hoopd: this request needs a reviewer's approval (id {pending.id}): "
            f"{'; '.join(decision.reasons)}. A reviewer can run: hoopd approvals approve {pending.id} "
            "-- then run the same command again."
        )
        return decision, message

    def _remember_refusal(
        self,
        session: Session,
        cmd: Command,
        message: str,
        *,
        code: int = 400,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """kubectl 1.30+ retries a refused exec websocket over SPDY; keep the
        answer so that the SPDY refusal can repeat it: the gateway's own
        reason (as a 400 Status), or the upstream's refusal as relayed
        (``code``, masked ``body``), which is what the API server would
        answer the SPDY request too."""
        if cmd.attrs.get("verb") not in ("exec", "attach", "portforward"):
            return
        now = time.monotonic()
        self._refusals = {k: v for k, v in self._refusals.items() if v.expires > now}
        if body is None:
            body = status_body(code, message, "BadRequest" if code == 400 else "")
        self._refusals[(session.identity.subject, cmd.text)] = _Refused(
            now + self.options.refused_message_ttl, code, message, body, content_type
        )

    def refuse_spdy(self, session: Session, kr: KubeRequest) -> web.Response:
        text = kr.text()
        cmd = session.command(CommandKind.K8S, text, {**kr.attrs(), "transport": "spdy"}, self._recorded(text))
        hit = self._refusals.get((session.identity.subject, cmd.text))
        if hit is None or hit.expires <= time.monotonic():
            hit = _Refused(0.0, 400, SPDY_MESSAGE, status_body(400, SPDY_MESSAGE, "BadRequest"), "application/json")
        session.final_decision(Decision(cmd.seq, Verdict.DENY, reasons=(hit.message,)))
        session.result(cmd, str(hit.code), error="spdy refused")
        return web.Response(status=hit.code, body=hit.body, headers={"Content-Type": hit.content_type})

    # ------------------------------------------------------------------ forwarding
    async def forward(
        self,
        request: web.BaseRequest,
        session: Session,
        cmd: Command,
        kr: KubeRequest,
        raw: bytes,
        started: float,
    ) -> web.StreamResponse:
        assert self.bodies is not None
        state: ClientConn = request.protocol.kube  # type: ignore[attr-defined]
        target, limit = log_byte_limit(kr, request.raw_path)
        try:
            head = self.request_head(request, session.identity, raw, state, target)
            upstream = await self.send(state, request.method, head, raw)
        except ResponseTooLarge:
            return self._too_large(session, cmd)
        except (UpstreamError, OSError, TimeoutError) as exc:
            session.metrics.upstream_errors.inc()
            reason = self.failure_reason(exc)
            session.error(f"upstream unreachable: {reason}", "upstream_unreachable")
            session.result(cmd, "503", error=reason)
            return status_response(503, f"hoopd: the Kubernetes API server is unreachable: {reason}")
        try:
            return await self.relay_response(request, upstream, session, cmd, kr, started, limit)
        finally:
            upstream.release()

    async def relay_response(
        self,
        request: web.BaseRequest,
        upstream: UpstreamResponse,
        session: Session,
        cmd: Command,
        kr: KubeRequest,
        started: float,
        limit: int | None = None,
    ) -> web.StreamResponse:
        """``limit``: the client's logs ``limitBytes``, applied here to the
        masked output (see log_byte_limit)."""
        assert self.bodies is not None
        uhead = upstream.head
        assert uhead is not None
        ctype = ""
        kept: list[tuple[str, str]] = []
        for k, v in uhead.headers:
            low = k.lower()
            if low == "content-type":
                ctype = v
            if low not in RESPONSE_DROP:
                kept.append((k, v))
        masker = self.bodies.masker
        if masker is not None and masker.active:
            kept = self._mask_fields(kept, session, cmd)
        if _refused_encoding(kr, ctype):
            # not asked for (json_accept): refuse rather than pass it unmasked
            session.result(cmd, "502", error="upstream answered in an encoding the gateway cannot mask")
            return status_response(
                502, "hoopd: the API server answered in an encoding the gateway cannot mask"
            )
        code = uhead.status
        streaming = kr.watch or kr.verb in ("logs", "proxy") or (
            uhead.chunked and not ctype.startswith("application/json")
        )
        if not streaming:
            try:
                data = await upstream.read()
            except ResponseTooLarge:
                return self._too_large(session, cmd)
            counts: dict[str, int]
            if kr.discovery:
                # not content-masked (kubectl needs it whole); the injected
                # token could still be echoed
                out, counts = masker.mask_injected(data) if masker is not None else (data, {})
            elif "json" in ctype or data[:1] in (b"{", b"["):
                out, counts = await self.bodies.mask_large_document(data)
            else:
                out, counts = self.bodies.mask_bytes(data)
            session.upstream_data(out, Stream.BODY, command_seq=cmd.seq, masked=counts)
            session.result(cmd, str(code), duration_ms=(time.perf_counter() - started) * 1000)
            respond = getattr(request, "respond", None)
            if respond is not None:  # server.RawRequest: written without a Response object
                return respond(code, kept, out, bool(ctype))
            return web.Response(status=code, body=out, headers=CIMultiDict(kept))
        upstream.unlimit()  # masked as it streams: its size is the client's business
        resp = await self._open_stream(request, code, CIMultiDict(kept))
        error = ""
        try:
            if (kr.watch and ("json" in ctype or not ctype)) or (kr.verb == "proxy" and "json" in ctype):
                # JSON through proxy too: a node's kubelet (nodes/NAME/proxy/pods)
                # answers PodLists with every env value, a pod or service any JSON
                await self._relay_lines(upstream, resp, session, cmd)
            else:
                await self._relay_text(upstream, resp, session, cmd, limit)
        except (ConnectionError, aiohttp.ClientError, UpstreamError, RuntimeError, ValueError) as exc:
            error = str(exc) or type(exc).__name__
        session.result(cmd, str(code), duration_ms=(time.perf_counter() - started) * 1000, error=error)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
        return resp

    def _too_large(self, session: Session, cmd: Command) -> web.Response:
        """A response masked as a whole (not streamed) is over
        ``max_response_bytes``: refused, never passed unmasked; the
        upstream connection is closed, not reused."""
        limit = self.options.max_response_bytes
        message = (
            f"hoopd: the API server's response is over {limit} bytes (max_response_bytes), "
            "too large to mask; ask for less (kubectl --chunk-size, a label selector)"
        )
        session.log.warning("response refused: over max_response_bytes (%d)", limit)
        session.error(message, "response_too_large")
        session.result(cmd, "502", error=message)
        return status_response(502, message)

    def _mask_fields(
        self, fields: list[tuple[str, str]], session: Session, cmd: Command
    ) -> list[tuple[str, str]]:
        """Response header fields content-masked like a body: kubectl prints a
        ``Warning`` field (an admission webhook's text) on stderr, and an API
        server or proxy may mirror a request header, the upstream credential
        the gateway injected included. A cookie (``proxy`` to a service) only
        has that credential masked: masking more would break its session."""
        assert self.bodies is not None
        masker = self.bodies.masker
        counts: dict[str, int] = {}
        out = []
        for name, value in fields:
            mask = masker.mask_injected if name.lower() == "set-cookie" else masker.mask_value
            masked, c = mask(value.encode("latin-1"))
            if c:
                value = bytes(masked).decode("latin-1")
                for rule, n in c.items():
                    counts[rule] = counts.get(rule, 0) + n
            out.append((name, value))
        if counts:
            session.upstream_data(b"", Stream.BODY, command_seq=cmd.seq, masked=counts, record=False)
        return out

    @staticmethod
    async def _open_stream(request: web.BaseRequest, code: int, headers: CIMultiDict[str]) -> Any:
        """A streamed response: aiohttp's, or the raw connection's
        (server.RawRequest.open_stream) for a request that came that way."""
        opener = getattr(request, "open_stream", None)
        if opener is not None:
            return opener(code, headers)
        resp = web.StreamResponse(status=code, headers=headers)
        await resp.prepare(request)
        return resp

    async def _relay_lines(
        self, upstream: UpstreamResponse, resp: web.StreamResponse, session: Session, cmd: Command
    ) -> None:
        assert self.bodies is not None
        lines = self.bodies.lines()
        async for chunk in upstream.iter_any():
            out, counts = lines.feed(chunk)
            if out:
                session.upstream_data(out, Stream.BODY, command_seq=cmd.seq, masked=counts)
                await resp.write(out)
        out, counts = lines.flush()
        if out:
            session.upstream_data(out, Stream.BODY, command_seq=cmd.seq, masked=counts)
            await resp.write(out)

    async def _relay_text(
        self,
        upstream: UpstreamResponse,
        resp: web.StreamResponse,
        session: Session,
        cmd: Command,
        limit: int | None = None,
    ) -> None:
        """Logs (``kubectl logs -f``): the content stream masker, whose held-back
        tail is released after ``exec_flush_ms`` of upstream silence. At most
        ``limit`` bytes of masked output reach the client."""
        assert self.bodies is not None
        left = limit
        stream = self.bodies.stream()
        idle = self.options.exec_flush_ms / 1000
        content = upstream
        reported: dict[str, int] = {}
        while True:
            held = getattr(stream, "held", 0)
            try:
                if held:
                    chunk = await asyncio.wait_for(content.readany(), idle)
                else:
                    chunk = await content.readany()
            except TimeoutError:
                out = stream.flush()
            else:
                if not chunk:
                    break
                out = stream.feed(chunk)
            if out:
                if left is not None:
                    out = out[:left]
                    left -= len(out)
                counts = _delta(stream.counts, reported)
                session.upstream_data(out, Stream.STDOUT, command_seq=cmd.seq, masked=counts)
                await resp.write(out)
                if left == 0:
                    return  # limitBytes reached: the upstream connection is closed, not reused
        out = stream.flush()
        if left is not None:
            out = out[:left]
        if out:
            session.upstream_data(out, Stream.STDOUT, command_seq=cmd.seq, masked=_delta(stream.counts, reported))
            await resp.write(out)


def delete_dry_run(options: Any) -> bool:
    """Whether a DELETE's body (its DeleteOptions, decoded) makes it a dry
    run for the API server: ``dryRun`` a non-empty list of ``All``. A body
    that did not decode, or that spells the key in another case too (an
    older API server matched keys case-insensitively), is no dry run."""
    if not isinstance(options, dict):
        return False
    if [k for k in options if isinstance(k, str) and k.lower() == "dryrun"] != ["dryRun"]:
        return False
    values = options["dryRun"]
    return isinstance(values, list) and bool(values) and all(v == "All" for v in values)


def request_params(method: str, target: str, body: bytes) -> dict[str, str]:
    """What an approval is bound to besides the command text: the method, the
    request target as sent on (path and query) and a digest of the body. The
    text leaves out what is in the body (a created object's name, its pod
    spec, an RBAC binding's subjects) and a ``proxy`` request's path, so a
    retry-mode approval bound to the text alone let a different object (or
    proxied request) run under the same words."""
    return {
        "method": method,
        "target": target,
        "body": hashlib.sha256(body).hexdigest() if body else "",
    }


def log_byte_limit(kr: KubeRequest, raw_path: str) -> tuple[str, int | None]:
    """(upstream target, limit) for a logs request with ``limitBytes``.

    The API server cuts logs at a byte count, which can cut a secret so that
    the rest no longer matches any rule (a card number's first 15 digits, then
    nothing). So the gateway asks for the log without the limit, masks it,
    and cuts the masked output at the limit itself."""
    values = kr.query.get("limitBytes") if kr.verb == "logs" else None
    if not values:
        return raw_path, None
    try:
        limit = max(0, int(values[-1]))
    except ValueError:
        return raw_path, None  # the API server answers the malformed value
    path, _, query = raw_path.partition("?")
    # by the name the API server decodes (limit%42ytes is limitBytes too)
    kept = [p for p in query.split("&") if unquote_plus(p.split("=", 1)[0]) != "limitBytes"]
    return (f"{path}?{'&'.join(kept)}" if kept else path), limit


def _header_value(value: str) -> str:
    """Values the gateway adds (request headers were checked by the server's parser)."""
    if "\r" in value or "\n" in value or "\0" in value:
        raise UpstreamError("a header value with a line break")
    return value


def _delta(total: dict[str, int], reported: dict[str, int]) -> dict[str, int]:
    """Counts added since the last call (stream maskers keep running totals)."""
    out = {k: v - reported.get(k, 0) for k, v in total.items() if v != reported.get(k, 0)}
    reported.update(total)
    return out


def decode_body(content_type: str, raw: bytes) -> tuple[Any, bool]:
    """(decoded body, opaque) for classification: JSON, YAML (server-side
    apply) or the envelope of a protobuf body."""
    if not raw:
        return None, False
    if content_type == _proto.PROTOBUF:
        obj = _proto.decode(raw)
        if obj is None:
            return None, True
        meta: dict[str, Any] = {"name": obj.name, "namespace": obj.namespace}
        if obj.labels:
            meta["labels"] = obj.labels
        out: dict[str, Any] = {"apiVersion": obj.api_version, "kind": obj.kind, "metadata": meta}
        out.update(_proto.rbac_fields(obj))
        return out, True
    try:
        if "yaml" in content_type:
            return _load_yaml_tree(raw), False
        return json.loads(raw, object_pairs_hook=_unique_keys), False
    except (ValueError, UnicodeDecodeError):
        return None, True
    except Exception:  # yaml errors, RecursionError (nested too deep)
        return None, True


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object of a request body; a key given twice makes the body
    opaque (ValueError). The API server decodes a repeated key into what the
    first one filled (Go's encoding/json: two objects merge), Python keeps
    only the last, so the gateway would judge another object than the one
    created: ``roleRef: {name: cluster-admin}, roleRef: {kind: ClusterRole}``
    bound cluster-admin as a plain rbac_change."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key given twice")
    return out


class _TreeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` for a request body that must be a tree: an alias of
    a mapping or sequence is refused (a yaml error: the body is opaque). Nine
    lists of nine aliases of the one before ("billion laughs", a few hundred
    bytes) load as a small graph, but every walk, ``str()`` or recording of it
    visits 9**n nodes, seconds to hours on the event loop. kubectl sends
    JSON; an alias of a scalar is kept (it cannot multiply anything)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = self.anchors.get(event.anchor)
            if node is not None and not isinstance(node, yaml.ScalarNode):
                raise yaml.composer.ComposerError(
                    None, None, "an alias of a mapping or sequence", event.start_mark
                )
        return super().compose_node(parent, index)


    # The API server reads YAML with goyaml.v2 (YAML 1.1, its own words):
    # y/Y/n/N are booleans too, and a plain scalar Go's strconv.ParseInt(s, 0)
    # takes (0o17, 0X1F, 0B1) is an integer. Read as PyYAML reads them, a
    # pod's "privileged: y" was a string here and true on the server.
    bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}

    def construct_go_int(self, node: Any) -> Any:
        value = str(self.construct_scalar(node))
        if _GO_INT.match(value):
            with contextlib.suppress(ValueError):
                return int(value.replace("_", ""), 0)
        return self.construct_yaml_int(node)


_GO_INT = re.compile(r"^[-+]?0[oObBxX][0-9a-fA-F_]+$")
_TreeLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
_TreeLoader.add_implicit_resolver("tag:yaml.org,2002:int", _GO_INT, list("-+0"))
_TreeLoader.add_constructor("tag:yaml.org,2002:int", _TreeLoader.construct_go_int)


def _load_yaml_tree(raw: bytes) -> Any:
    return yaml.load(raw, Loader=_TreeLoader)  # (a SafeLoader, see _TreeLoader)

