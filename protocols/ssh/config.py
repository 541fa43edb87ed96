"""Config models for ``protocol: ssh`` connections (``upstream:`` and ``options:``)."""

from __future__ import annotations

from typing import Any

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hoopd.configtypes import ConfigPath, Duration, Port, SecretRef

_FROZEN = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """A public key as ``ssh-ed25519 AAAA... [comment]`` or a known_hosts line
    (``host[,host] ssh-ed25519 AAAA...``, ``[host]:port ...``)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("must be a public key such as 'ssh-ed25519 AAAA...'")
    words = text.strip().split()
    for i, word in enumerate(words):
        if word.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(words):
            try:
                return asyncssh.import_public_key(f"{word} {words[i + 1]}")
            except (asyncssh.KeyImportError, ValueError):
                break
    raise ValueError(
        "must be a public key ('ssh-ed25519 AAAA...') or a known_hosts line "
        "('host ssh-ed25519 AAAA...')"
    )


class SshUpstream(BaseModel):
    """Where the gateway logs in, and with what."""

    model_config = _FROZEN
    host: str
    port: Port = 22
    user: str
    key: ConfigPath | None = None
    """Private key file (OpenSSH or PEM) the gateway logs in with."""
    password: SecretRef | None = None
    host_key: str
    """The target's host key, pinned: 'ssh-ed25519 AAAA...' or a known_hosts line."""
    connect_timeout: Duration = 10.0

    @field_validator("host_key")
    @classmethod
    def _check_host_key(cls, value: str) -> str:
        parse_public_key(value)
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> SshUpstream:
        if self.key is None and self.password is None:
            raise ValueError("give key (a private key file) or password (env:/file: reference)")
        if self.key is not None:
            try:
                asyncssh.read_private_key(self.key)
            except (OSError, asyncssh.KeyImportError) as exc:
                raise ValueError(f"cannot read upstream key {self.key}: {exc}") from None
        return self

    @property
    def pinned_key(self) -> asyncssh.SSHKey:
        return parse_public_key(self.host_key)


class AuthorizedKey(BaseModel):
    """A public key that identifies a person (or agent) to the gateway."""

    model_config = _FROZEN
    key: str
    subject: str = Field(min_length=1)
    groups: tuple[str, ...] = ()
    email: str = ""

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        parse_public_key(value)
        return value

    @property
    def public_data(self) -> bytes:
        return bytes(parse_public_key(self.key).public_data)


class SshOptions(BaseModel):
    model_config = _FROZEN
    authorized_keys: tuple[AuthorizedKey, ...] = ()
    allow_port_forwarding: bool = False
    """Local forwarding (ssh -L) through the target; every tunnel is recorded."""
    allow_agent_forwarding: bool = False
    """Carry the client's ssh-agent (ssh -A) through to the target, so that
    processes there can use the user's keys (never the gateway's). Off by
    default: requests are refused and the target sees no SSH_AUTH_SOCK."""
    allow_x11_forwarding: bool = False
    """Carry X11 forwarding (ssh -X/-Y) through to the target: programs there
    get a DISPLAY whose connections reach the user's X server, each one
    recorded as an ``x11`` Command with its byte counts (not its content).
    The target sees a cookie of the gateway's, never the user's. Off by
    default: requests are refused and the target sees no DISPLAY."""
    allow_pty: bool = True
    route_by_login: tuple[str, ...] = ()
    """Names of other ssh connections this listener also reaches: a client
    logging in as ``NAME`` (``ssh NAME@gateway``) is carried to connection
    NAME, under all of its settings (credentials, upstream, policy, masking).
    Other login names get this connection's own target. The identity still
    comes from the token, key or certificate, never from the login name."""
    file_transfer: bool = True
    """sftp, scp and exec'd transfer protocols (rsync --server, git-upload-pack...).
    Their content is binary, so it is not masked and not recorded (operations
    and sizes are). Set false to refuse them."""
    output_flush: Duration = 0.05
    """Terminals (PTY): how long output that does not end a line is held for
    masking before it is sent anyway (prompts, progress bars). Echo of typed
    keys is never held."""
    exec_output_flush: Duration | None = None
    """Exec without a terminal (scripts, agents): the same, but by default
    (unset) held output is never released on a timer, only when the line
    goes on, more output arrives or the stream ends, so a secret printed
    slowly cannot escape masking. Set a duration for non-terminal programs
    that show prompts without a newline."""
    cert_max_ttl: Duration = 12 * 3600.0
    login_timeout: Duration = Field(default=60.0, gt=0)
    """Seconds from connecting to being logged in (version exchange, key
    exchange, authentication), like OpenSSH's ``LoginGraceTime``: a client
    that stalls on the way is disconnected (``SSH_MSG_DISCONNECT`` with the
    reason once keys are exchanged). The listener's own value counts, also
    for logins that ``route_by_login`` carries to another connection."""
    shell_lines: bool = True
    """Record (and judge) the line typed before Enter in interactive shells."""

    @field_validator("authorized_keys", "route_by_login", mode="before")
    @classmethod
    def _keys_list(cls, value: Any) -> Any:
        return value or ()
