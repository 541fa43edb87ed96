"""kill -9 while recording: complete frames survive, nothing looks tampered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from hoopd.model import Output
from recorder.reader import SessionReader
from recorder.verify import Status, verify_session

from .helpers import KEY

ROOT = Path(__file__).resolve().parents[2]


def test_sigkill_leaves_incomplete_or_torn_recording(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder.crash_writer", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    reported = 0
    try:
        while reported < 3000:  # frames the child's writer thread has written
            line = child.stdout.readline()
            assert line, "child exited early"
            reported = int(line)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    sdir = tmp_path / "crash"
    result = verify_session(sdir, KEY.public_key())
    assert result.status in (Status.INCOMPLETE, Status.TORN_TAIL), result.summary()
    assert result.problem is None
    assert result.files > 1  # rotated at least once before the kill
    reader = SessionReader(sdir)
    events = list(reader.events())
    assert result.frames >= reported
    # every complete frame reads back, in order, with the expected content
    assert [r.seq for r in events] == list(range(1, len(events) + 1))
    for r in events:
        assert isinstance(r.event, Output)
        assert r.event.data.startswith(f"{r.seq}:".encode())
    assert all("torn tail" in p for p in reader.problems)
