"""Logging: plain text for people, JSON lines for log pipelines, and the
session id on every line that concerns a session."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``session_id`` to each record (a field in JSON, a prefix in text)."""

    def __init__(self, logger: logging.Logger, session_id: str) -> None:
        super().__init__(logger, {"session_id": session_id})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("session_id", self.extra["session_id"] if self.extra else "")
        kwargs["extra"] = extra
        return msg, kwargs


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        sid = getattr(record, "session_id", "")
        prefix = f"[sid={sid}] " if sid else ""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        line = f"{ts} {record.levelname:<7} {record.name}: {prefix}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        sid = getattr(record, "session_id", "")
        if sid:
            doc["session_id"] = sid
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"), default=str)


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # asyncssh logs every packet-level event at INFO; keep it to warnings.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
