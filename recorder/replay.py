"""Offline views of recordings: summaries, timelines, playback, export.

Pure functions over recorded events; the argparse layer is recorder/cli.py.
"""

from __future__ import annotations

import base64
import codecs
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hoopd.model import (
    ApprovalEvent,
    Command,
    CommandResult,
    Decision,
    ErrorEvent,
    Output,
    Resize,
    SessionEnd,
    SessionStart,
    Stream,
    Verdict,
)
from recorder.format import FORMAT_VERSION
from recorder.reader import RecordedEvent, SessionReader, list_session_dirs, segment_files

TERMINAL_STREAMS = (Stream.STDOUT, Stream.STDERR)


class UsageError(Exception):
    """Bad arguments (unknown session, ambiguous prefix...): exit code 2."""


def resolve_session(recordings_dir: Path, session_id: str) -> Path:
    """The session directory for an id or a unique id prefix."""
    if not recordings_dir.is_dir():
        raise UsageError(f"{recordings_dir}: not a directory")
    exact = recordings_dir / session_id
    if "/" not in session_id and exact.is_dir() and segment_files(exact):
        return exact
    matches = [d for d in list_session_dirs(recordings_dir) if d.name.startswith(session_id)]
    if not matches:
        raise UsageError(f"no session {session_id!r} in {recordings_dir}")
    if len(matches) > 1:
        names = ", ".join(d.name for d in matches[:5])
        raise UsageError(f"session prefix {session_id!r} is ambiguous: {names}")
    return matches[0]


@dataclass
class SessionSummary:
    session_id: str
    path: Path
    user: str = ""
    connection: str = ""
    protocol: str = ""
    client_addr: str = ""
    gateway: str = ""
    start_ns: int = 0
    end_ns: int = 0
    commands: int = 0
    decisions: int = 0
    approvals: int = 0
    masked: int = 0
    bytes: int = 0
    end_reason: str = ""
    verification: str = "unverified"
    problems: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def to_json(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "user": self.user,
            "connection": self.connection,
            "protocol": self.protocol,
            "client_addr": self.client_addr,
            "gateway": self.gateway,
            "start": iso(self.start_ns),
            "duration_s": round(self.duration, 3),
            "commands": self.commands,
            "decisions": self.decisions,
            "approvals": self.approvals,
            "masked": self.masked,
            "bytes": self.bytes,
            "end_reason": self.end_reason,
            "verification": self.verification,
        }


def iso(ts_ns: int) -> str:
    if not ts_ns:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_ns / 1e9))


def read_events(session_dir: Path) -> tuple[list[RecordedEvent], list[str]]:
    reader = SessionReader(session_dir)
    events = list(reader.events())
    return events, reader.problems


def summarize(session_dir: Path, events: Iterable[RecordedEvent]) -> SessionSummary:
    s = SessionSummary(session_id=session_dir.name, path=session_dir)
    for rec in events:
        ev = rec.event
        if not s.start_ns:
            s.start_ns = rec.ts_ns
        s.end_ns = rec.ts_ns
        if isinstance(ev, SessionStart):
            s.user = ev.identity.subject
            s.connection, s.protocol = ev.connection, ev.protocol
            s.client_addr, s.gateway = ev.client_addr, ev.gateway
            s.start_ns = rec.ts_ns
        elif isinstance(ev, Command):
            s.commands += 1
        elif isinstance(ev, Decision):
            s.decisions += 1
        elif isinstance(ev, ApprovalEvent):
            s.approvals += 1
        elif isinstance(ev, Output):
            s.bytes += len(ev.data)
            s.masked += sum(ev.masked.values())
        elif isinstance(ev, SessionEnd):
            s.end_reason = ev.reason
    return s


# ------------------------------------------------------------------ timeline
def describe(ev: object) -> str:
    """One human line for an event in `show`."""
    if isinstance(ev, SessionStart):
        ident = ev.identity
        return (
            f"session start: {ident.subject} ({ident.method.value}) from {ev.client_addr} "
            f"to {ev.connection} [{ev.protocol}]" + (f" via {ev.gateway}" if ev.gateway else "")
        )
    if isinstance(ev, Command):
        return f"command #{ev.seq} [{ev.kind.value}] {ev.text}"
    if isinstance(ev, Decision):
        extra = f" rules={','.join(ev.rule_ids)}" if ev.rule_ids else ""
        extra += f" reasons={'; '.join(ev.reasons)}" if ev.reasons else ""
        if ev.approver:
            # The reviewer who decided: it approved an ALLOW, refused a DENY.
            extra += f" {'approved' if ev.verdict is Verdict.ALLOW else 'decided'}-by={ev.approver}"
        extra += " BREAK-GLASS" if ev.break_glass else ""
        return f"decision #{ev.command_seq} {ev.verdict.value.upper()} risk={ev.risk}{extra}"
    if isinstance(ev, ApprovalEvent):
        who = f" by {ev.reviewer}" if ev.reviewer else ""
        note = f" ({ev.comment})" if ev.comment else ""
        return f"approval {ev.approval_id} for #{ev.command_seq}: {ev.state}{who}{note}"
    if isinstance(ev, CommandResult):
        rows = f", {ev.rows} rows" if ev.rows is not None else ""
        err = f" error: {ev.error}" if ev.error else ""
        return f"result #{ev.command_seq} {ev.status} ({ev.duration_ms:g} ms{rows}){err}"
    if isinstance(ev, Output):
        masked = ", ".join(f"{k}={v}" for k, v in sorted(ev.masked.items()))
        return (
            f"output {ev.stream.value} {len(ev.data)} bytes"
            + (f" #{ev.command_seq}" if ev.command_seq else "")
            + (f" masked: {masked}" if masked else "")
        )
    if isinstance(ev, Resize):
        return f"resize {ev.cols}x{ev.rows}"
    if isinstance(ev, ErrorEvent):
        return f"error {ev.code}: {ev.message}".replace(" :", ":")
    if isinstance(ev, SessionEnd):
        err = f" ({ev.error})" if ev.error else ""
        return f"session end: {ev.reason}{err}, {ev.bytes_in} bytes in, {ev.bytes_out} bytes out"
    return repr(ev)


def timeline(events: list[RecordedEvent], include_output: bool = True) -> Iterator[str]:
    t0 = events[0].ts_ns if events else 0
    for rec in events:
        if not include_output and isinstance(rec.event, Output) and not rec.event.masked:
            continue
        yield f"{(rec.ts_ns - t0) / 1e9:+10.3f}s  {describe(rec.event)}"


# ---------------------------------------------------------------------- play
def play(
    events: list[RecordedEvent],
    out: IO[bytes],
    *,
    speed: float = 1.0,
    start_from: float = 0.0,
    max_idle: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write terminal output with its original timing; returns bytes written.

    Output before ``start_from`` is written at once (fast-forward) so the
    terminal is in the right state when timed playback starts.
    """
    if not events:
        return 0
    origin = events[0].ts_ns + int(start_from * 1e9)
    clock = origin
    written = 0
    for rec in events:
        ev = rec.event
        if not isinstance(ev, Output) or ev.stream not in TERMINAL_STREAMS:
            continue
        if rec.ts_ns > clock:
            gap = min((rec.ts_ns - clock) / 1e9, max_idle) / speed
            if gap > 0:
                sleep(gap)
            clock = rec.ts_ns
        out.write(ev.data)
        out.flush()
        written += len(ev.data)
    return written


# -------------------------------------------------------------------- export
def provenance(summary: SessionSummary, fingerprint: str) -> dict[str, Any]:
    return {
        "session_id": summary.session_id,
        "user": summary.user,
        "connection": summary.connection,
        "protocol": summary.protocol,
        "client_addr": summary.client_addr,
        "gateway": summary.gateway,
        "start": iso(summary.start_ns),
        "verification": summary.verification,
        "key_fingerprint": fingerprint,
        "recording_format_version": FORMAT_VERSION,
    }


def export_asciicast(
    events: list[RecordedEvent], summary: SessionSummary, fingerprint: str, out: IO[str]
) -> None:
    """asciicast v2: header line, then [time, code, data] lines."""
    width, height = 80, 24
    for rec in events:
        if isinstance(rec.event, Resize):
            width, height = rec.event.cols, rec.event.rows
            break
        if isinstance(rec.event, Output):
            break
    header = {
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": summary.start_ns // 1_000_000_000,
        "title": f"hoopd session {summary.session_id} ({summary.user} on {summary.connection})",
        "env": {"TERM": "xterm-256color"},
        "hoopd": provenance(summary, fingerprint),
    }
    out.write(json.dumps(header) + "\n")
    t0 = events[0].ts_ns if events else 0
    # One incremental decoder per stream: a UTF-8 character split across two
    # chunks must not turn into two replacement characters.
    decoders = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in TERMINAL_STREAMS}
    for rec in events:
        ev = rec.event
        t = round((rec.ts_ns - t0) / 1e9, 6)
        if isinstance(ev, Output) and ev.stream in TERMINAL_STREAMS:
            text = decoders[ev.stream].decode(ev.data)
            if text:
                out.write(json.dumps([t, "o", text]) + "\n")
        elif isinstance(ev, Resize):
            out.write(json.dumps([t, "r", f"{ev.cols}x{ev.rows}"]) + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def export_jsonl(
    events: list[RecordedEvent], summary: SessionSummary, fingerprint: str, out: IO[str]
) -> None:
    """One JSON object per line; the first is the provenance header.
    bytes become {"base64": ...} so the export is lossless."""
    out.write(json.dumps({"type": "header", **provenance(summary, fingerprint)}) + "\n")
    for rec in events:
        line = {"seq": rec.seq, "ts_ns": rec.ts_ns, "type": rec.event.type_name}
        line.update(_jsonable(rec.event.to_record()))
        out.write(json.dumps(line) + "\n")


# -------------------------------------------------------------------- search
def text_matches(events: list[RecordedEvent], needle: str) -> list[str]:
    """Lines (commands, output lines) containing needle, case-insensitively."""
    low = needle.lower()
    hits = []
    for rec in events:
        ev = rec.event
        if isinstance(ev, Command) and low in ev.text.lower():
            hits.append(f"command #{ev.seq}: {ev.text}")
        elif isinstance(ev, Output):
            for line in ev.data.decode("utf-8", "replace").splitlines():
                if low in line.lower():
                    hits.append(f"{ev.stream.value}: {line.strip()}")
    return hits
