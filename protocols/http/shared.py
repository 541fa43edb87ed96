"""What every client connection of one configured http connection shares:
config, credentials to inject, the risk scorer, the masker and memoized
masked heads; HTTP constants and small helpers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .approval import APPROVAL_HEADER
from .bodies import DECODABLE, JsonDocuments, Plan, plan_response
from .config import HttpOptions, HttpUpstream
from .h1 import (
    Header,
    Headers,
    RequestHead,
    ResponseHead,
    response_head_bytes,
    serialize_head,
    status_line,
)
from .risk import (
    MAX_READINGS,
    MAX_TARGETS,
    METHOD_OVERRIDE_HEADERS,
    TARGET_OVERRIDE_HEADERS,
    HttpRiskScorer,
    climbs_above_root,
    method_readings,
    normalize_path,
    split_target,
    target_readings,
)

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig
    from hoopd.policy import Assessment

    from .exchange import Replay

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect", APPROVAL_HEADER}
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
RESPONSE_DROP = HOP_BY_HOP
RANGE_REQUEST = frozenset({"range", "if-range", "request-range"})
"""Dropped when masking: a byte range can cut a secret so that no piece of it
matches a rule (ask for a card number eight digits at a time), so masked
connections fetch whole representations. ``Request-Range`` is Netscape 2-3's
spelling of Range, which Apache httpd still honours when Range is absent."""
SENSITIVE = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)

RESPONSE_UNMASKED = frozenset(
    {
        # framing, caching and content negotiation
        "content-type", "content-length", "content-encoding", "content-range",
        "transfer-encoding", "accept-ranges", "etag", "last-modified", "date",
        "expires", "age", "cache-control", "pragma", "vary", "allow", "retry-after",
        "digest", "content-digest", "repr-digest",
        # connection management and WebSocket handshake
        "connection", "keep-alive", "upgrade", "alt-svc",
        "sec-websocket-accept", "sec-websocket-protocol", "sec-websocket-extensions",
        # browser security policy and CORS
        "strict-transport-security", "content-security-policy",
        "content-security-policy-report-only", "x-content-type-options",
        "x-frame-options", "referrer-policy", "permissions-policy",
        "cross-origin-opener-policy", "cross-origin-embedder-policy",
        "cross-origin-resource-policy", "timing-allow-origin",
        "access-control-allow-origin", "access-control-allow-methods",
        "access-control-allow-headers", "access-control-expose-headers",
        "access-control-allow-credentials", "access-control-max-age",
        # the session the client must hold (recorded as [REDACTED])
        "set-cookie",
    }
)  # fmt: skip
"""Response header fields passed to the client without content masking:
masking would break what they do (an ETag of sixteen digits is not a card
number, a CORS origin with an IP address must stay one) and they carry no
user data by design. ``Set-Cookie`` is the session the client must hold
(masking it would log the user out); it is recorded as ``[REDACTED]``. Every
other field value, and the reason phrase, is content-masked before the
client gets it (``Location`` too: a redirect that carries user data loses it,
as a body would)."""


BASE_ESCAPE = "the path leaves the upstream's base path as a backend reads it"
TOO_MANY_READINGS = (
    f"more than {MAX_READINGS} method readings or {MAX_TARGETS} target overrides:"
    " no backend reads them all"
)


@dataclass(slots=True, eq=False)
class Prepared:
    """What one request head means, computed once per distinct head (memoized
    by its exact bytes): the command text and attrs, the risk assessment, the
    recorded (redacted, masked) head and the upstream heads of a bodyless request."""

    path: str
    query: str
    npath: str
    """Normalized path ('*' for ``OPTIONS *``)."""
    text: str
    """``METHOD /npath?query``: what rules and approvals see."""
    cmd_text: str
    """``text`` masked, as recorded."""
    attrs: dict[str, Any]
    """Command attrs without the body part; never changed (copy to extend)."""
    found: Assessment
    request_hash: str
    recorded_head: bytes
    bearer: str | None = None
    """The client's bearer credential in this head (None: none)."""
    up_heads: dict[str, bytes] = field(default_factory=dict)
    """Upstream head of the bodyless request, by client IP (X-Forwarded-For)."""
    methods: tuple[str, ...] = ()
    """The methods the backend may act on (``risk.method_readings``)."""
    targets: tuple[tuple[str, str], ...] = ()
    """Other targets the backend may route by (``risk.target_readings``)."""
    refusal: str = ""
    """Why the request is refused with 400 before anything else ('' = it is
    not): a backend's reading of the path leaves the upstream's base path
    (``risk.climbs_above_root``), or more readings than ``risk.MAX_READINGS``."""


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    """What a response head becomes (memoized by its exact bytes): the body
    plan and the header fields the client gets (before framing fields)."""

    plan: Plan
    items: tuple[Header, ...]
    """Header fields as the client gets them (content-masked, see ``RESPONSE_UNMASKED``)."""
    reason: str
    """The reason phrase as the client gets it (content-masked)."""
    counts: dict[str, int]
    """What masking the head replaced, by rule id."""


def json_response(
    status: int, payload: dict[str, Any], *, close: bool, extra: list[tuple[str, str]] = ()  # type: ignore[assignment]
) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = Headers()
    headers.add("Content-Type", "application/json")
    headers.add("Content-Length", str(len(body)))
    headers.add("Cache-Control", "no-store")
    for name, value in extra:
        headers.add(name, value)
    if close:
        headers.add("Connection", "close")
    return response_head_bytes(status, "", headers) + body


class HttpProxy:
    """Per-connection (config) state shared by every client connection."""

    def __init__(self, connection: ConnectionConfig, gateway: Any) -> None:
        self.connection = connection
        self.gateway = gateway
        self.loop = asyncio.get_running_loop()
        self.upstream: HttpUpstream = connection.upstream
        self.options: HttpOptions = connection.options  # type: ignore[assignment]
        self.scorer = HttpRiskScorer(self.options.rules, connection.risk)
        self.masker = gateway.masker(connection)
        self.masking = bool(self.masker is not None and self.masker.active)
        self.listener_tls = bool(connection.tls is not None and connection.tls.enabled)
        up = self.upstream
        self.prefix = up.prefix
        self.authority = up.authority
        self.ssl: ssl.SSLContext | None = None
        if up.tls:
            ctx = ssl.create_default_context(cafile=str(up.ca) if up.ca else None)
            if not up.verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.ssl = ctx
        self.inject: list[tuple[str, str]] = []
        self.inject_query = ""
        self.injected_names: frozenset[str] = frozenset()
        auth = up.auth
        if auth is not None:
            if auth.bearer is not None:
                self.inject.append(("Authorization", f"Bearer {auth.bearer.reveal()}"))
            if auth.basic is not None:
                pair = f"{auth.basic.user}:{auth.basic.password.reveal()}".encode()
                self.inject.append(("Authorization", "Basic " + base64.b64encode(pair).decode()))
            for name, secret in auth.headers.items():
                self.inject.append((name, secret.reveal()))
            self.inject_query = "&".join(
                f"{quote(k, safe='')}={quote(v.reveal(), safe='')}" for k, v in auth.query.items()
            )
            self.injected_names = frozenset(n.lower() for n, _ in self.inject)
        self.strip_client_auth = connection.auth != "none" or bool(self.inject)
        self.sensitive = SENSITIVE | self.injected_names
        self.inject_drop = frozenset(self.injected_names) | (
            {"authorization"} if self.strip_client_auth else set()
        )
        self.request_drop = (
            REQUEST_DROP
            | self.inject_drop
            | (FORWARDED if self.options.forwarded_headers else frozenset())
            | (RANGE_REQUEST if self.masking else frozenset())
        )
        self._text_cache: dict[str, str] = {}
        self._head_cache: dict[bytes, bytes] = {}
        self.docs = JsonDocuments(self.masker) if self.masking else None
        self.request_heads: dict[bytes, RequestHead] = {}
        """Parsed request heads by their bytes (shared by every client's parser)."""
        self.response_heads: dict[bytes, ResponseHead] = {}
        self._prepared: dict[bytes, Prepared] = {}
        self._response_plans: dict[bytes, ResponsePlan] = {}
        self._out_heads: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self.replays: dict[tuple[Any, ...], Replay | None] = {}
        """Whole responses by (upstream read, method, version, keep-alive): see
        ``exchange.Replay``; None: seen once, not traced yet."""
        self.forwarded_proto = "https" if self.listener_tls else "http"
        self.bearer_auth = connection.auth == "default"

    # -- per-head memos ----------------------------------------------------
    def prepare(self, head: RequestHead) -> Prepared:
        """The memoized meaning of a request head (see ``Prepared``)."""
        raw = head.raw
        prep = self._prepared.get(raw)
        if prep is not None:
            return prep
        path, query = split_target(head.target)
        npath = normalize_path(path) if path != "*" else "*"
        text = f"{head.method} {npath}?{query}" if query else f"{head.method} {npath}"
        attrs: dict[str, Any] = {"method": head.method, "path": self.mask_text(npath)}
        if query:
            attrs["query"] = self.mask_text(query)
        if head.upgrade:
            attrs["upgrade"] = head.upgrade
        overrides = [v for n, _, v in head.headers.items if n in METHOD_OVERRIDE_HEADERS]
        methods = method_readings(head.method, overrides, query)
        targets = target_readings(
            [v for n, _, v in head.headers.items if n in TARGET_OVERRIDE_HEADERS]
        )
        refusal = ""
        if bool(self.prefix) and npath != "*" and climbs_above_root(npath):
            refusal = BASE_ESCAPE
        if len(methods) > MAX_READINGS or len(targets) > MAX_TARGETS:
            refusal = TOO_MANY_READINGS
            methods, targets = methods[:1], ()  # judged no further: refused
        if self.prefix and targets:
            # such a target is the backend's whole path, base path included:
            # rules see it below the base; one outside the base is refused
            inside: list[tuple[str, str]] = []
            for tpath, tquery in targets:
                rel = tpath[len(self.prefix) :] if tpath.startswith(self.prefix) else "-"
                if rel[:1] not in ("/", "") or climbs_above_root(rel or "/"):
                    refusal = BASE_ESCAPE
                inside.append((rel or "/", tquery))
            targets = tuple(inside)
        identity = text
        # what the backend may act on is what is judged and what an approval binds
        if len(methods) > 1:
            attrs["method_readings"] = [self.mask_text(m) for m in methods]
            identity = f"{identity}\n{' '.join(methods)}"
        if targets:
            attrs["target_readings"] = [self.mask_text(f"{p}?{q}" if q else p) for p, q in targets]
            identity = f"{identity}\n{targets!r}"
        prep = Prepared(
            path,
            query,
            npath,
            text,
            self.mask_text(text),
            attrs,
            self.scorer.assess_readings(methods, npath, text, targets),
            hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest(),
            self.redacted_head(head.raw, f"{head.method} {head.target} HTTP/{head.version}", head.headers),
        )
        prep.methods = methods
        prep.targets = targets
        prep.refusal = refusal
        value = head.headers.get("authorization") or ""
        if value[:7].lower() == "bearer ":
            prep.bearer = value[7:].strip()
        if len(raw) <= 8192:
            if len(self._prepared) >= self._CACHE_MAX:
                self._prepared.clear()
            self._prepared[raw] = prep
        return prep

    def upstream_head(
        self, head: RequestHead, prep: Prepared, client_ip: str, framing: tuple[str, str] | None
    ) -> bytes:
        """The request head sent upstream, built with one join. ``framing``:
        the body framing field (name, value), or None for none."""
        drop = self.request_drop
        if head.connection:
            drop = drop | frozenset(head.connection)
        if head.upgrade == "websocket" and self.masking:
            # no permessage-deflate: masked text frames must be readable (and re-framable)
            drop = drop | {"sec-websocket-extensions"}
        npath, query = prep.npath, prep.query
        target = self.prefix + npath if npath != "*" else "*"
        if query:
            target += "?" + query
        if self.inject_query:
            target += ("&" if "?" in target else "?") + self.inject_query
        lines = [f"{head.method} {target} HTTP/1.1\r\nHost: {self.authority}\r\n"]
        add = lines.append
        accept: list[str] = []
        for lname, name, value in head.headers.items:
            if lname in drop:
                continue
            if lname == "accept-encoding" and self.masking:
                accept.extend(t.strip().lower() for t in value.split(",") if t.strip())
                continue
            add(f"{name}: {value}\r\n")
        if self.options.forwarded_headers:
            prior = head.headers.get("x-forwarded-for")
            add(f"X-Forwarded-For: {prior}, {client_ip}\r\n" if prior else f"X-Forwarded-For: {client_ip}\r\n")
            add(f"X-Forwarded-Proto: {self.forwarded_proto}\r\n")
            host = head.headers.get("host")
            if host:
                add(f"X-Forwarded-Host: {host}\r\n")
        if self.masking:
            # Only codings the gateway can decode for masking; none left, or
            # none asked for (which allows any): identity, so an upstream has
            # no reason to send a body the gateway would have to refuse
            keep = [c for c in accept if c.split(";", 1)[0].strip() in DECODABLE or c.startswith("identity")]
            add(f"Accept-Encoding: {', '.join(keep) if keep else 'identity'}\r\n")
        for name, value in self.inject:
            add(f"{name}: {value}\r\n")
        if head.upgrade == "websocket":
            add("Connection: Upgrade\r\nUpgrade: websocket\r\n")
        if framing is not None:
            add(f"{framing[0]}: {framing[1]}\r\n")
        add("\r\n")
        return "".join(lines).encode("latin-1")

    def response_plan(self, resp: ResponseHead) -> ResponsePlan:
        """Body plan and client-bound header fields of a (final, non-101) response head.

        Memoized by the head's bytes for heads with a body: a bodyless head
        (to HEAD, 204, 304) can have the same bytes as one with a body and
        gets another plan, so it is never memoized."""
        bodyless = resp.framing == "none"
        if not bodyless:
            rp = self._response_plans.get(resp.raw)
            if rp is not None:
                return rp
        if bodyless:
            plan = Plan("none")
        else:
            plan = plan_response(resp.headers, self.masker, self.options.unmaskable)
        drop = RESPONSE_DROP | frozenset(resp.connection) if resp.connection else RESPONSE_DROP
        headers = Headers([h for h in resp.headers.items if h[0] not in drop])
        if plan.transforms:
            headers.remove("content-length", "content-encoding", "content-md5")
            etag = headers.get("etag")
            if etag is not None and not etag.startswith("W/"):
                headers.set("ETag", "W/" + etag)
        reason, counts = self.mask_head_fields(resp.reason, headers)
        rp = ResponsePlan(plan, tuple(headers.items), reason, counts)
        if not bodyless and len(resp.raw) <= 8192:
            if len(self._response_plans) >= self._CACHE_MAX:
                self._response_plans.clear()
            self._response_plans[resp.raw] = rp
        return rp

    def mask_head_fields(self, reason: str, headers: Headers) -> tuple[str, dict[str, int]]:
        """Content-mask a response head for the client, in place: every field
        value outside ``RESPONSE_UNMASKED``; returns the masked reason phrase
        and the counts."""
        if not self.masking:
            return reason, {}
        counts: dict[str, int] = {}
        reason = self._mask_field(reason, counts)
        items = headers.items
        injects = self.masker.injects
        for i, (lname, name, value) in enumerate(items):
            if lname not in RESPONSE_UNMASKED:
                masked = self._mask_field(value, counts)
            elif injects:
                # even a field content masking would break (a cookie) must not
                # hand the client the upstream credential the gateway added
                masked = self._mask_field(value, counts, self.masker.mask_injected)
            else:
                continue
            if masked is not value:
                items[i] = (lname, name, masked)
        return reason, counts

    def _mask_field(self, value: str, counts: dict[str, int], mask: Any = None) -> str:
        if not value:
            return value
        out, found = (mask or self.masker.mask_value)(value.encode("latin-1"))
        if not found:
            return value
        for rule, n in found.items():
            counts[rule] = counts.get(rule, 0) + n
        return bytes(out).decode("latin-1")

    def memoized_head(self, key: tuple[Any, ...]) -> tuple[bytes, bytes] | None:
        """What ``response_head`` returned for ``key`` before, if it is remembered."""
        return self._out_heads.get(key)

    def response_head(
        self, key: tuple[Any, ...] | None, status: int, reason: str, headers: Headers
    ) -> tuple[bytes, bytes]:
        """(head for the client, head as recorded); memoized by ``key`` when given
        (the upstream head's bytes plus everything that changed the fields).
        ``reason`` and ``headers`` are already masked (``mask_head_fields``):
        the recording holds the head the client got, credentials redacted."""
        if key is not None:
            hit = self._out_heads.get(key)
            if hit is not None:
                return hit
        line = status_line(status, reason)
        data = serialize_head(line, headers)
        out = (data, self._redact(line, headers, mask=False))
        if key is not None:
            if len(self._out_heads) >= self._CACHE_MAX:
                self._out_heads.clear()
            self._out_heads[key] = out
        return out

    # -- recording helpers -------------------------------------------------
    # Heads and command texts repeat across requests (same client, same
    # headers); their masked forms are memoized in small bounded maps.
    _CACHE_MAX = 2048

    def _cached(self, cache: dict[Any, Any], key: Any, make: Any) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        value = make()
        if len(cache) >= self._CACHE_MAX:
            cache.clear()
        cache[key] = value
        return value

    def mask_text(self, text: str) -> str:
        if not self.masking:
            return text
        return str(self._cached(self._text_cache, text, lambda: self.masker.mask_text(text)[0]))

    def mask_bytes(self, data: bytes) -> tuple[bytes, dict[str, int]]:
        if not self.masking or not data:
            return data, {}
        out, counts = self.masker.mask_bytes(data)
        return bytes(out), dict(counts)

    def redacted_head(self, raw: bytes, first_line: str, headers: Headers) -> bytes:
        """The head as recorded: credentials redacted by header name, the rest
        masked. ``raw`` (the head's bytes on the wire) is the memo key."""
        return bytes(self._cached(self._head_cache, raw, lambda: self._redact(first_line, headers)))

    def _redact(self, first_line: str, headers: Headers, mask: bool = True) -> bytes:
        """Credentials redacted by header name; the rest content-masked unless
        ``mask`` is false (a response head already masked for the client)."""
        red = Headers()
        for lname, name, value in headers.items:
            if lname in self.sensitive:
                scheme = value.split(" ", 1)[0] if lname.endswith("authorization") else ""
                value = f"{scheme} [REDACTED]".strip() if " " in value and scheme else "[REDACTED]"
            red.items.append((lname, name, value))
        data = serialize_head(first_line, red)
        return self.mask_bytes(data)[0] if mask else data


def expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def ms(started: float) -> float:
    return int((time.perf_counter() - started) * 1_000_000) / 1000
