"""The ``upstream:`` and ``options:`` sections of a kubernetes connection."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from hoopd.configtypes import ConfigPath, Duration, SecretRef, Size
from protocols.kubernetes.tokenfile import TokenFile

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeUpstream(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = ""
    """The API server, ``https://host:6443``. Empty with ``in_cluster: true``."""
    ca: ConfigPath | None = None
    """CA bundle for the API server's certificate (default: system CAs)."""
    token: SecretRef | None = None
    """Bearer token the gateway presents (``env:NAME`` / ``file:PATH``), read
    at start and on reload."""
    token_file: ConfigPath | None = None
    """A file holding the bearer token, read again whenever it changes (a
    projected service-account token, a token a sidecar renews). With
    ``in_cluster: true`` and no token, the pod's service-account token file."""
    client_cert: ConfigPath | None = None
    client_key: ConfigPath | None = None
    insecure_skip_verify: bool = False
    in_cluster: bool = False
    """Use the pod's service account (token, CA and KUBERNETES_SERVICE_HOST)."""
    impersonate: bool = False
    """Send Impersonate-User/Impersonate-Group with the caller's identity (the
    gateway's credential needs the ``impersonate`` RBAC verb)."""
    connect_timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL such as https://10.0.0.1:6443")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _credentials(self) -> KubeUpstream:
        if not self.url and not self.in_cluster:
            raise ValueError("url is required (or in_cluster: true)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key must be given together")
        if self.token is not None and self.token_file is not None:
            raise ValueError("token and token_file are exclusive")
        if self.token_file is not None:
            try:
                readable = bool(self.token_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"cannot read token_file {self.token_file}: {exc.strerror}") from None
            if not readable:
                raise ValueError(f"token_file {self.token_file} is empty")
        return self

    _tokens: TokenFile | None = PrivateAttr(default=None)

    def model_post_init(self, context: object, /) -> None:
        path = self.token_file
        if path is None and self.token is None and self.in_cluster:
            path = SA_DIR / "token"
        if path is not None:
            self._tokens = TokenFile(path)

    def base_url(self) -> str:
        if self.url:
            return self.url
        host = os.environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        return f"https://{host}:{port}"

    def bearer(self) -> str | None:
        if self.token is not None:
            return self.token.reveal()
        if self._tokens is not None:
            return self._tokens.current()
        return None

    def injected_forms(self) -> list[str]:
        """The tokens read from a token file (``hoopd.injected``; a configured
        ``token`` is found as a ``SecretRef``): the current one and the last
        few before it, which responses to earlier requests may still echo."""
        if self._tokens is None:
            return []
        self._tokens.current()
        return list(self._tokens.seen)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.base_url().startswith("https://"):
            return False
        ca = self.ca
        if ca is None and self.in_cluster and (SA_DIR / "ca.crt").exists():
            ca = SA_DIR / "ca.crt"
        ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None and self.client_key is not None:
            ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


class KubeOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    protected_namespaces: tuple[str, ...] = ("kube-system",)
    """Scaling a workload to zero here is the ``scale_to_zero`` risk."""
    mask_env: Literal["all", "rules", "none"] = "all"
    """Container ``env[].value`` in responses: mask all, only names matching a
    masking field rule, or none."""
    configmap_keys: tuple[str, ...] = ()
    """Globs of ConfigMap keys whose values are masked (field rules also apply)."""
    max_body: Size = 16 * 1024 * 1024
    """Largest request body read for classification (larger: 413)."""
    max_response_bytes: Size = 64 * 1024 * 1024
    """Largest response body (after decompression) masked as one document;
    larger: refused with 502 and the upstream connection closed. Watches,
    logs and other streamed responses are masked as they come and have no
    such limit."""
    file_transfer: bool = True
    """``kubectl cp`` (an exec of ``tar`` with the archive on stdin/stdout).
    An archive is binary: masking would corrupt it (a replaced value changes
    a file's length inside the tar), so its content passes unmasked and is
    not recorded (the command, exit code and byte counts are). Set false to
    refuse it."""
    exec_flush_ms: int = Field(default=30, ge=0, le=1000)
    """Terminal output (exec/attach with a TTY, ``kubectl exec -t``) held back by
    the stream masker is released after this idle time."""
    exec_notty_flush_ms: int | None = Field(default=None, ge=0, le=10000)
    """The same without a TTY. Unset (default): held output waits for more
    output or the end of the stream, so a secret the target prints with a
    pause in the middle cannot be split past the masker."""
    header_timeout: Duration = Field(default=60.0, gt=0)
    """Seconds a client has to send a complete request head, like nginx's
    ``client_header_timeout``: on a new connection from connecting (the TLS
    handshake has as long), on a kept-alive one from the first byte of the
    next request. Then ``408`` if part of a head came, and the connection is
    closed."""
    body_timeout: Duration = Field(default=60.0, gt=0)
    """Longest pause between two reads of a request body, like nginx's
    ``client_body_timeout``. Then ``408`` and the connection is closed."""
    refused_message_ttl: Duration = 30.0
    """How long a refusal of an exec is remembered to explain kubectl's SPDY retry."""
