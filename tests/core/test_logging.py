"""Structured logs: JSON on request, with the session id on session lines."""

from __future__ import annotations

import io
import json
import logging

from hoopd.log import JsonFormatter, SessionLogger, TextFormatter


def capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.{id(formatter)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_json_lines_carry_the_session_id() -> None:
    logger, stream = capture(JsonFormatter())
    SessionLogger(logger, "01abc").info("session started: %s", "alice")
    logger.info("daemon line")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["session_id"] == "01abc"
    assert first["msg"] == "session started: alice" and first["level"] == "info"
    assert "session_id" not in second


def test_text_lines_prefix_the_session_id() -> None:
    logger, stream = capture(TextFormatter())
    SessionLogger(logger, "01abc").warning("ending session")
    assert "[sid=01abc] ending session" in stream.getvalue()
