"""exec / attach / port-forward over websockets, relayed frame by frame.

Channel protocols (``v5.channel.k8s.io``, ``v4.channel.k8s.io``, older
``channel.k8s.io``): every binary frame starts with a channel byte -- 0 stdin,
1 stdout, 2 stderr, 3 status (a JSON ``Status``; exit code in
``details.causes[reason=ExitCode]``), 4 resize (``{"Width":…,"Height":…}``),
255 close (v5: the client closed a stream, e.g. stdin EOF).

stdout and stderr go through one content stream masker each; what a masker
holds back (a possible secret cut by a frame boundary) is released after
``options.exec_flush_ms`` of silence when the exec has a TTY, so interactive
shells stay responsive; without a TTY only on more output or the end
(unless ``options.exec_notty_flush_ms`` is set).
Recorded like an SSH terminal: Output(stdin/stdout/stderr) and Resize events.

Port-forward websockets (``portforward.k8s.io`` and its SPDY-tunnelled
variants) carry arbitrary TCP: relayed and recorded, not masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from hoopd.model import Stream

from ._paths import query_bool
from .status import status_body, status_response

if TYPE_CHECKING:
    from hoopd.model import Command
    from hoopd.session import Session

    from ._paths import KubeRequest
    from .proxy import ClientConn, KubeProxy

CHANNEL_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
PORTFORWARD_PROTOCOLS = ("portforward.k8s.io", "v4.channel.k8s.io", "SPDY/3.1+portforward.k8s.io")
STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
REFUSAL_MAX = 64 * 1024
"""Bytes of a refused upgrade's body read and relayed (client-go reads as many)."""


@dataclass
class Refusal:
    """The body of an upgrade the upstream refused (filled by refusal_trace)."""

    body: bytes = b""
    content_type: str = ""


_REFUSAL: contextvars.ContextVar[Refusal | None] = contextvars.ContextVar("hoopd_kube_refusal", default=None)


def refusal_trace(read_timeout: float) -> aiohttp.TraceConfig:
    """Reads the body of a refused websocket upgrade for ``relay_websocket``.

    aiohttp's ``ws_connect`` closes a non-101 response without reading it, and
    that body is the API server's Status (``pods "x" not found``), which
    kubectl prints. The hook runs inside ``ws_connect``, in the handler's task,
    after the response head arrived and before the handshake is checked; a
    101 is left alone, so successful execs are unchanged."""

    async def on_request_end(
        _session: aiohttp.ClientSession, _ctx: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        refusal = _REFUSAL.get()
        resp = params.response
        if refusal is None or resp.status == 101:
            return
        refusal.content_type = resp.headers.get("Content-Type", "")
        chunks: list[bytes] = []
        size = 0
        # a body that does not come (or never ends) must not hold the refusal
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            async with asyncio.timeout(read_timeout):
                while size < REFUSAL_MAX and (chunk := await resp.content.read(REFUSAL_MAX - size)):
                    chunks.append(chunk)
                    size += len(chunk)
        refusal.body = b"".join(chunks)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace


def exit_code(payload: bytes) -> int | None:
    """The exit code in a channel-3 Status (0 for Success, None if unreadable)."""
    try:
        st = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(st, dict):
        return None
    if st.get("status") == "Success":
        return 0
    details = st.get("details")
    if isinstance(details, dict):
        for cause in details.get("causes") or []:
            if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message", ""))
                except ValueError:
                    return None
    return None


def parse_resize(payload: bytes) -> tuple[int, int] | None:
    try:
        size = json.loads(payload)
        cols, rows = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not (0 < cols < 10000 and 0 < rows < 10000):
        return None
    return cols, rows


async def relay_websocket(
    proxy: KubeProxy,
    request: web.BaseRequest,
    state: ClientConn,
    session: Session,
    cmd: Command,
    kr: KubeRequest,
    started: float,
) -> web.StreamResponse:
    assert proxy.http is not None and proxy.bodies is not None
    offered = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    portforward = kr.verb == "portforward"
    known = PORTFORWARD_PROTOCOLS if portforward else CHANNEL_PROTOCOLS
    protocols = [p for p in offered if p in known]
    if not protocols:
        session.result(cmd, "400", error="no supported websocket subprotocol")
        return status_response(
            400,
            "hoopd: unsupported websocket subprotocol "
            f"{','.join(offered) or '(none)'}; supported: {', '.join(known)}",
        )
    headers = proxy.upstream_headers(request, session.identity, websocket=True)
    for drop in ("Upgrade", "Connection"):
        headers.pop(drop, None)
    refusal = Refusal()
    reset = _REFUSAL.set(refusal)
    try:
        upstream = await proxy.http.ws_connect(
            proxy.base + request.raw_path,
            protocols=protocols,
            headers=headers,
            autoping=True,
            max_msg_size=0,
            compress=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        return refused_upgrade(proxy, session, cmd, kr, exc, refusal, started)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        session.metrics.upstream_errors.inc()
        reason = proxy.failure_reason(exc)
        session.error(f"upstream unreachable: {reason}", "upstream_unreachable")
        session.result(cmd, "503", error=reason)
        return status_response(503, f"hoopd: the Kubernetes API server is unreachable: {reason}")
    finally:
        _REFUSAL.reset(reset)
    chosen = upstream.protocol
    client = web.WebSocketResponse(
        protocols=(chosen,) if chosen else (), autoping=True, max_msg_size=0, compress=False
    )
    await client.prepare(request)
    state.sockets.add(client)
    # read as the API server reads it ("yes" or an empty value is a TTY too),
    # or a terminal's prompt would wait for more output before it is shown
    tty = query_bool({"tty": request.query.getall("tty", [])}, "tty")
    relay = _Relay(
        proxy, session, cmd, client, upstream, portforward or chosen in PORTFORWARD_PROTOCOLS[2:], tty,
        transfer=kr.file_transfer,
    )
    relay.started = started
    try:
        await relay.run()
    finally:
        state.sockets.discard(client)
        with contextlib.suppress(Exception):
            await upstream.close()
        with contextlib.suppress(Exception):
            await client.close()
    relay.record_result()
    return client


def refused_upgrade(
    proxy: KubeProxy,
    session: Session,
    cmd: Command,
    kr: KubeRequest,
    exc: aiohttp.WSServerHandshakeError,
    refusal: Refusal,
    started: float,
) -> web.Response:
    """The upstream's refusal (pod or container not found, forbidden, no host
    assigned...) as the API server gave it: its status and its body, masked
    like any response body (kubectl prints the Status's message, which may
    quote the request, the injected credential included). Its header fields
    are not relayed. kubectl retries a refused websocket over SPDY: the same
    answer is kept for that retry."""
    code, out, counts, ctype, message = _refusal_answer(proxy, kr, exc, refusal)
    session.upstream_data(out, Stream.BODY, command_seq=cmd.seq, masked=counts)
    session.result(cmd, str(code), duration_ms=(time.perf_counter() - started) * 1000, error=message[:200])
    proxy._remember_refusal(session, cmd, message, code=code, body=out, content_type=ctype)
    return web.Response(status=code, body=out, headers={"Content-Type": ctype})


def _refusal_answer(
    proxy: KubeProxy, kr: KubeRequest, exc: aiohttp.WSServerHandshakeError, refusal: Refusal
) -> tuple[int, bytes, dict[str, int], str, str]:
    """(status, masked body, mask counts, content type, message) for the client."""
    assert proxy.bodies is not None
    code = exc.status
    body = refusal.body
    if not 400 <= code <= 599:
        # a 101 with a bad handshake, or a success that is no upgrade
        message = f"hoopd: the API server answered the {kr.verb} upgrade with {code}: {exc.message}"
        return 502, status_body(502, message), {}, "application/json", message
    if not body.strip():
        message = f"hoopd: upstream refused the {kr.verb}: {code}"
        return code, status_body(code, message), {}, "application/json", message
    if "json" in refusal.content_type or body.lstrip()[:1] == b"{":
        out, counts = proxy.bodies.mask_document(body)
        return code, out, counts, "application/json", _status_message(out)
    # e.g. a kubelet's text error relayed by the API server; kubectl prints
    # it after "unable to upgrade connection:"
    out, counts = proxy.bodies.mask_bytes(body)
    return code, out, counts, "text/plain; charset=utf-8", out.decode("utf-8", "replace").strip()


def _status_message(doc: bytes) -> str:
    """A Status's message (for the recording's error), else the text."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        st = json.loads(doc)
        if isinstance(st, dict) and isinstance(st.get("message"), str):
            return str(st["message"])
    return doc.decode("utf-8", "replace").strip()


class _Relay:
    def __init__(
        self,
        proxy: KubeProxy,
        session: Session,
        cmd: Command,
        client: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        raw: bool,
        tty: bool = False,
        *,
        transfer: bool = False,
    ) -> None:
        assert proxy.bodies is not None
        self.session = session
        self.cmd = cmd
        self.client = client
        self.upstream = upstream
        self.raw = raw
        self.transfer = transfer
        """kubectl cp: the archive on stdin/stdout is neither masked nor recorded."""
        # Held output is released on silence only where a person waits for
        # prompts (a TTY), or where the config asks for it: without a TTY a
        # target pausing mid-secret must not split it past the masker.
        opts = proxy.options
        notty = opts.exec_notty_flush_ms
        self.idle: float | None = (
            opts.exec_flush_ms / 1000 if tty else (None if notty is None else notty / 1000)
        )
        self.bodies = proxy.bodies
        self.maskers = {STDOUT: proxy.bodies.stream(), STDERR: proxy.bodies.stream()}
        self.reported: dict[int, dict[str, int]] = {STDOUT: {}, STDERR: {}}
        self.exit_code: int | None = None
        self.error = ""
        self.started = time.perf_counter()
        self._result_recorded = False

    def record_result(self) -> None:
        if self._result_recorded or self.session.ended:
            return
        self._result_recorded = True
        status = f"exit {self.exit_code}" if self.exit_code is not None else "closed"
        self.session.result(
            self.cmd, status, duration_ms=(time.perf_counter() - self.started) * 1000, error=self.error
        )

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self.client_to_upstream()),
            asyncio.ensure_future(self.upstream_to_client()),
        ]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # The upstream finishing (status sent, socket closed) ends the exec; the
        # client going away ends it too.
        for t in pending:
            t.cancel()
        for t in done:
            exc = t.exception()
            if exc is not None and not self.error:
                self.error = str(exc) or type(exc).__name__

    async def client_to_upstream(self) -> None:
        session = self.session
        async for msg in self.client:
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                if data and not self.raw:
                    ch = data[0]
                    if ch == STDIN:
                        session.client_data(data[1:], record=not self.transfer)
                    elif ch == RESIZE:
                        size = parse_resize(data[1:])
                        if size is not None:
                            session.resize(*size)
                        session.client_data(data, record=False)
                    else:
                        session.client_data(data, record=False)
                else:
                    session.client_data(data, record=self.raw)
                await self.upstream.send_bytes(data)
            elif msg.type == WSMsgType.TEXT:
                session.client_data(msg.data.encode(), record=True)
                await self.upstream.send_str(msg.data)
            else:
                break
            if session.congested:
                await session.wait_uncongested()
        await self.upstream.close()

    def _masked(self, ch: int, out: bytes) -> dict[str, int]:
        stream = self.maskers[ch]
        total: dict[str, int] = stream.counts
        seen = self.reported[ch]
        delta = {k: v - seen.get(k, 0) for k, v in total.items() if v != seen.get(k, 0)}
        seen.update(total)
        return delta

    async def _emit(self, ch: int, out: bytes) -> None:
        if not out:
            return
        self.session.upstream_data(
            out,
            Stream.STDOUT if ch == STDOUT else Stream.STDERR,
            command_seq=self.cmd.seq,
            masked=self._masked(ch, out),
        )
        await self.client.send_bytes(bytes([ch]) + out)

    async def _flush(self) -> None:
        for ch, stream in self.maskers.items():
            await self._emit(ch, stream.flush())

    def _held(self) -> bool:
        return any(getattr(s, "held", 0) for s in self.maskers.values())

    async def upstream_to_client(self) -> None:
        session = self.session
        while True:
            try:
                held = self.idle is not None and self._held()
                msg = await self.upstream.receive(timeout=self.idle if held else None)
            except TimeoutError:
                await self._flush()
                continue
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                if self.raw or not data:
                    session.upstream_data(data, Stream.STDOUT, command_seq=self.cmd.seq)
                    await self.client.send_bytes(data)
                    continue
                ch = data[0]
                if ch == STDOUT and self.transfer:
                    session.upstream_data(data[1:], Stream.STDOUT, command_seq=self.cmd.seq, record=False)
                    await self.client.send_bytes(data)
                    continue
                if ch in (STDOUT, STDERR):
                    await self._emit(ch, self.maskers[ch].feed(data[1:]))
                    continue
                masked: dict[str, int] = {}
                if ch == STATUS:
                    await self._flush()
                    self.exit_code = exit_code(data[1:])
                    self.record_result()  # before the client can hang up
                    # kubectl prints a failed exec's message (a runtime error
                    # quoting the command, or a credential an upstream echoes):
                    # masked like any Status document
                    status, masked = self.bodies.mask_document(data[1:])
                    data = bytes([STATUS]) + status
                session.upstream_data(
                    data, Stream.STDOUT, command_seq=self.cmd.seq, record=False, masked=masked
                )
                await self.client.send_bytes(data)
            elif msg.type == WSMsgType.TEXT:
                # no channel protocol sends text (kubectl fails on it without
                # showing it), but it is recorded and another client may show it
                text, masked = self.bodies.mask_bytes(msg.data.encode())
                session.upstream_data(text, Stream.STDOUT, command_seq=self.cmd.seq, masked=masked)
                await self.client.send_str(text.decode("utf-8", "replace"))
            else:
                break
        await self._flush()
        await self.client.close()
