"""The recorder: sessions enqueue events, one background thread writes them.

Threading model: ``SessionRecording.write`` (called on the event loop) only
stamps a sequence number and a timestamp and appends to a ``deque`` (append
and popleft are atomic under the GIL). One writer thread drains the deque in
batches, encodes, hashes, signs checkpoints, writes and fsyncs, so no file
I/O ever runs on the loop. The queue is unbounded so nothing is ever dropped;
instead callers watch ``congested`` and pause reading from their client until
``wait_uncongested()`` resolves (backpressure). The backlog is bounded in
frames and in payload bytes: an SSH or HTTP output frame can carry 32 KiB or
more, so a frame count alone lets a slow disk hold hundreds of megabytes.

The byte backlog is two monotonic counters, each written by one thread only
(``_bytes_queued`` by the loop, ``_bytes_taken`` by the writer), so neither
needs a lock: a += from two threads on one counter could lose updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoopd.model import Event, Output
from recorder.chain import ChainWriter, FsyncMode, UnencodableEvent, accelerated
from recorder.keys import export_public_key, key_fingerprint
from recorder.segment import probe_writable

log = logging.getLogger(__name__)

__all__ = [
    "Recorder",
    "RecorderObserver",
    "RecorderSettings",
    "RecorderUnavailable",
    "SessionRecording",
]

_BATCH = 4096  # items processed between flushes: amortises write() syscalls
_PROBE_INTERVAL = 0.5  # seconds between disk probes while unhealthy
_WAKE_AT = 256
"""Queue length at which a write wakes the writer thread. Below it the writer
picks frames up on its next tick: waking a thread per frame costs a context
switch and a GIL hand-over on every query, which dominated per-query cost."""
_BATCH_TICK = 0.01  # seconds: the most a frame waits in memory before it is written


@dataclass(frozen=True)
class RecorderSettings:
    dir: Path
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_seconds: float = 3600.0
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval: float = 1.0
    checkpoint_frames: int = 1000
    checkpoint_seconds: float = 10.0
    queue_max_frames: int = 10000  # high watermark for backpressure
    queue_max_bytes: int = 16 * 1024 * 1024  # ... and for queued payload bytes


class RecorderObserver(Protocol):
    """Metrics hooks. Called from the writer thread (and from whichever thread
    probes the disk for ``recovered``), so implementations must be thread-safe
    (prometheus_client counters are)."""

    def frames_written(self, count: int, nbytes: int) -> None: ...

    def write_failed(self, reason: str) -> None: ...

    def recovered(self) -> None: ...


class _NullObserver:
    def frames_written(self, count: int, nbytes: int) -> None:
        pass

    def write_failed(self, reason: str) -> None:
        pass

    def recovered(self) -> None:
        pass


class RecorderUnavailable(Exception):
    """The recorder cannot accept (more) frames: disk failing or recorder closed."""


# Queue sentinels (in the event slot of a queue item).
_OPEN: Any = object()
_CLOSE: Any = object()


class SessionRecording:
    """The recording of one session. Only the owning (loop) thread calls
    write/close; the writer thread only touches ``_chain`` and ``failed``."""

    def __init__(self, recorder: Recorder, session_id: str, loop: asyncio.AbstractEventLoop | None):
        self.session_id = session_id
        self.failed = False
        self._on_failure: Callable[[str], None] | None = None
        self._failure_reason: str | None = None  # failed before on_failure was set
        self._notify_lock = threading.Lock()
        self._recorder = recorder
        self._loop = loop
        self._seq = 0
        self._closed = False
        self._chain: ChainWriter | None = None  # writer thread only

    def write(self, event: Event) -> None:
        """Enqueue an event; never blocks, never drops."""
        if self.failed or self._closed:
            raise RecorderUnavailable(
                f"recording of session {self.session_id} is "
                + ("failed" if self.failed else "closed")
            )
        self._seq = seq = self._seq + 1
        rec = self._recorder
        queue = rec._queue
        queue.append((self, seq, time.time_ns(), event))
        if type(event) is Output:
            rec._bytes_queued += len(event.data)
        if len(queue) >= _WAKE_AT and not rec._woken:
            # A plain flag instead of Event.is_set() (a Python call) on every
            # write while the writer catches up; the writer clears it when it
            # takes the queue. A stale True only delays the wake to the tick.
            rec._woken = True
            rec._wake.set()

    @property
    def congested(self) -> bool:
        return self._recorder._above_high()

    async def wait_uncongested(self) -> None:
        await self._recorder._wait_uncongested()

    def close(self) -> None:
        """Enqueue the close checkpoint; the file closes once it is written."""
        if self._closed:
            return
        self._closed = True
        rec = self._recorder
        rec._queue.append((self, self._seq, time.time_ns(), _CLOSE))
        rec._wake.set()

    @property
    def on_failure(self) -> Callable[[str], None] | None:
        return self._on_failure

    @on_failure.setter
    def on_failure(self, cb: Callable[[str], None] | None) -> None:
        # The gateway sets the callback right after open_session(); if the
        # writer thread failed the session in between, deliver it now.
        with self._notify_lock:
            self._on_failure = cb
            reason, self._failure_reason = self._failure_reason, None
        if cb is not None and reason is not None:
            self._deliver(cb, reason)

    def _notify_failure(self, reason: str) -> None:
        """Writer thread: run on_failure on the owning loop (fail closed)."""
        with self._notify_lock:
            cb = self._on_failure
            if cb is None:
                self._failure_reason = reason
                return
        self._deliver(cb, reason)

    def _deliver(self, cb: Callable[[str], None], reason: str) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(cb, reason)
                return
        try:
            cb(reason)
        except Exception:
            log.exception("on_failure callback of session %s raised", self.session_id)


class Recorder:
    def __init__(
        self,
        settings: RecorderSettings,
        signing_key: Ed25519PrivateKey,
        observer: RecorderObserver | None = None,
    ) -> None:
        self.settings = settings
        self._dir = Path(settings.dir)
        self._key = signing_key
        self._fingerprint = key_fingerprint(signing_key.public_key())
        self._observer: RecorderObserver = observer or _NullObserver()
        self._queue: deque[tuple[SessionRecording, int, int, Any]] = deque()
        self._high = max(1, settings.queue_max_frames)
        self._low = self._high // 2
        self._high_bytes = max(1, settings.queue_max_bytes)
        self._low_bytes = self._high_bytes // 2
        self._bytes_queued = 0  # loop thread only: Output payload bytes enqueued
        self._bytes_taken = 0  # writer thread only: ... and taken off the queue
        self._wake = threading.Event()
        self._woken = False  # see SessionRecording.write
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._sessions: dict[str, SessionRecording] = {}  # loop side: not yet closed
        self._writer_dead = False  # the writer thread stopped on a bug: no recovery
        self._state_lock = threading.Lock()  # healthy/last_error transitions
        self._healthy = True
        self._last_error: str | None = None
        self._last_probe = 0.0
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # writer-thread state
        self._chains: dict[str, ChainWriter] = {}
        self._dirty: list[ChainWriter] = []
        self._last_fsync = time.monotonic()

    # ----------------------------------------------------------- public API
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        try:
            export_public_key(self._key, self._dir)
        except OSError as exc:
            self._set_unhealthy(f"cannot export public key: {exc}")
        log.info(
            "recorder: chain loop %s",
            "in C (recorder._chainfast)" if accelerated() else "in pure Python",
        )
        self._thread = threading.Thread(target=self._run, name="hoopd-recorder", daemon=True)
        self._thread.start()

    def open_session(self, session_id: str) -> SessionRecording:
        if self._closed or self._stopping:
            raise RecorderUnavailable("recorder is closed")
        if not self.healthy:
            raise RecorderUnavailable(f"recordings cannot be written: {self._last_error}")
        if session_id in self._sessions:
            raise ValueError(f"session {session_id!r} is already being recorded")
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        sess = SessionRecording(self, session_id, loop)
        # Validation of the id and creation of the directory/file happen in
        # the writer thread (I/O); an invalid id fails the session there.
        self._sessions[session_id] = sess
        self._queue.append((sess, 0, time.time_ns(), _OPEN))
        self._wake.set()
        return sess

    @property
    def healthy(self) -> bool:
        if self._writer_dead:
            return False
        if self._healthy:
            return True
        # While unhealthy, re-probe (rate limited) so that we notice when the
        # disk works again without anyone having to call check_writable().
        if time.monotonic() - self._last_probe >= _PROBE_INTERVAL:
            self.check_writable()
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self._last_error

    def check_writable(self) -> bool:
        self._last_probe = time.monotonic()
        try:
            probe_writable(self._dir)
        except OSError as exc:
            self._set_unhealthy(f"recordings directory not writable: {exc}")
            return False
        self._set_healthy()
        return True

    def close(self, timeout: float = 10.0) -> None:
        if self._closed:
            return
        for sess in list(self._sessions.values()):
            sess.close()
        self._stopping = True
        self._wake.set()
        if self._thread is None:
            self._run()  # never started: drain synchronously so nothing is lost
        else:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("recorder thread did not finish within %.1fs", timeout)
        self._closed = True
        self._release_waiters()

    # ------------------------------------------------------ health helpers
    def _set_unhealthy(self, reason: str) -> None:
        with self._state_lock:
            self._healthy = False
            self._last_error = reason
        log.error("recorder: %s", reason)
        self._observer.write_failed(reason)

    def _set_healthy(self) -> None:
        with self._state_lock:
            was = self._healthy
            self._healthy = True
        if not was:
            log.warning("recorder: writing works again")
            self._observer.recovered()

    # -------------------------------------------------------- backpressure
    def _above_high(self) -> bool:
        return (
            len(self._queue) > self._high
            or self._bytes_queued - self._bytes_taken > self._high_bytes
        )

    def _at_or_below_low(self) -> bool:
        return (
            len(self._queue) <= self._low
            and self._bytes_queued - self._bytes_taken <= self._low_bytes
        )

    async def _wait_uncongested(self) -> None:
        if not self._above_high():
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            # Re-check under the lock: the writer checks and releases under
            # the same lock, so a wake-up cannot fall between check and append.
            if self._at_or_below_low() or self._stopping or self._closed:
                return
            self._waiters.append((loop, fut))
        self._wake.set()
        await fut

    def _release_waiters(self) -> None:
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, fut)

    # ------------------------------------------------------- writer thread
    def _run(self) -> None:
        try:
            self._run_loop()
        except BaseException as exc:
            # A bug, not a disk error: nothing will write recordings any more,
            # so fail closed instead of letting sessions queue into a void.
            log.exception("recorder: the writer thread stopped on an unexpected error")
            self._writer_died(f"the writer thread stopped: {exc!r}")

    def _writer_died(self, reason: str) -> None:
        """Fail every session and stay unhealthy (no thread is left to probe
        the disk and recover): live sessions end, new ones are refused."""
        self._writer_dead = True
        self._set_unhealthy(reason)
        for sess in list(self._sessions.values()):
            self._fail(sess, reason, disk=False)
        self._release_waiters()

    def _run_loop(self) -> None:
        queue = self._queue
        tick = min(0.25, self.settings.checkpoint_seconds, self.settings.fsync_interval)
        last_periodic = time.monotonic()
        while True:
            self._wake.wait(_BATCH_TICK)
            self._wake.clear()
            self._woken = False
            while queue:
                self._process_batch()
                self._flush_dirty()
                if self._waiters and self._at_or_below_low():
                    self._release_waiters()
                if len(queue) < _WAKE_AT and not self._stopping:
                    # What arrived while this batch was written is a trickle:
                    # leave it for the next tick. Chasing it here took a GIL
                    # hand-over and a write() per session for every few
                    # statements (3.4 futex calls per pgbench transaction).
                    break
            now = time.monotonic()
            if now - last_periodic >= tick or self._stopping:
                last_periodic = now
                self._periodic(now)
            if self._waiters and self._at_or_below_low():
                self._release_waiters()
            if self._stopping and not queue:
                break
        for chain in list(self._chains.values()):
            self._guard(chain, chain.close)
        self._chains.clear()

    def _process_batch(self) -> None:
        """Up to _BATCH queued items. Consecutive events of one session go
        to its chain as one run (ChainWriter.append_events)."""
        popleft = self._queue.popleft
        run: list[tuple[int, int, Event]] = []
        run_sess: SessionRecording | None = None
        taken = 0
        for _ in range(_BATCH):
            try:
                sess, seq, ts, event = popleft()
            except IndexError:
                break
            if type(event) is Output:
                taken += len(event.data)
            if sess is run_sess and event is not _OPEN and event is not _CLOSE:
                run.append((seq, ts, event))
                continue
            if run_sess is not None:
                self._append_run(run_sess, run)
                run = []
                run_sess = None
            if sess.failed:
                continue  # fail closed: the session is being ended by the gateway
            if event is _OPEN:
                self._open_chain(sess, ts)
            elif event is _CLOSE:
                if sess._chain is not None:
                    self._guard(sess._chain, sess._chain.close)
                self._sessions.pop(sess.session_id, None)
                self._chains.pop(sess.session_id, None)
            elif sess._chain is not None:
                run_sess = sess
                run.append((seq, ts, event))
        if run_sess is not None:
            self._append_run(run_sess, run)
        # Counted once the batch is written: until then its payloads are
        # still held in memory (by ``run``), which is what the bound is for.
        self._bytes_taken += taken

    def _append_run(self, sess: SessionRecording, run: list[tuple[int, int, Event]]) -> None:
        chain = sess._chain
        if chain is None or sess.failed:
            return
        try:
            chain.append_events(run)
        except OSError as exc:
            self._fail(sess, f"write failed for session {sess.session_id}: {exc}")
        except UnencodableEvent as exc:
            # A bug in the event's producer: end that session (fail closed),
            # keep the writer alive. The session's later events are dropped
            # with it.
            self._fail(sess, str(exc), disk=False)

    def _open_chain(self, sess: SessionRecording, ts: int) -> None:
        s = self.settings
        fsync: FsyncMode = s.fsync
        chain = ChainWriter(
            directory=self._dir,
            session_id=sess.session_id,
            key=self._key,
            key_fingerprint=self._fingerprint,
            rotate_bytes=s.rotate_bytes,
            checkpoint_frames=s.checkpoint_frames,
            fsync=fsync,
            dirty=self._dirty,
            on_written=self._observer.frames_written,
        )
        try:
            chain.open(ts)
        except (OSError, ValueError) as exc:
            self._fail(sess, f"cannot create recording for session {sess.session_id}: {exc}")
            return
        sess._chain = chain
        self._chains[sess.session_id] = chain

    def _flush_dirty(self) -> None:
        dirty, self._dirty[:] = list(self._dirty), []
        for chain in dirty:
            try:
                chain.flush()
                if self.settings.fsync == "always":
                    chain.fsync()
            except OSError as exc:
                self._fail_chain(chain, f"write failed for session {chain.session_id}: {exc}")

    def _periodic(self, now: float) -> None:
        s = self.settings
        for chain in list(self._chains.values()):
            if chain.failed:
                continue
            if chain.unsigned_frames and now - chain.last_checkpoint >= s.checkpoint_seconds:
                self._guard(chain, chain.checkpoint_periodic)
            if chain.events_in_file and now - chain.opened_at >= s.rotate_seconds:
                self._guard(chain, chain.rotate)
        self._flush_dirty()
        if s.fsync == "interval" and now - self._last_fsync >= s.fsync_interval:
            self._last_fsync = now
            for chain in list(self._chains.values()):
                self._guard(chain, chain.fsync)

    def _guard(self, chain: ChainWriter, op: Callable[[], object]) -> None:
        """Run a chain operation, turning an I/O error into a session failure."""
        try:
            op()
        except OSError as exc:
            self._fail_chain(chain, f"write failed for session {chain.session_id}: {exc}")

    def _fail_chain(self, chain: ChainWriter, reason: str) -> None:
        sess = self._sessions.get(chain.session_id)
        chain.abandon()
        self._chains.pop(chain.session_id, None)
        if sess is not None:
            self._fail(sess, reason)
        else:  # already closed by its owner: still a recorder failure
            self._set_unhealthy(reason)

    def _fail(self, sess: SessionRecording, reason: str, *, disk: bool = True) -> None:
        """Fail one session. ``disk`` failures also mark the recorder unhealthy
        (new sessions are refused until writing works again)."""
        if sess.failed:
            return
        sess.failed = True
        chain = sess._chain
        if chain is not None:
            chain.abandon()
        self._chains.pop(sess.session_id, None)
        self._sessions.pop(sess.session_id, None)
        if disk:
            self._set_unhealthy(reason)
        else:
            log.error("recorder: session %s failed: %s", sess.session_id, reason)
        sess._notify_failure(reason)
        self._release_waiters()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
