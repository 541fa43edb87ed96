"""Fail closed on write errors; recover when the disk works; backpressure."""

from __future__ import annotations

import asyncio
import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import recorder.segment as segment
from hoopd.model import Event, Output, Stream
from recorder.reader import SessionReader
from recorder.writer import Recorder, RecorderSettings, RecorderUnavailable

from .helpers import KEY


class Observer:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.recoveries = 0
        self.frames = 0

    def frames_written(self, count: int, nbytes: int) -> None:
        self.frames += count

    def write_failed(self, reason: str) -> None:
        self.failed.append(reason)

    def recovered(self) -> None:
        self.recoveries += 1


def _enospc(fd: int, data: bytes) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


async def _until(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_disk_full_fails_sessions_closed_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    obs = Observer()
    rec = Recorder(RecorderSettings(dir=tmp_path, fsync="never"), KEY, obs)
    rec.start()
    sess = rec.open_session("s1")
    failures: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()
    sess.on_failure = lambda why: failures.append((why, threading.get_ident() == loop_thread))
    sess.write(Output(Stream.STDOUT, b"before"))
    await _until(lambda: obs.frames >= 2)

    monkeypatch.setattr(segment, "_write_all", _enospc)
    sess.write(Output(Stream.STDOUT, b"lost"))
    await _until(lambda: failures)
    assert "No space left" in failures[0][0]
    assert failures[0][1], "on_failure must run on the loop thread"
    assert sess.failed and obs.failed and not rec.healthy
    assert "No space left" in (rec.last_error or "")
    with pytest.raises(RecorderUnavailable):
        sess.write(Output(Stream.STDOUT, b"after"))
    with pytest.raises(RecorderUnavailable):
        rec.open_session("s2")
    assert not rec.check_writable()

    monkeypatch.undo()  # the disk works again
    assert rec.check_writable()
    assert rec.healthy and obs.recoveries == 1
    s2 = rec.open_session("s2")
    s2.write(Output(Stream.STDOUT, b"ok"))
    s2.close()
    rec.close()
    assert (tmp_path / "s2" / "000001.hrec").stat().st_size > 0


async def test_healthy_probes_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    obs = Observer()
    rec = Recorder(RecorderSettings(dir=tmp_path), KEY, obs)
    monkeypatch.setattr(segment, "_write_all", _enospc)
    assert not rec.check_writable() and not rec.healthy
    monkeypatch.undo()
    await _until(lambda: rec.healthy)  # re-probes, rate limited
    assert obs.recoveries == 1
    rec.close()


async def test_open_failure_is_delivered_even_if_callback_set_late(tmp_path: Path) -> None:
    rec = Recorder(RecorderSettings(dir=tmp_path), KEY)
    rec.start()
    sess = rec.open_session("../escape")  # invalid id: fails in the writer thread
    await _until(lambda: sess.failed)
    got: list[str] = []
    sess.on_failure = got.append
    await _until(lambda: got)
    assert "invalid session id" in got[0]
    rec.close()


async def test_backpressure_never_blocks_never_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real = segment._write_all

    def slow_write(fd: int, data: bytes) -> None:
        gate.wait(10)  # the disk stalls until the test opens the gate
        real(fd, data)

    monkeypatch.setattr(segment, "_write_all", slow_write)
    rec = Recorder(RecorderSettings(dir=tmp_path, queue_max_frames=10, fsync="never"), KEY)
    rec.start()
    sess = rec.open_session("bp")
    t0 = time.monotonic()
    for i in range(100):
        sess.write(Output(Stream.STDOUT, str(i).encode()))
    assert time.monotonic() - t0 < 0.5  # write() never waited for the disk
    assert sess.congested
    waiter = asyncio.ensure_future(sess.wait_uncongested())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    gate.set()
    await asyncio.wait_for(waiter, 5)
    sess.close()
    rec.close()
    from recorder.reader import SessionReader

    data = [r.event.data for r in SessionReader(tmp_path / "bp").events()]  # type: ignore[attr-defined]
    assert data == [str(i).encode() for i in range(100)]


async def test_backpressure_counts_payload_bytes_not_only_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few large output frames (SSH and HTTP carry 32 KiB and more each) must
    congest the queue long before the frame limit: a slow disk may not let
    the gateway hold megabytes per frame in memory."""
    gate = threading.Event()
    real = segment._write_all

    def slow_write(fd: int, data: bytes) -> None:
        gate.wait(10)
        real(fd, data)

    monkeypatch.setattr(segment, "_write_all", slow_write)
    settings = RecorderSettings(
        dir=tmp_path, queue_max_frames=10000, queue_max_bytes=1 << 20, fsync="never"
    )
    rec = Recorder(settings, KEY)
    rec.start()
    sess = rec.open_session("big")
    chunk = b"z" * 32768
    sent = 0
    while not sess.congested:
        sess.write(Output(Stream.STDOUT, chunk))
        sent += 1
        assert sent < 100, "40+ frames of 32 KiB did not congest a 1 MiB queue"
    assert sent > 20  # nor did it congest before the byte limit
    waiter = asyncio.ensure_future(sess.wait_uncongested())
    await asyncio.sleep(0.1)
    assert not waiter.done()
    gate.set()
    await asyncio.wait_for(waiter, 5)
    assert not sess.congested
    sess.close()
    rec.close()
    from recorder.reader import SessionReader

    frames = [r.event.data for r in SessionReader(tmp_path / "big").events()]  # type: ignore[attr-defined]
    assert frames == [chunk] * sent


def test_close_writes_close_checkpoint_for_open_sessions(tmp_path: Path) -> None:
    from recorder.verify import Status, verify_session

    rec = Recorder(RecorderSettings(dir=tmp_path), KEY)
    rec.start()
    sess = rec.open_session("left-open")
    sess.write(Output(Stream.STDOUT, b"x"))
    rec.close()
    assert verify_session(tmp_path / "left-open", KEY.public_key()).status is Status.OK
    with pytest.raises(RecorderUnavailable):
        rec.open_session("late")


def _too_big_attr() -> Event:
    from hoopd.model import Command, CommandKind

    return Command(1, CommandKind.SQL, "select 1", {"n": 2**70})


def _stream_not_a_stream() -> Event:
    # a producer bug the encoder meets as an AttributeError, not a TypeError
    return Output("stdout", b"x", 0, {"email": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("make_bad", [_too_big_attr, _stream_not_a_stream])
def test_an_unencodable_event_fails_only_its_session(
    tmp_path: Path, make_bad: Callable[[], Event]
) -> None:
    from hoopd.model import Command, CommandKind

    rec = Recorder(RecorderSettings(dir=tmp_path), KEY)
    rec.start()
    try:
        bad, good = rec.open_session("bad"), rec.open_session("good")
        failures: list[str] = []
        bad.on_failure = failures.append
        bad.write(make_bad())
        good.write(Command(1, CommandKind.SQL, "select 2"))
        deadline = time.monotonic() + 5
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert failures and "cannot encode" in failures[0]
        assert bad.failed and rec.healthy  # the recorder itself is fine
        good.close()
    finally:
        rec.close()
    assert [r.event.text for r in SessionReader(tmp_path / "good").events() if isinstance(r.event, Command)] == ["select 2"]


def test_a_crashed_writer_thread_fails_sessions_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the writer loop must not leave sessions queueing unrecorded
    traffic: they fail, and new sessions are refused."""
    rec = Recorder(RecorderSettings(dir=tmp_path), KEY)
    rec.start()
    try:
        sess = rec.open_session("live")
        failures: list[str] = []
        sess.on_failure = failures.append
        deadline = time.monotonic() + 5
        while sess._chain is None and time.monotonic() < deadline:
            time.sleep(0.01)

        def broken(self: Recorder) -> None:
            raise RuntimeError("bug in the writer loop")

        monkeypatch.setattr(Recorder, "_process_batch", broken)
        sess.write(Output(Stream.STDOUT, b"after the bug"))
        while not failures and time.monotonic() < deadline:
            time.sleep(0.01)
        assert failures and "writer thread stopped" in failures[0]
        assert not rec.healthy
        with pytest.raises(RecorderUnavailable):
            sess.write(Output(Stream.STDOUT, b"more"))
        with pytest.raises(RecorderUnavailable):
            rec.open_session("new")
    finally:
        rec.close(timeout=1)
