"""One request/response through the upstream (``Exchange``), driven by the
upstream connection's protocol callbacks without any await: response heads
rewritten for the client, bodies decoded and masked on the way, recorded
up to the cap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from hoopd.aio import SLICE_SECONDS, ReadTime
from hoopd.model import Output, Stream

from .bodies import BodyDecodeError, BodyMasker, BodyRefused
from .h1 import (
    DONE,
    END,
    LAST_CHUNK,
    Data,
    EndOfMessage,
    Event,
    Header,
    Headers,
    ProtocolError,
    RequestHead,
    ResponseHead,
    ResponseParser,
    chunk,
)
from .shared import IDEMPOTENT, json_response, ms

if TYPE_CHECKING:
    from .proxy import ClientConnection

log = logging.getLogger("hoopd.http")

REPLAY_MAX_BYTES = 8192
"""Upstream reads up to this size that hold a whole response are remembered (``Replay``)."""
REPLAY_ENTRIES = 256

# What an exchange did, in order (``Exchange.trace``, ``Replay.ops``):
SEND = 0  # (SEND, bytes): written to the client
COUNT = 1  # (COUNT, bytes, counts | None): session.upstream_data (metrics, not recorded)
RECORD = 2  # (RECORD, bytes, counts): recorded as the command's STDOUT Output
RESULT = 3  # (RESULT, status, error): session.result

_UNSEEN: Any = object()


@dataclass(frozen=True, slots=True)
class Replay:
    """What one exchange did with a response that came whole in one upstream
    read: the client's bytes, the metrics, the recorded Output and Result.

    Masking, framing and head rewriting are pure functions of the read's
    bytes and the request's method, version and keep-alive (the connection's
    config being fixed for an ``HttpProxy``), so the same read on another
    request does the same things: ``Exchange.replay`` repeats them (with this
    request's command number and duration) instead of parsing, planning and
    masking again. APIs answer small requests with the same bytes over and
    over; only a read that holds exactly one response (and the exchange that
    ended with it, without an error) is remembered."""

    ops: tuple[tuple[Any, ...], ...]
    status: int
    upstream_keep: bool
    client_keep: bool
    result: str
    bytes_out: int


class Exchange:
    """One request/response through the upstream; lives in callbacks."""

    __slots__ = (
        "_waiter", "body", "bytes_out", "chunked", "client", "client_keep", "cmd", "deadline",
        "deferred", "discard", "finished_early", "got_bytes", "head", "head_sent", "on_done", "out",
        "prep", "reason", "rec", "rec_mask", "record_left", "request_complete", "resp", "result", "started",
        "status", "trace", "upstream", "upstream_keep",
    )  # fmt: skip

    def __init__(
        self,
        client: ClientConnection,
        upstream: UpstreamConnection,
        cmd: Any,
        head: RequestHead,
        started: float,
        request_complete: bool,
        prep: Any = None,
    ) -> None:
        self.client = client
        self.upstream = upstream
        self.cmd = cmd
        self.head = head
        self.started = started
        self.request_complete = request_complete
        self.prep = prep
        """The request's ``Prepared`` (the fast path's, for a retry)."""
        proxy = client.proxy
        self.result: str | None = None
        """How the exchange ended (``keep``, ``close``, ``retry``, ``tunnel``); None while it runs."""
        self._waiter: asyncio.Future[str] | None = None
        self.on_done: Callable[[Exchange, str], None] | None = None
        """Called with (exchange, result) as soon as it ends (the fast path's continuation)."""
        self.got_bytes = False
        self.head_sent = False
        self.status = 0
        self.body: BodyMasker | None = None
        self.chunked = False
        self.client_keep = head.keep_alive
        self.upstream_keep = False
        self.discard = False
        self.finished_early = False
        self.deferred: tuple[Header, ...] | None = None
        """The head's fields while the head waits for a buffered body."""
        self.resp: ResponseHead | None = None
        """The final response head (the memo key of the client-bound head)."""
        self.reason = ""
        self.record_left = proxy.options.record_body_bytes
        self.rec_mask: Any = None
        """A body passed unmasked (``unmaskable: pass``): the stream masker of
        its recorded copy (the recording is masked by content all the same)."""
        self.rec: list[bytes] = []
        self.bytes_out = 0
        self.out: list[bytes] = []
        self.deadline = proxy.loop.time() + proxy.upstream.response_timeout
        """When ``on_timeout`` is due if no final head came (``UpstreamConnection.begin``)."""
        self.trace: list[tuple[Any, ...]] | None = None
        """What this exchange does, while it may become a ``Replay`` (None: not traced)."""

    def wait(self) -> asyncio.Future[str]:
        """A future of ``result`` (created only when someone waits: the fast path does not)."""
        if self._waiter is None:
            self._waiter = self.client.proxy.loop.create_future()
            if self.result is not None:
                self._waiter.set_result(self.result)
        return self._waiter

    # -- helpers -------------------------------------------------------------
    def _finish(self, result: str) -> None:
        self.flush_out()
        if self.result is None:
            self.result = result
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(result)
            if self.on_done is not None:
                self.on_done(self, result)

    def _record(self, data: bytes) -> None:
        if self.record_left <= 0 or not data:
            return
        part = data[: self.record_left]
        self.record_left -= len(part)
        self.rec.append(part)

    def flush_record(self, final: bool = False) -> None:
        session = self.client.session
        if session is None:
            return
        if self.rec:
            counts = dict(self.body.counts) if final and self.body is not None else {}
            data = b"".join(self.rec)
            session.record(Output(Stream.STDOUT, data, self.cmd.seq, counts))
            self.rec = []
            if self.trace is not None:
                self.trace.append((RECORD, data, counts))
        self.client.check_recorder()

    def _send(self, data: bytes) -> None:
        """Queue bytes for the client; ``flush_out`` writes them in one call
        (once per upstream read: head and body of a small response go together)."""
        if not data:
            return
        self.bytes_out += len(data)
        self.out.append(data)

    def flush_out(self) -> None:
        out = self.out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            self.client.write(data)
            out.clear()
            if self.trace is not None:
                self.trace.append((SEND, data))

    def _count(self, data: bytes, masked: dict[str, int] | None = None) -> None:
        """Bytes for the client in the session's totals and metrics (recorded by ``flush_record``)."""
        session = self.client.session
        if session is not None:
            session.upstream_data(data, record=False, masked=masked)
            if self.trace is not None:
                self.trace.append((COUNT, data, dict(masked) if masked else None))

    def _error_response(self, status: int, code: str, message: str) -> None:
        """Before the head went out: answer with an error; after: cut the connection."""
        self.trace = None  # an error is never replayed
        session = self.client.session
        if session is not None:
            session.error(message, code)
            session.result(self.cmd, str(status), duration_ms=ms(self.started), error=message)
        if not self.head_sent or self.bytes_out == sum(map(len, self.out)):
            # a head still queued in ``out`` (all of the body came in the
            # read that failed) has not reached the client: take it back,
            # with what was to be recorded, and answer with the error
            self.head_sent = True
            self.out.clear()
            self.rec.clear()
            self.client.write(
                json_response(status, {"error": code, "message": message}, close=True)
            )
        elif self.client.transport is not None:
            self.out.clear()
            self.client.transport.abort()
        self.upstream_keep = False
        self._finish("close")

    # -- from the upstream -------------------------------------------------------
    def on_head(self, resp: ResponseHead) -> None:
        if 100 <= resp.status < 200 and resp.status != 101:
            return  # interim responses: Expect was answered by the gateway itself
        proxy = self.client.proxy
        self.status = resp.status
        self.upstream_keep = resp.keep_alive and self.request_complete
        if resp.status == 101:
            if self.head.upgrade != "websocket":
                self._error_response(502, "bad_upstream", "unexpected 101 from the upstream")
                return
            if proxy.masking and resp.headers.has("sec-websocket-extensions"):
                # not offered (stripped from the upgrade request): frames the
                # gateway could not read would follow
                self._error_response(502, "bad_upstream", "websocket extension the gateway did not offer")
                if self.upstream.transport is not None:
                    self.upstream.transport.close()
                return
            headers = Headers([h for h in resp.headers.items if h[0] not in ("connection", "upgrade")])
            headers.add("Connection", "Upgrade")
            headers.add("Upgrade", resp.headers.get("upgrade") or "websocket")
            reason, counts = proxy.mask_head_fields(resp.reason, headers)
            data, recorded = proxy.response_head(None, 101, reason, headers)
            self.head_sent = True
            self._send(data)
            self._record(recorded)
            self._head_counts(counts)
            return
        rp = proxy.response_plan(resp)
        plan = rp.plan
        if plan.mode == "refuse":
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {plan.reason}")
            return
        opts = proxy.options
        self.body = BodyMasker(plan, proxy.masker, opts.mask_json_max_bytes, opts.unmaskable, proxy.docs)
        if plan.mode == "pass" and self.record_left > 0:
            self.rec_mask = proxy.masker.stream()
        self.resp = resp
        self.reason = rp.reason
        if rp.counts:
            self._head_counts(rp.counts)
        transforms = plan.transforms
        if transforms and self.body.buffering:
            self.deferred = rp.items
            return
        if resp.framing == "none":
            pass
        elif not transforms and resp.framing == "length":
            pass  # Content-Length kept
        elif self.head.version == "1.1":
            self.chunked = True
        else:
            self.client_keep = False
        self._send_head(resp.status, rp.reason, rp.items)

    def _head_counts(self, counts: dict[str, int]) -> None:
        """Values masked in the response head: counted like body masks."""
        if counts:
            self._count(b"", counts)

    def _send_head(
        self, status: int, reason: str, items: tuple[Header, ...], body: bytes = b"", length: int = -1
    ) -> None:
        """The head for the client: ``items`` (``ResponsePlan.items``) plus the
        framing and connection fields; ``length`` >= 0: add that
        Content-Length (a masked, buffered body)."""
        version = self.head.version
        resp = self.resp
        key = (
            None
            if resp is None or resp.framing == "none"  # see HttpProxy.response_plan
            else (resp.raw, reason, length, self.chunked, self.client_keep, version)
        )
        proxy = self.client.proxy
        hit = proxy.memoized_head(key) if key is not None else None
        if hit is None:
            headers = Headers(list(items))
            if self.chunked:
                headers.add("Transfer-Encoding", "chunked")
            if length >= 0:
                headers.add("Content-Length", str(length))
            if not self.client_keep:
                headers.add("Connection", "close")
            elif version == "1.0":
                headers.add("Connection", "keep-alive")
            hit = proxy.response_head(key, status, reason, headers)
        data, recorded = hit
        self.head_sent = True
        self._send(data + body if body else data)
        if self.record_left > 0:
            self.rec.append(recorded)

    def on_data(self, data: bytes) -> None:
        if self.discard or self.body is None:
            return
        try:
            out = self.body.feed(data)
        except BodyRefused as exc:
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {exc}")
            return
        except BodyDecodeError as exc:
            self._undecodable(exc)
            return
        if out:
            if self.deferred is not None:
                self._release_head()
            self._out(out)

    @property
    def backlogged(self) -> bool:
        """Compressed body bytes wait to be decoded (``BodyMasker.pending``)."""
        body = self.body
        return body is not None and self.result is None and not self.discard and body.pending

    def _release_head(self) -> None:
        """A buffered (JSON) body went over ``mask_json_max_bytes`` and is
        streamed instead: its deferred head goes out first, framed as a
        streamed body's (``on_head``), before the first masked bytes."""
        items, self.deferred = self.deferred, None
        assert items is not None and self.resp is not None
        if self.resp.framing == "none":
            pass
        elif self.head.version == "1.1":
            self.chunked = True
        else:
            self.client_keep = False
        self._send_head(self.status, self.reason, items)

    def _undecodable(self, exc: BodyDecodeError) -> None:
        """A corrupt compressed body: 502 before the head went out, a cut
        connection after (the client must not take a truncated body for a whole one)."""
        self.discard = True
        coding = self.body.plan.encoding if self.body is not None else ""
        message = f"cannot decode the {coding} response body: {exc}"
        session = self.client.session
        (session.log if session is not None else log).warning("%s: %s", self.cmd.text, message)
        self._error_response(502, "bad_upstream", message)

    def _out(self, out: bytes) -> None:
        self._count(out)
        rec_mask = self.rec_mask
        if rec_mask is None:
            self._record(out)
        elif self.record_left > 0:
            self._record(bytes(rec_mask.feed(out)))
        self._send(chunk(out) if self.chunked else out)

    def on_end(self) -> None:
        if self.result is not None:
            return
        if self.status == 101:
            self.flush_record()
            self._finish("tunnel")
            return
        if self.discard or self.body is None:
            self._finish("close")
            return
        try:
            tail = self.body.finish()
        except BodyRefused as exc:
            self.discard = True
            self._error_response(502, "unmaskable", f"response refused: {exc}")
            return
        except BodyDecodeError as exc:
            self._undecodable(exc)
            return
        session = self.client.session
        if self.deferred is not None:
            self._send_head(self.status, self.reason, self.deferred, tail, len(tail))
            self._count(tail, self.body.counts)
            self._record(tail)
        elif tail:
            self._out(tail)
        if self.rec_mask is not None and self.record_left > 0:
            self._record(bytes(self.rec_mask.flush()))
        if self.chunked:
            self._send(LAST_CHUNK)
        if session is not None:
            if self.body.counts and self.deferred is None:
                self._count(b"", self.body.counts)
            self.flush_record(final=True)
            attrs_err = "masked as text: JSON over the size limit" if self.body.fell_back else ""
            status = str(self.status)
            session.result(self.cmd, status, duration_ms=ms(self.started), error=attrs_err)
            if self.trace is not None:
                self.trace.append((RESULT, status, attrs_err))
        self._finish("keep" if self.client_keep else "close")

    def replay(self, rp: Replay) -> None:
        """Do what the exchange ``rp`` was made from did (see ``Replay``)."""
        client = self.client
        session = client.session
        assert session is not None
        for op in rp.ops:
            kind = op[0]
            if kind == SEND:
                client.write(op[1])
            elif kind == COUNT:
                session.upstream_data(op[1], record=False, masked=op[2])
            elif kind == RECORD:
                session.record(Output(Stream.STDOUT, op[1], self.cmd.seq, dict(op[2])))
                client.check_recorder()
            else:
                session.result(self.cmd, op[1], duration_ms=ms(self.started), error=op[2])
        self.status = rp.status
        self.upstream_keep = rp.upstream_keep
        self.client_keep = rp.client_keep
        self.head_sent = True
        self.bytes_out = rp.bytes_out
        self._finish(rp.result)

    def as_replay(self) -> Replay | None:
        """This exchange as a ``Replay``, if it was traced and ended well."""
        trace = self.trace
        if trace is None or self.result not in ("keep", "close") or self.discard:
            return None
        return Replay(
            tuple(trace), self.status, self.upstream_keep, self.client_keep, self.result, self.bytes_out
        )

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.result is not None:
            return
        if (
            not self.got_bytes
            and self.upstream.reused
            and self.request_complete
            and self.head.method in IDEMPOTENT
        ):
            self._finish("retry")  # a kept-alive connection closed under us: send again
            return
        why = str(exc) if exc else "upstream closed the connection"
        session = self.client.session
        if session is not None:
            session.metrics.upstream_errors.inc()
        self._error_response(502, "bad_upstream", f"upstream failed: {why}")

    def on_protocol_error(self, err: ProtocolError) -> None:
        self.discard = True
        self._error_response(502, "bad_upstream", f"invalid response from the upstream: {err.message}")

    def on_timeout(self) -> None:
        if self.result is not None or self.status:
            return
        self.discard = True
        self._error_response(504, "upstream_timeout", "the upstream did not answer in time")
        if self.upstream.transport is not None:
            self.upstream.transport.close()

    def client_gone(self) -> None:
        if self.upstream.transport is not None and self.result is None:
            self.upstream.transport.abort()
        self._finish("close")


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, client: ClientConnection) -> None:
        self.client = client
        self.loop = client.proxy.loop
        self._timer: asyncio.TimerHandle | None = None
        """The response timer, shared by the exchanges on this connection (``begin``)."""
        self.parser = ResponseParser(client.proxy.options.max_header_bytes, client.proxy.response_heads)
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.eof = False
        self.reused = False
        self.tunnel = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._pauses: set[str] = set()
        self._reads = ReadTime()
        self.decoding = False
        """A compressed body's decoding is behind (``_pump``): reading is
        paused ("decode") and later parser events wait in ``_held``."""
        self._held: list[Event] = []
        self._pump_handle: asyncio.Handle | None = None
        self._lost: tuple[Exception | None] | None = None
        """connection_lost that came while decoding: reported after (``_pump``)."""

    @property
    def usable(self) -> bool:
        return (
            not self.closed
            and not self.eof
            and self.transport is not None
            and not self.transport.is_closing()
            and (self.exchange is None or self.exchange.result is not None)
        )

    def begin(self, ex: Exchange) -> None:
        self.exchange = ex
        self.parser.expect(ex.head.method)
        if self._timer is None:
            self._timer = self.loop.call_at(ex.deadline, self._response_timer)

    def _response_timer(self) -> None:
        """``on_timeout`` of the exchange in flight once its deadline passed
        with no final head. One timer serves the exchanges of a kept-alive
        connection one after the other (set anew only when it fires), not a
        timer set and cancelled per request."""
        self._timer = None
        ex = self.exchange
        if ex is None or ex.result is not None or ex.status or self.closed:
            return
        if ex.deadline > self.loop.time():
            self._timer = self.loop.call_at(ex.deadline, self._response_timer)
            return
        ex.on_timeout()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- flow control ------------------------------------------------------------
    def pause(self, why: str) -> None:
        if not self._pauses and self.transport is not None:
            self.transport.pause_reading()
        self._pauses.add(why)

    def resume(self, why: str) -> None:
        if why not in self._pauses:
            return
        self._pauses.discard(why)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        elif self.decoding and self._pump_handle is None and not self._blocked():
            self._pump_handle = self.loop.call_soon(self._pump)

    def _blocked(self) -> bool:
        """Decoding waits: the client's buffer or the recorder is full."""
        return any(why not in ("decode", "slice") for why in self._pauses)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drained(self) -> None:
        if not self.write_paused or self.closed:
            return
        self._drain = asyncio.get_running_loop().create_future()
        await self._drain

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        started = time.perf_counter()
        self._received(data)
        if self._reads.spent(time.perf_counter() - started):
            self._give_way()

    def _give_way(self) -> None:
        """Stop reading until the loop has run what else is ready: the
        bytes are handled in the same order, the other sessions get a turn."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.closed or "slice" in self._pauses:
            return
        self.pause("slice")
        self.loop.call_soon(self.resume, "slice")

    def _received(self, data: bytes) -> None:
        if self.tunnel:
            self.client.tunnel_out(data)
            return
        ex = self.exchange
        if ex is None or ex.result is not None:
            # nothing was asked: a broken upstream; drop the connection
            if self.transport is not None:
                self.transport.close()
            return
        if self.decoding:  # bytes read before the pause took effect: after the backlog
            try:
                self._held.extend(self.parser.feed(data))
            except ProtocolError as exc:
                ex.on_protocol_error(exc)
                if self.transport is not None:
                    self.transport.close()
            return
        key = self._replay_key(ex, data)
        if key is not None:
            replays = self.client.proxy.replays
            rp = replays.get(key, _UNSEEN)
            if rp is _UNSEEN:
                # seen once: traced (and remembered) only when it comes again,
                # so that answers that never repeat cost no trace
                if len(replays) >= REPLAY_ENTRIES:
                    replays.clear()
                replays[key] = None
                key = None
            elif rp is not None:
                ex.got_bytes = True
                self.parser.skip_message()
                ex.replay(rp)
                return
            else:
                ex.trace = []
        ex.got_bytes = True
        try:
            events = self.parser.feed(data)
        except ProtocolError as exc:
            ex.on_protocol_error(exc)
            if self.transport is not None:
                self.transport.close()
            return
        self._deliver(ex, events)
        if key is not None:
            rp = ex.as_replay() if self.parser.state == DONE and not self.parser.buffered else None
            ex.trace = None
            if rp is not None:
                replays[key] = rp

    def _replay_key(self, ex: Exchange, data: bytes) -> tuple[Any, ...] | None:
        """The ``Replay`` key of the first read of a response (None: not one to remember)."""
        if (
            ex.got_bytes
            or len(data) > REPLAY_MAX_BYTES
            or not ex.request_complete
            or self.client.session is None
            or not self.parser.fresh
        ):
            return None
        head = ex.head
        return (data, head.method, head.version, head.keep_alive)

    def _deliver(self, ex: Exchange, events: list[Event]) -> None:
        if self._dispatch(ex, events):
            self._pump()
            return
        if ex.result is None:
            ex.flush_out()
            ex.flush_record()

    def _dispatch(self, ex: Exchange, events: list[Event]) -> bool:
        """Hand ``events`` to the exchange; True when a compressed body's
        decoding fell behind: the events after it wait in ``_held``."""
        for i, ev in enumerate(events):
            if isinstance(ev, Data):
                ex.on_data(ev.data)
                if ex.backlogged:
                    self._held = events[i + 1 :] + self._held
                    if not self.decoding:
                        self.decoding = True
                        ex.trace = None  # not one read's doing any more: never replayed
                        self.pause("decode")
                    return True
            elif ev is END or isinstance(ev, EndOfMessage):
                ex.on_end()
                if ex.status == 101:
                    leftover = self.parser.take_buffer()
                    client_left = self.client.parser.take_buffer()
                    self.client.start_tunnel(self, client_left, ex.cmd.seq)
                    if leftover:
                        self.client.tunnel_out(leftover)
                    return False
            else:
                assert isinstance(ev, ResponseHead)
                ex.on_head(ev)
        return False

    def _pump(self) -> None:
        """Decode a compressed body's backlog ``DECODE_STEP`` at a time while
        the client takes it: stop when the client's buffer (or the recorder)
        is full -- ``resume`` comes back here -- or after ``SLICE_SECONDS``
        (the next loop turn goes on); then the events that came after it
        (the body's end), then reading again. A bomb's read (~1000:1) is
        thus never decoded whole in one callback."""
        self._pump_handle = None
        ex = self.exchange
        started = time.perf_counter()
        try:
            while ex is not None and ex.result is None:
                if ex.backlogged:
                    if self._blocked():
                        return
                    if time.perf_counter() - started >= SLICE_SECONDS:
                        self._pump_handle = self.loop.call_soon(self._pump)
                        return
                    ex.on_data(b"")
                    ex.flush_out()  # the client's buffer says when to stop
                    ex.flush_record()
                    continue
                if not self._held:
                    break
                events, self._held = self._held, []
                self._dispatch(ex, events)
        finally:
            if ex is not None and ex.result is None:
                ex.flush_out()
                ex.flush_record()
        self._held = []
        self.decoding = False
        lost, self._lost = self._lost, None
        if lost is not None:
            self._connection_lost(lost[0])
            return
        self.resume("decode")

    def eof_received(self) -> bool:
        self.eof = True
        if self.decoding:  # read before the pause took effect: after the backlog
            with contextlib.suppress(ProtocolError):  # connection_lost reports it
                self._held.extend(self.parser.feed_eof())
            return False
        if self.tunnel:
            t = self.client.transport
            if t is not None and t.can_write_eof() and not self.client.eof:
                t.write_eof()
                return True
            self.client.tunnel_closed()
            return False
        ex = self.exchange
        if ex is not None and ex.result is None:
            try:
                events = self.parser.feed_eof()
            except ProtocolError:
                return False  # connection_lost reports it
            self._deliver(ex, events)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        if self.decoding and self.exchange is not None and self.exchange.result is None:
            self._lost = (exc,)  # after what was received (``_pump``)
            return
        self._connection_lost(exc)

    def _connection_lost(self, exc: Exception | None) -> None:
        if self.tunnel:
            self.client.tunnel_closed()
            if self.client.transport is not None:
                self.client.transport.close()
            return
        ex = self.exchange
        if ex is not None and ex.result is None:
            ex.on_upstream_lost(exc)
