"""Read the daemon's recordings in-process (the recorder's own reader)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recorder.reader import list_session_dirs
from recorder.replay import read_events


def _events(session_dir: Path) -> list[Any]:
    events, _ = read_events(session_dir)
    return [e.event for e in events]


def sessions_with(recordings: Path, command_text: str, timeout: float = 10.0) -> list[str]:
    """Ids of sessions that recorded a command with this text (waits for the recorder)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for d in list_session_dirs(recordings):
            if any(getattr(e, "type_name", "") == "command" and e.text == command_text for e in _events(d)):
                found.append(d.name)
        if found or time.monotonic() > deadline:
            assert found, f"no session recorded {command_text!r}"
            return found
        time.sleep(0.1)


def session_events(recordings: Path, sid: str, type_name: str, timeout: float = 10.0) -> list[Any]:
    """Events of one type, waiting until the session's end is recorded."""
    deadline = time.monotonic() + timeout
    while True:
        events = _events(recordings / sid)
        ended = any(getattr(e, "type_name", "") == "session_end" for e in events)
        if ended or time.monotonic() > deadline:
            return [e for e in events if getattr(e, "type_name", "") == type_name]
        time.sleep(0.1)
