"""What every client connection of one configured http connection shares:
config, credentials to inject, the risk scorer, the masker and memoized
masked heads; HTTP constants and small helpers."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .approval import APPROVAL_HEADER
from .config import HttpOptions, HttpUpstream
from .h1 import Headers, response_head_bytes, serialize_head
from .risk import HttpRiskScorer

if TYPE_CHECKING:
    from hoopd.config import ConnectionConfig

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
SENSITIVE = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
)


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
        self.request_drop = REQUEST_DROP | self.inject_drop | (
            FORWARDED if self.options.forwarded_headers else frozenset()
        )
        self._text_cache: dict[str, str] = {}
        self._head_cache: dict[bytes, bytes] = {}

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

    def _redact(self, first_line: str, headers: Headers) -> bytes:
        red = Headers()
        for lname, name, value in headers.items:
            if lname in self.sensitive:
                scheme = value.split(" ", 1)[0] if lname.endswith("authorization") else ""
                value = f"{scheme} [REDACTED]".strip() if " " in value and scheme else "[REDACTED]"
            red.items.append((lname, name, value))
        return self.mask_bytes(serialize_head(first_line, red))[0]


def expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(True)


def ms(started: float) -> float:
    return int((time.perf_counter() - started) * 1_000_000) / 1000
