"""Config models for ``protocol: http`` connections (``upstream:`` and ``options:``)."""

from __future__ import annotations

import base64
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hoopd.configtypes import ConfigPath, Duration, SecretRef, Size
from hoopd.model import Verdict


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BasicAuth(_Strict):
    user: str = Field(min_length=1)
    password: SecretRef

    @field_validator("user")
    @classmethod
    def _no_colon(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("a basic-auth user name cannot contain ':'")
        return value

    def injected_forms(self) -> list[str]:
        """The ``Authorization: Basic`` credential as sent (``hoopd.injected``)."""
        pair = f"{self.user}:{self.password.reveal()}".encode()
        return [base64.b64encode(pair).decode()]


_HEADER_NAME = r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$"


class UpstreamAuth(_Strict):
    """The credential the gateway adds to every upstream request. The client's
    own ``Authorization`` header never reaches the upstream."""

    bearer: SecretRef | None = None
    basic: BasicAuth | None = None
    headers: dict[str, SecretRef] = Field(default_factory=dict)
    query: dict[str, SecretRef] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, SecretRef]) -> dict[str, SecretRef]:
        import re

        for name in value:
            if not re.match(_HEADER_NAME, name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
                raise ValueError(f"header {name!r} cannot carry a credential")
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> UpstreamAuth:
        if self.bearer is not None and self.basic is not None:
            raise ValueError("give bearer or basic, not both")
        if (self.bearer is not None or self.basic is not None) and any(
            n.lower() == "authorization" for n in self.headers
        ):
            raise ValueError("Authorization is already set by bearer/basic")
        return self


class HttpUpstream(_Strict):
    url: str
    """Base URL: ``http(s)://host[:port][/prefix]``. Request paths are appended to the prefix."""
    ca: ConfigPath | None = None
    """CA bundle to verify the upstream's certificate (default: the system store)."""
    verify: bool = True
    """Verify the upstream's certificate and host name. Only turn off for tests."""
    auth: UpstreamAuth | None = None
    connect_timeout: Duration = 10.0
    response_timeout: Duration = 300.0
    """Longest wait for a response head after the request was sent."""
    host_header: str | None = None
    """Host header sent upstream (default: the URL's host[:port])."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError("must name a host")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials; use upstream.auth")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
        return value

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def prefix(self) -> str:
        return urlsplit(self.url).path.rstrip("/")

    @property
    def authority(self) -> str:
        if self.host_header:
            return self.host_header
        parts = urlsplit(self.url)
        default = 443 if parts.scheme == "https" else 80
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return host if self.port == default else f"{host}:{self.port}"


Method = str


class PathRule(_Strict):
    """``{method: DELETE, path: /api/**, action: review}``. ``method`` is one
    method, a list, or ``*``; ``path`` is a glob over the request path where
    ``*`` matches within one segment and ``**`` across segments."""

    id: str | None = None
    method: Method | tuple[Method, ...] = "*"
    path: str = "/**"
    action: Verdict

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        values = (value,) if isinstance(value, str) else value
        for m in values:
            if m != "*" and not m.isalpha():
                raise ValueError(f"{m!r} is not an HTTP method")
        return tuple(m.upper() for m in values) if isinstance(value, tuple) else value.upper()

    @property
    def methods(self) -> frozenset[str]:
        values = (self.method,) if isinstance(self.method, str) else self.method
        return frozenset(values)

    @property
    def rule_id(self) -> str:
        if self.id:
            return self.id
        methods = ",".join(sorted(self.methods))
        return f"http:{methods} {self.path}"


class HttpOptions(_Strict):
    rules: tuple[PathRule, ...] = ()
    unmaskable: Literal["pass", "refuse"] = "pass"
    """Response bodies masking cannot read (binary types, unknown encodings,
    JSON over ``mask_json_max_bytes`` when key/path rules exist) and binary
    WebSocket messages: pass them unmasked, or refuse them (502; a WebSocket
    tunnel is closed with 1003)."""
    record_body_bytes: Size = 64 * 1024
    """Request and response body bytes recorded per request (masked); the rest is counted."""
    inspect_body_bytes: Size = 64 * 1024
    """Request bodies up to this size are read before the decision: hashed
    (binding approvals to the exact body) and, for JSON, summarized."""
    mask_json_max_bytes: Size = 8 * 1024 * 1024
    """JSON responses are buffered up to this size to mask by key and path."""
    max_header_bytes: Size = 64 * 1024
    idle_timeout: Duration = 120.0
    """Close a keep-alive client connection idle for this long."""
    header_timeout: Duration = Field(default=60.0, gt=0)
    """Seconds a client has to send a complete request head, like nginx's
    ``client_header_timeout``: on a new connection from connecting (the TLS
    handshake has as long), on a kept-alive one from the first byte of the
    next request (until then ``idle_timeout`` applies). Then ``408 Request
    Timeout`` if part of a head came, and the connection is closed."""
    body_timeout: Duration = Field(default=60.0, gt=0)
    """Longest pause between two reads of a request body, like nginx's
    ``client_body_timeout``. Then ``408 Request Timeout`` (unless the
    response has begun), the connection is closed and the upstream request
    is abandoned."""
    forwarded_headers: bool = True
    """Send X-Forwarded-For / -Proto / -Host upstream."""
