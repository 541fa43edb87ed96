"""The gateway's configuration: one YAML file, validated in full before
anything starts.

Loading happens in two passes. Pass one validates the common shape with
pydantic. Pass two asks each connection's protocol handler (found through the
``hoopd.protocols`` entry points) to validate its own ``upstream`` and
``options`` sections and any protocol-specific constraint. Every problem of
both passes is collected and reported with its key path, so an operator fixes
a broken file in one round instead of one error at a time.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hoopd.configtypes import Address, ConfigPath, Duration, Secret, SecretRef, Size
from hoopd.model import Verdict

if TYPE_CHECKING:
    from hoopd.registry import Registry


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RiskLevel(enum.IntEnum):
    """Coarse risk levels; scores map onto them (see hoopd.policy)."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


RiskLevelName = Literal["none", "low", "medium", "high", "critical", "never"]


class TlsFiles(Strict):
    cert: ConfigPath
    key: ConfigPath


class GatewayTls(Strict):
    """Client-facing TLS. Without cert/key, a private CA and a server
    certificate are generated into ``data_dir/tls`` on first start."""

    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    hostnames: tuple[str, ...] = ()
    """Extra DNS names or IPs for the generated certificate."""

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> GatewayTls:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        return self


class WebhookSection(Strict):
    """Where new and decided approvals and grants are announced."""

    url: str = Field(pattern=r"^https?://")
    format: Literal["json", "slack"] = "json"
    retries: int = Field(default=5, ge=0, le=20)
    backoff: Duration = 1.0
    secret: SecretRef | None = None
    """Signs each delivery (HMAC-SHA256 header) so the receiver can trust it."""
    public_url: str = ""
    """How reviewers reach this gateway's admin API, quoted in messages."""


class GatewaySection(Strict):
    id: str = Field(default_factory=socket.gethostname)
    """Names this gateway instance in recordings and approvals."""
    admin_listen: Address | None = None
    data_dir: ConfigPath = Path("var")
    tls: GatewayTls = GatewayTls()
    state: str = "sqlite"
    """``sqlite`` (in data_dir), ``sqlite:///path`` or ``postgresql://...``."""
    drain_timeout: Duration = 30.0
    """How long SIGTERM waits for live sessions before ending them."""
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    masking_key: SecretRef | None = None
    """Key for deterministic masking tokens; generated in data_dir if absent."""
    webhook: WebhookSection | None = None

    @field_validator("masking_key")
    @classmethod
    def _masking_key_length(cls, key: Secret | None) -> Secret | None:
        if key is not None and len(key.reveal().encode()) < 16:
            raise ValueError("must be at least 16 bytes")
        return key

    @model_validator(mode="after")
    def _state_scheme(self) -> GatewaySection:
        ok = self.state == "sqlite" or self.state.startswith(
            ("sqlite:///", "postgresql://", "postgres://")
        )
        if not ok:
            raise ValueError("state must be sqlite, sqlite:///PATH or postgresql://...")
        return self


class RecordingSection(Strict):
    dir: ConfigPath | None = None
    """Defaults to ``data_dir/recordings``."""
    rotate_bytes: Size = 64 * 1024 * 1024
    rotate_seconds: Duration = 3600.0
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval: Duration = 1.0
    checkpoint_frames: int = Field(default=1000, ge=1)
    checkpoint_seconds: Duration = 10.0
    queue_max_frames: int = Field(default=10000, ge=16)
    queue_max_bytes: Size = Field(default=16 * 1024 * 1024, ge=1024 * 1024)
    signing_key: ConfigPath | None = None
    """ed25519 private key (PEM); generated on first start when absent.
    Defaults to ``data_dir/recording-signing-key.pem``."""
    on_failure: Literal["fail_closed"] = "fail_closed"
    """Only fail_closed is offered: a gateway that cannot record refuses to
    carry traffic."""


class RiskRule(Strict):
    """A per-connection rule. ``match`` names a category the protocol's risk
    scorer emits (e.g. ``ddl``, ``drop_database``, ``rm_rf``); ``pattern`` is
    an RE2 pattern over the command text."""

    id: str | None = None
    match: str | None = None
    pattern: str | None = None
    action: Verdict

    @model_validator(mode="after")
    def _one_selector(self) -> RiskRule:
        if (self.match is None) == (self.pattern is None):
            raise ValueError("give exactly one of match or pattern")
        return self

    @property
    def rule_id(self) -> str:
        return self.id or self.match or f"pattern:{self.pattern}"


class RiskSection(Strict):
    review_at: RiskLevelName = "high"
    deny_at: RiskLevelName = "never"
    mask_at: RiskLevelName = "never"
    reviewers: tuple[str, ...] = ()
    """Groups whose members may approve this connection's held commands."""
    rules: tuple[RiskRule, ...] = ()
    unparseable: Literal["allow", "review", "deny"] = "review"


class ApprovalSection(Strict):
    timeout: Duration = 300.0
    mode: Literal["hold", "retry"] = "hold"
    """hold: the request waits. retry: it is refused naming the approval id
    and succeeds once when retried after approval (HTTP, Kubernetes)."""


class ListenerTls(Strict):
    enabled: bool = True
    client_ca: ConfigPath | None = None
    """CA bundle for client certificates. When set, clients must present a
    certificate it signed, and are identified by it."""


AuthMode = Literal["default", "none", "tls-client-cert"]


class ConnectionConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    protocol: str
    listen: Address
    upstream: Any = None
    """Validated by the protocol handler's own model in pass two."""
    auth: AuthMode = "default"
    tls: ListenerTls | None = None
    allow_groups: tuple[str, ...] = ()
    break_glass_group: str | None = None
    masking: Any = None
    """Validated by the masking engine's model; ``None`` means defaults."""
    risk: RiskSection | None = None
    approval: ApprovalSection = ApprovalSection()
    options: Mapping[str, Any] = Field(default_factory=dict)

    @property
    def masking_requested(self) -> bool:
        return self.masking is not None

    @property
    def commands_requested(self) -> bool:
        return self.risk is not None


class GatewayConfig(Strict):
    gateway: GatewaySection = GatewaySection()
    identity: Any = None
    recording: RecordingSection = RecordingSection()
    connections: tuple[ConnectionConfig, ...] = ()

    source: Path | None = None
    """The file this config came from (for reload)."""

    @property
    def recording_dir(self) -> Path:
        return self.recording.dir or self.gateway.data_dir / "recordings"

    @property
    def recording_key_path(self) -> Path:
        return self.recording.signing_key or self.gateway.data_dir / "recording-signing-key.pem"

    def connection(self, name: str) -> ConnectionConfig:
        for conn in self.connections:
            if conn.name == name:
                return conn
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_loc(loc: Iterable[str | int]) -> str:
    """('connections', 2, 'upstream', 'port') -> 'connections[2].upstream.port'"""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def problems_from_validation(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        # pydantic adds the name of a wrapping validator to the location of
        # errors raised inside it ("function-after[...]"); drop those parts.
        loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
        msg = err["msg"]
        for noise in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(noise)
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        problems.append(Problem(format_loc((*prefix, *loc)), msg))
    return problems


def parse_config(
    raw: Any, registry: Registry, *, base_dir: Path | None = None, source: Path | None = None
) -> GatewayConfig:
    """Validate a decoded YAML document. Raises ConfigError with every problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the config must be a mapping at the top level")])
    context = {"base_dir": base_dir}
    try:
        config = GatewayConfig.model_validate({**raw, "source": source}, context=context)
    except ValidationError as exc:
        problems = problems_from_validation(exc)
        # Still run the protocol checks on the connections that did parse, so
        # one bad gateway key does not hide ten bad connection keys.
        problems += _check_connections_raw(raw.get("connections"), registry, context)
        raise ConfigError(_dedupe(problems)) from None
    problems, connections = _check_connections(config.connections, registry, context)
    identity_problems, identity = _validate_identity(config.identity, context)
    problems += identity_problems
    if problems:
        raise ConfigError(_dedupe(problems))
    return config.model_copy(update={"connections": tuple(connections), "identity": identity})


def load_config(path: Path, registry: Registry) -> GatewayConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([Problem("", f"cannot read {path}: {exc.strerror}")]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([Problem("", f"{path}: invalid YAML: {exc}")]) from None
    return parse_config(raw, registry, base_dir=path.resolve().parent, source=path.resolve())


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[Problem, None] = {}
    for p in problems:
        seen.setdefault(p)
    return list(seen)


def _check_connections_raw(raw: Any, registry: Registry, context: dict[str, Any]) -> list[Problem]:
    """Protocol-level checks on connections when the whole file did not
    validate: still report unknown protocols and bad upstream/options keys."""
    if not isinstance(raw, list):
        return []
    problems: list[Problem] = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            continue
        try:
            conn = ConnectionConfig.model_validate(item, context=context)
        except ValidationError:
            problems += _check_raw_sections(index, item, registry, context)
        else:
            problems += _check_one_connection(index, conn, registry, context)[0]
    return problems


def _check_raw_sections(
    index: int, item: dict[str, Any], registry: Registry, context: dict[str, Any]
) -> list[Problem]:
    prefix: tuple[str | int, ...] = ("connections", index)
    protocol = item.get("protocol")
    if not isinstance(protocol, str):
        return []
    try:
        handler = registry.get(protocol)
    except KeyError:
        return [_unknown_protocol(prefix, protocol, registry)]
    problems: list[Problem] = []
    for key, model in (("upstream", handler.upstream_model), ("options", handler.options_model)):
        try:
            model.model_validate(item.get(key) or {}, context=context)
        except ValidationError as exc:
            problems += problems_from_validation(exc, (*prefix, key))
    return problems


def _unknown_protocol(prefix: tuple[str | int, ...], protocol: str, registry: Registry) -> Problem:
    available = ", ".join(registry.names()) or "none installed"
    return Problem(
        format_loc((*prefix, "protocol")),
        f"unknown protocol {protocol!r}; available: {available}",
    )


def _check_connections(
    connections: tuple[ConnectionConfig, ...], registry: Registry, context: dict[str, Any]
) -> tuple[list[Problem], list[ConnectionConfig]]:
    problems: list[Problem] = []
    checked: list[ConnectionConfig] = []
    names: dict[str, int] = {}
    listens: dict[tuple[str, int], int] = {}
    sound: list[int] = []  # connections that passed their own checks
    for index, conn in enumerate(connections):
        if conn.name in names:
            problems.append(
                Problem(
                    f"connections[{index}].name",
                    f"duplicate name {conn.name!r} (also connections[{names[conn.name]}])",
                )
            )
        names.setdefault(conn.name, index)
        key = (conn.listen.host, conn.listen.port)
        if key in listens:
            problems.append(
                Problem(
                    f"connections[{index}].listen",
                    f"{conn.listen} is already used by connections[{listens[key]}]",
                )
            )
        listens.setdefault(key, index)
        found, conn = _check_one_connection(index, conn, registry, context)
        problems += found
        checked.append(conn)
        if not found:
            sound.append(index)
    for index in sound:
        conn = checked[index]
        problems += [
            Problem(format_loc(("connections", index, *loc)), message)
            for loc, message in registry.get(conn.protocol).check_against(conn, checked)
        ]
    return problems, checked


def _check_one_connection(
    index: int, conn: ConnectionConfig, registry: Registry, context: dict[str, Any]
) -> tuple[list[Problem], ConnectionConfig]:
    prefix: tuple[str | int, ...] = ("connections", index)
    try:
        handler = registry.get(conn.protocol)
    except KeyError:
        return [_unknown_protocol(prefix, conn.protocol, registry)], conn
    problems: list[Problem] = []
    update: dict[str, Any] = {}
    for key, model in (("upstream", handler.upstream_model), ("options", handler.options_model)):
        value = getattr(conn, key)
        if key == "options":
            value = dict(value)
        try:
            update[key] = model.model_validate(value if value is not None else {}, context=context)
        except ValidationError as exc:
            problems += problems_from_validation(exc, (*prefix, key))
    if conn.masking is not None and handler.supports_masking:
        masking_problems, masking = _validate_masking(conn.masking, (*prefix, "masking"), context)
        problems += masking_problems
        if masking is not None:
            update["masking"] = masking
    if not problems:
        conn = conn.model_copy(update=update)
        problems += [
            Problem(format_loc((*prefix, *loc)), message)
            for loc, message in handler.check_connection(conn)
        ]
    return problems, conn


def _validate_masking(
    raw: Any, prefix: tuple[str | int, ...], context: dict[str, Any]
) -> tuple[list[Problem], Any]:
    try:
        from masking.config import MaskingConfig
    except ImportError:  # pragma: no cover - the masking package ships with hoopd
        return [Problem(format_loc(prefix), "masking engine is not installed")], None
    try:
        return [], MaskingConfig.model_validate(raw, context=context)
    except ValidationError as exc:
        return problems_from_validation(exc, prefix), None


def _validate_identity(raw: Any, context: dict[str, Any]) -> tuple[list[Problem], Any]:
    from hoopd.identity.config import IdentityConfig

    try:
        return [], IdentityConfig.model_validate(raw or {}, context=context)
    except ValidationError as exc:
        return problems_from_validation(exc, ("identity",)), None
