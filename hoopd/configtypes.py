"""Small value types shared by config sections: addresses, sizes, durations,
secret references. Each parser raises ValueError with a message that reads
well after a key path (``connections[2].listen: must be host:port``)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, ValidationInfo


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def check_port(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be 1..65535")
    try:
        port = int(value)
    except ValueError:
        raise ValueError("must be 1..65535") from None
    if not 1 <= port <= 65535:
        raise ValueError("must be 1..65535")
    return port


def parse_host_port(value: object) -> HostPort:
    if isinstance(value, HostPort):
        return value
    if not isinstance(value, str):
        raise ValueError("must be host:port, e.g. 127.0.0.1:15432")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", value.strip())
    if not m:
        raise ValueError("must be host:port, e.g. 127.0.0.1:15432 or [::1]:15432")
    host = m.group(1) or m.group(3)
    port = check_port(m.group(2) or m.group(4))
    return HostPort(host, port)


Port = Annotated[int, BeforeValidator(check_port)]
Address = Annotated[HostPort, PlainValidator(parse_host_port), PlainSerializer(str)]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_size(value: object) -> int:
    """``64MiB``, ``10 MB``, ``4096`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 64MiB")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ValueError("must be a size such as 64MiB, 10MB or 4096")
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise ValueError("must be a size such as 64MiB")
    if size <= 0:
        raise ValueError("must be greater than 0")
    return size


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``90s``, ``15m``, ``1h``, ``250ms``, ``3600`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 15m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*", value)
        if not m:
            raise ValueError("must be a duration such as 30s, 15m or 1h")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 15m or 1h")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]


class Secret:
    """A resolved secret. Its repr and str never show the value, so a config
    object can be logged or printed safely."""

    __slots__ = ("_value", "reference")

    def __init__(self, value: str, reference: str) -> None:
        self._value = value
        self.reference = reference

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def resolve_secret(value: object, base_dir: Path | None = None) -> Secret:
    """Resolve ``env:NAME`` or ``file:PATH``. Literal secrets are refused so a
    config file can be shared and committed without leaking credentials."""
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a secret reference: env:NAME or file:PATH")
    if value.startswith("env:"):
        name = value[4:]
        if not name:
            raise ValueError("env: reference needs a variable name")
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return Secret(os.environ[name], value)
    if value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        return Secret(text.rstrip("\r\n"), value)
    raise ValueError("must be a secret reference (env:NAME or file:PATH), not a literal value")


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context
    if isinstance(ctx, dict) and isinstance(ctx.get("base_dir"), Path):
        return ctx["base_dir"]
    return None


def _secret_validator(value: Any, info: ValidationInfo) -> Secret:
    return resolve_secret(value, _base_dir(info))


def _path_validator(value: Any, info: ValidationInfo) -> Path:
    """Relative paths in a config file are relative to that file, not to the
    working directory the daemon happens to start in."""
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError("must be a file system path")
    path = Path(value).expanduser()
    base = _base_dir(info)
    if base is not None and not path.is_absolute():
        path = base / path
    return path


SecretRef = Annotated[
    Secret, PlainValidator(_secret_validator), PlainSerializer(lambda s: s.reference)
]
ConfigPath = Annotated[Path, BeforeValidator(_path_validator), PlainSerializer(str)]
