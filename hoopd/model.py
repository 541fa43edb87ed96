"""The common command model.

Every protocol handler turns its traffic into these few typed events, and the
recorder writes exactly these types (see docs/recording-format.md). They are
frozen and free of I/O so that they can be built anywhere, compared in tests,
and round-tripped through a recording.

Each event knows how to become a plain msgpack-friendly mapping
(``to_record``) and back (``from_record``). Keys in that mapping are part of
the recording format: add keys freely, never change the meaning of one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar

JSONScalar = str | int | float | bool | None


class CommandKind(enum.StrEnum):
    SQL = "sql"
    EXEC = "exec"
    SHELL_LINE = "shell-line"
    K8S = "k8s"
    HTTP = "http"


class Verdict(enum.StrEnum):
    """What the gateway does with a command (or a whole session)."""

    ALLOW = "allow"
    MASK = "mask"
    REVIEW = "review"
    DENY = "deny"


class Stream(enum.StrEnum):
    """Which way data flowed and what it was."""

    STDIN = "stdin"  # client -> upstream (raw input, keystrokes)
    STDOUT = "stdout"  # upstream -> client
    STDERR = "stderr"
    ROWS = "rows"
    BODY = "body"


class AuthMethod(enum.StrEnum):
    NONE = "none"
    TLS_CLIENT_CERT = "tls-client-cert"
    OIDC = "oidc"
    GATEWAY_TOKEN = "gateway-token"
    API_KEY = "api-key"
    SSH_KEY = "ssh-key"
    SSH_CERT = "ssh-cert"


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is on the other end, as proven by a credential."""

    subject: str
    groups: frozenset[str] = frozenset()
    method: AuthMethod = AuthMethod.NONE
    issuer: str = ""
    email: str = ""
    expires_at: float | None = None
    """Unix time at which the credential stops being valid (None: never)."""
    credential_id: str = ""
    """Which credential proved it, where it has an id that can be revoked (a
    gateway token's jti); not a secret."""
    issued_at: float | None = None
    """When that credential was issued (gateway tokens), for revocations of
    every token of a subject issued up to a moment."""

    ANONYMOUS: ClassVar[Identity]

    @property
    def anonymous(self) -> bool:
        return self.method is AuthMethod.NONE

    def to_record(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "groups": sorted(self.groups),
            "method": self.method._value_,
            "issuer": self.issuer,
            "email": self.email,
            "expires_at": self.expires_at,
            **({"credential_id": self.credential_id} if self.credential_id else {}),
            **({"issued_at": self.issued_at} if self.issued_at is not None else {}),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Identity:
        return cls(
            subject=rec["subject"],
            groups=frozenset(rec.get("groups", ())),
            method=AuthMethod(rec.get("method", "none")),
            issuer=rec.get("issuer", ""),
            email=rec.get("email", ""),
            expires_at=rec.get("expires_at"),
            credential_id=rec.get("credential_id", ""),
            issued_at=rec.get("issued_at"),
        )


Identity.ANONYMOUS = Identity(subject="anonymous", method=AuthMethod.NONE)


class Event:
    """Base of everything a session records. Subclasses set ``type_name``."""

    __slots__ = ()
    type_name: ClassVar[str]

    def to_record(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Event:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SessionStart(Event):
    type_name: ClassVar[str] = "session_start"
    session_id: str
    connection: str
    protocol: str
    identity: Identity
    client_addr: str
    gateway: str = ""
    """Which gateway instance (host name or configured id) carried the session."""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "connection": self.connection,
            "protocol": self.protocol,
            "identity": self.identity.to_record(),
            "client_addr": self.client_addr,
            "gateway": self.gateway,
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> SessionStart:
        return cls(
            session_id=rec["session_id"],
            connection=rec["connection"],
            protocol=rec["protocol"],
            identity=Identity.from_record(rec["identity"]),
            client_addr=rec["client_addr"],
            gateway=rec.get("gateway", ""),
            attrs=_frozen(rec.get("attrs")),
        )


@dataclass(frozen=True, slots=True)
class SessionEnd(Event):
    type_name: ClassVar[str] = "session_end"
    reason: str
    """Short machine-readable cause: client_closed, upstream_closed, denied, error,
    shutdown, credential_expired, credential_revoked, recorder_failed, ..."""
    error: str = ""
    bytes_in: int = 0
    bytes_out: int = 0

    def to_record(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "error": self.error,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> SessionEnd:
        return cls(
            reason=rec["reason"],
            error=rec.get("error", ""),
            bytes_in=rec.get("bytes_in", 0),
            bytes_out=rec.get("bytes_out", 0),
        )


@dataclass(frozen=True, slots=True)
class Command(Event):
    """One user operation: a SQL statement, an exec, a kubectl request..."""

    type_name: ClassVar[str] = "command"
    seq: int
    """Per-session command number, starting at 1."""
    kind: CommandKind
    text: str
    """Normalized readable form (the SQL, the command line, `GET /api/v1/pods`)."""
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind._value_, "text": self.text, "attrs": dict(self.attrs)}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Command:
        return cls(
            seq=rec["seq"],
            kind=CommandKind(rec["kind"]),
            text=rec["text"],
            attrs=_frozen(rec.get("attrs")),
        )


@dataclass(frozen=True, slots=True)
class Decision(Event):
    """What policy decided about a command (command_seq > 0) or the session (0)."""

    type_name: ClassVar[str] = "decision"
    command_seq: int
    verdict: Verdict
    risk: int = 0
    """0 (none) .. 100 (critical)."""
    reasons: tuple[str, ...] = ()
    rule_ids: tuple[str, ...] = ()
    approval_id: str = ""
    approver: str = ""
    break_glass: bool = False

    def to_record(self) -> dict[str, Any]:
        return {
            "command_seq": self.command_seq,
            "verdict": self.verdict._value_,
            "risk": self.risk,
            "reasons": list(self.reasons),
            "rule_ids": list(self.rule_ids),
            "approval_id": self.approval_id,
            "approver": self.approver,
            "break_glass": self.break_glass,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Decision:
        return cls(
            command_seq=rec["command_seq"],
            verdict=Verdict(rec["verdict"]),
            risk=rec.get("risk", 0),
            reasons=tuple(rec.get("reasons", ())),
            rule_ids=tuple(rec.get("rule_ids", ())),
            approval_id=rec.get("approval_id", ""),
            approver=rec.get("approver", ""),
            break_glass=rec.get("break_glass", False),
        )


@dataclass(frozen=True, slots=True)
class ApprovalEvent(Event):
    """An approval was requested for a command, or its state changed."""

    type_name: ClassVar[str] = "approval"
    approval_id: str
    command_seq: int
    state: str
    """pending, approved, denied, expired, used."""
    command_hash: str = ""
    reviewer: str = ""
    comment: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "command_seq": self.command_seq,
            "state": self.state,
            "command_hash": self.command_hash,
            "reviewer": self.reviewer,
            "comment": self.comment,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ApprovalEvent:
        return cls(
            approval_id=rec["approval_id"],
            command_seq=rec["command_seq"],
            state=rec["state"],
            command_hash=rec.get("command_hash", ""),
            reviewer=rec.get("reviewer", ""),
            comment=rec.get("comment", ""),
        )


@dataclass(frozen=True, slots=True)
class Output(Event):
    """Data that crossed the gateway, after masking. ``masked`` counts values
    replaced, by rule id."""

    type_name: ClassVar[str] = "output"
    stream: Stream
    data: bytes
    command_seq: int = 0
    masked: Mapping[str, int] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {"stream": self.stream._value_, "data": self.data}
        if self.command_seq:
            rec["command_seq"] = self.command_seq
        if self.masked:
            rec["masked"] = dict(self.masked)
        return rec

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Output:
        return cls(
            stream=Stream(rec["stream"]),
            data=bytes(rec["data"]),
            command_seq=rec.get("command_seq", 0),
            masked=_frozen(rec.get("masked")),
        )


@dataclass(frozen=True, slots=True)
class Resize(Event):
    """Terminal window size changed (SSH PTY, kubectl exec -t)."""

    type_name: ClassVar[str] = "resize"
    cols: int
    rows: int

    def to_record(self) -> dict[str, Any]:
        return {"cols": self.cols, "rows": self.rows}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Resize:
        return cls(cols=rec["cols"], rows=rec["rows"])


@dataclass(frozen=True, slots=True)
class CommandResult(Event):
    """How a command ended: a CommandComplete tag, an exit status, an HTTP status."""

    type_name: ClassVar[str] = "result"
    command_seq: int
    status: str
    duration_ms: float = 0.0
    rows: int | None = None
    error: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "command_seq": self.command_seq,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "rows": self.rows,
            "error": self.error,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> CommandResult:
        return cls(
            command_seq=rec["command_seq"],
            status=rec["status"],
            duration_ms=rec.get("duration_ms", 0.0),
            rows=rec.get("rows"),
            error=rec.get("error", ""),
        )


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """Something went wrong in the session that the client was told about."""

    type_name: ClassVar[str] = "error"
    message: str
    code: str = ""

    def to_record(self) -> dict[str, Any]:
        return {"message": self.message, "code": self.code}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> ErrorEvent:
        return cls(message=rec["message"], code=rec.get("code", ""))


def _slot_init(cls: type) -> None:
    """Give a frozen, slotted dataclass an ``__init__`` that stores each field
    through its slot descriptor: same parameters, defaults and result as the
    generated one, which calls ``object.__setattr__`` by name per field and
    takes about twice as long. Events are built several times per statement
    on the data paths (tests/core/test_model.py checks the equivalence)."""
    ns: dict[str, Any] = {"_MISSING": MISSING}
    params: list[str] = []
    body: list[str] = []
    for f in fields(cls):
        name = f.name
        assert f.init and not f.kw_only, f"{cls.__name__}.{name}"
        ns[f"_set_{name}"] = cls.__dict__[name].__set__
        value = name
        if f.default is not MISSING:
            ns[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
        elif f.default_factory is not MISSING:
            ns[f"_factory_{name}"] = f.default_factory
            params.append(f"{name}=_MISSING")
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
        else:
            params.append(name)
        body.append(f"    _set_{name}(self, {value})")
    assert not hasattr(cls, "__post_init__"), cls.__name__
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body), ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type_name: cls
    for cls in (
        SessionStart,
        SessionEnd,
        Command,
        Decision,
        ApprovalEvent,
        Output,
        Resize,
        CommandResult,
        ErrorEvent,
    )
}


for _cls in EVENT_TYPES.values():
    _slot_init(_cls)


def event_from_record(type_name: str, rec: Mapping[str, Any]) -> Event:
    """Rebuild an event from its recorded mapping. Unknown types raise KeyError."""
    return EVENT_TYPES[type_name].from_record(rec)
