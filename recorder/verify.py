"""Verification of recordings: hash chain, checkpoint signatures, file order.

The hot loop hashes every frame without unpacking its payload; only header
and checkpoint frames (a tiny fraction) are decoded. See
docs/recording-format.md for the rules implemented here.
"""

from __future__ import annotations

import enum
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.compat import UnsupportedVersion, supported
from recorder.format import (
    CHECKPOINT,
    CHECKPOINT_KINDS,
    CK_CLOSE,
    CK_ROTATE,
    EVENT,
    FORMAT_NAME,
    HASH_LEN,
    HEADER,
    TYPE_BYTES,
    checkpoint_sig_input,
    genesis_hash,
    new_hash,
    segment_name,
)
from recorder.keys import key_fingerprint
from recorder.reader import frame_size, make_unpacker, segment_files, tail_problem


class Status(enum.StrEnum):
    OK = "ok"
    INCOMPLETE = "incomplete"  # no close checkpoint (crash, or still being written)
    TORN_TAIL = "torn_tail"  # last file ends inside a frame (crash mid-write)
    TAMPERED = "tampered"


EXIT_CODES = {Status.OK: 0, Status.TAMPERED: 1, Status.TORN_TAIL: 3, Status.INCOMPLETE: 3}
_SEVERITY = {Status.OK: 0, Status.INCOMPLETE: 1, Status.TORN_TAIL: 2, Status.TAMPERED: 3}


def worst(statuses: list[Status]) -> Status:
    return max(statuses, key=_SEVERITY.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class Finding:
    file: str
    frame: int | None
    offset: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.frame is not None:
            where += f" frame {self.frame}"
        if self.offset is not None:
            where += f" (byte {self.offset})"
        return f"{where}: {self.message}"


@dataclass
class SessionVerification:
    session_id: str
    path: Path
    status: Status = Status.OK
    problem: Finding | None = None  # first tampering found
    torn: Finding | None = None
    files: int = 0
    frames: int = 0
    events: int = 0
    checkpoints: int = 0
    signed_events: int = 0  # events covered by the last valid checkpoint
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.problem is not None:
            return f"TAMPERED: {self.problem}"
        if self.status is Status.TORN_TAIL:
            return f"TORN TAIL: {self.torn}"
        if self.status is Status.INCOMPLETE:
            return "INCOMPLETE: no close checkpoint (session crashed or is still running)"
        return "OK"


class _Bad(Exception):
    def __init__(self, frame: int, offset: int, message: str) -> None:
        super().__init__(message)
        self.frame = frame
        self.offset = offset
        self.message = message


@dataclass
class _FileResult:
    path: Path
    header_prev: bytes = b""
    header_seq: int = 0
    end_hash: bytes = b""
    frames: int = 0
    events: int = 0
    end_kind: str | None = None  # kind of the checkpoint that ends the file
    checkpoints: int = 0
    signed_events: int | None = None
    problem: Finding | None = None
    torn: Finding | None = None
    key_fp: str = ""


class _FileVerifier:
    """Verifies one segment file on its own (chain from its header's prev_hash)."""

    def __init__(self, path: Path, session_id: str, segment: int, key: Ed25519PublicKey) -> None:
        self.path = path
        self.sid = session_id
        self.segment = segment
        self.key = key
        self.res = _FileResult(path)
        self.specials = 0  # header + checkpoint frames so far

    def run(self) -> _FileResult:
        try:
            self._run()
        except _Bad as bad:
            self.res.problem = Finding(self.path.name, bad.frame, bad.offset, bad.message)
        return self.res

    def _run(self) -> None:
        res = self.res
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            unpacker = make_unpacker(f)
            i = 0
            consumed = 0
            prev = b""
            try:
                prev, consumed = self._header(unpacker)
                if not prev:
                    return self._tail(f, 0, 0, size)
                i = 1
                nh = new_hash
                tb = TYPE_BYTES
                ended = False
                for t, p, h in unpacker:
                    hh = nh()
                    hh.update(prev)
                    hh.update(tb[t])
                    hh.update(p)
                    d = hh.digest()
                    if d != h:
                        raise _Bad(i, consumed, "hash mismatch (frame altered, or chain broken)")
                    n = len(p)
                    if t != EVENT or ended:
                        ended = self._special(t, p, prev, i, consumed, ended)
                    prev = d
                    consumed += n + (38 if n < 256 else 39 if n < 65536 else 41)
                    i += 1
            except _Bad:
                raise
            except Exception as exc:
                raise _Bad(i, consumed, f"undecodable frame ({type(exc).__name__}: {exc})") from None
            res.frames = i
            res.end_hash = prev
            res.events = i - self.specials
            if consumed != size:
                # Only damaged or torn files get here. `consumed` sums the
                # canonical sizes of the frames read; re-scan to make sure
                # the bytes really were canonical (the hash covers values,
                # not their encoding), then look at what follows them.
                # (Unpacker.tell() cannot be used: after a partial read it
                # counts the bytes of the unfinished frame too.)
                self._check_canonical(i)
                self._tail(f, consumed, i, size)
        return None

    def _header(self, unpacker: msgpack.Unpacker) -> tuple[bytes, int]:
        """Check frame 0; returns (its hash, its size) or (b"", 0) if the file
        holds no complete frame."""
        try:
            frame = unpacker.unpack()
        except msgpack.OutOfData:
            return b"", 0
        if not isinstance(frame, list) or len(frame) != 3 or type(frame[0]) is not int or frame[0] != HEADER:
            raise _Bad(0, 0, "file does not start with a header frame")
        _, payload, digest = frame
        seq, _ts, body = _unpack(payload, 0, 0)
        if not isinstance(body, dict) or body.get("format") != FORMAT_NAME:
            raise _Bad(0, 0, "not a hoopd recording header")
        if not supported(body.get("version")):
            raise UnsupportedVersion(
                f"{self.path}: unsupported recording format version {body.get('version')!r}"
            )
        if body.get("session_id") != self.sid:
            raise _Bad(0, 0, f"header belongs to session {body.get('session_id')!r}")
        if body.get("segment") != self.segment:
            raise _Bad(0, 0, f"header says segment {body.get('segment')!r} (file renamed or moved)")
        prev = body.get("prev_hash")
        if not isinstance(prev, bytes) or len(prev) != HASH_LEN or not isinstance(seq, int):
            raise _Bad(0, 0, "malformed header")
        hh = new_hash()
        hh.update(prev + TYPE_BYTES[HEADER] + payload)
        if hh.digest() != digest:
            raise _Bad(0, 0, "hash mismatch (frame altered, or chain broken)")
        self.res.header_prev = prev
        self.res.header_seq = seq
        self.res.key_fp = str(body.get("key", ""))
        self.specials = 1
        return digest, frame_size(len(payload))

    def _special(self, t: Any, p: bytes, prev: bytes, i: int, offset: int, ended: bool) -> bool:
        """A non-event frame, or any frame after an end checkpoint. Returns
        whether the file must end here."""
        if ended:
            raise _Bad(i, offset, "frame after a rotation/close checkpoint")
        if type(t) is not int or t != CHECKPOINT:
            raise _Bad(i, offset, "unexpected frame type (header in the middle of a file?)")
        seq, _ts, body = _unpack(p, i, offset)
        if not isinstance(body, dict) or body.get("kind") not in CHECKPOINT_KINDS:
            raise _Bad(i, offset, "malformed checkpoint")
        kind = body["kind"]
        if body.get("segment") != self.segment:
            raise _Bad(i, offset, "checkpoint names another segment")
        expected_seq = self.res.header_seq + i - self.specials
        if seq != expected_seq:
            raise _Bad(i, offset, f"checkpoint covers seq {seq}, but {expected_seq} events precede it")
        sig = body.get("sig")
        try:
            if not isinstance(sig, bytes):
                raise InvalidSignature
            self.key.verify(sig, checkpoint_sig_input(self.sid, self.segment, seq, kind, prev))
        except InvalidSignature:
            raise _Bad(i, offset, self._bad_sig_message()) from None
        self.specials += 1
        self.res.checkpoints += 1
        self.res.signed_events = seq
        self.res.end_kind = kind
        return kind in (CK_ROTATE, CK_CLOSE)

    def _bad_sig_message(self) -> str:
        ours = key_fingerprint(self.key)
        if self.res.key_fp and self.res.key_fp != ours:
            return (
                f"checkpoint signature invalid: file says it was signed by {self.res.key_fp}, "
                f"verifying with {ours}"
            )
        return "checkpoint signature invalid (frames before it were altered and re-hashed)"

    def _tail(self, f: Any, end: int, frames: int, size: int) -> None:
        if end >= size:
            return
        f.seek(end)
        problem = tail_problem(f.read())
        if problem is not None:
            raise _Bad(frames, end, problem)
        if self.res.end_kind in (CK_ROTATE, CK_CLOSE):
            raise _Bad(frames, end, "bytes after a rotation/close checkpoint")
        self.res.torn = Finding(self.path.name, frames, end, f"partial frame ({size - end} bytes)")

    def _check_canonical(self, frames: int) -> None:
        with open(self.path, "rb") as f:
            unpacker = make_unpacker(f)
            offset = 0
            for i in range(frames):
                _t, p, _h = unpacker.unpack()
                if unpacker.tell() - offset != frame_size(len(p)):
                    raise _Bad(i, offset, "frame is not canonically encoded (framing altered)")
                offset = unpacker.tell()


def _unpack(payload: Any, i: int, offset: int) -> tuple[int, int, Any]:
    try:
        seq, ts, body = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        raise _Bad(i, offset, "undecodable header/checkpoint payload") from None
    return seq, ts, body


# ---------------------------------------------------------------- sessions
def verify_session(session_dir: Path, key: Ed25519PublicKey, jobs: int = 1) -> SessionVerification:
    """Verify every segment of one session directory."""
    return verify_sessions([session_dir], key, jobs)[0]


def verify_sessions(
    session_dirs: list[Path], key: Ed25519PublicKey, jobs: int = 1
) -> list[SessionVerification]:
    """Verify sessions, checking up to ``jobs`` segment files at once.

    Verification is CPU-bound hashing, and every segment file can be checked
    on its own (from its header's prev_hash), so files are spread over worker
    processes; _combine then joins each session's files in order, exactly as
    when they are checked one after another.
    """
    outs: list[SessionVerification] = []
    tasks: list[tuple[Path, str, int]] = []
    pending: list[tuple[SessionVerification, int, int]] = []  # out, first task, count
    for session_dir in session_dirs:
        out, segs = _plan(session_dir)
        outs.append(out)
        if segs:
            pending.append((out, len(tasks), len(segs)))
            tasks += [(path, out.session_id, n) for n, path in segs]
    results = _verify_files(tasks, key, jobs)
    for out, first, count in pending:
        _combine(out, results[first : first + count], genesis_hash(out.session_id))
    return outs


def _plan(session_dir: Path) -> tuple[SessionVerification, list[tuple[int, Path]]]:
    """The session's result so far and the segment files still to check
    (none when the listing alone decides)."""
    out = SessionVerification(session_id=session_dir.name, path=session_dir)
    segs = segment_files(session_dir)
    out.files = len(segs)
    if not segs:
        out.status = Status.INCOMPLETE
        out.notes.append("no segment files")
        return out, []
    for expected, (number, _path) in enumerate(segs, start=1):
        if number != expected:
            _tampered(out, Finding(segment_name(expected), None, None, "segment file missing"))
            return out, []
    return out, segs


def _verify_files(
    tasks: list[tuple[Path, str, int]], key: Ed25519PublicKey, jobs: int
) -> list[_FileResult]:
    if jobs <= 1 or len(tasks) <= 1:
        return [_FileVerifier(path, sid, n, key).run() for path, sid, n in tasks]
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # fork: workers start in milliseconds and need nothing re-imported; the
    # replay CLI that calls this runs no other threads.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
        futures = [pool.submit(_verify_file, path, sid, n, raw_key) for path, sid, n in tasks]
        return [f.result() for f in futures]


def _verify_file(path: Path, session_id: str, segment: int, raw_key: bytes) -> _FileResult:
    """Worker-process entry point (a key object cannot be pickled; its bytes can)."""
    key = Ed25519PublicKey.from_public_bytes(raw_key)
    return _FileVerifier(path, session_id, segment, key).run()


def _tampered(out: SessionVerification, finding: Finding) -> SessionVerification:
    out.status = Status.TAMPERED
    out.problem = finding
    return out


def _combine(
    out: SessionVerification, results: list[_FileResult], genesis: bytes
) -> SessionVerification:
    prev_end = genesis
    seq = 0
    last = len(results) - 1
    for idx, r in enumerate(results):
        out.frames += r.frames
        out.events += r.events
        out.checkpoints += r.checkpoints
        if r.problem is not None:
            return _tampered(out, r.problem)
        crash_rotation = idx == last and idx > 0 and _crashed_while_rotating(results[idx - 1], r)
        if r.frames and not crash_rotation and (r.header_prev != prev_end or r.header_seq != seq):
            return _tampered(
                out,
                Finding(
                    r.path.name,
                    0,
                    0,
                    "header does not continue the previous segment (file dropped, reordered or swapped)",
                ),
            )
        if r.signed_events is not None:
            out.signed_events = r.signed_events
        crash_next = idx + 1 == last and _crashed_while_rotating(r, results[idx + 1])
        if idx < last and r.end_kind != CK_ROTATE and not crash_next:
            at = r.torn or Finding(r.path.name, r.frames, None, "")
            return _tampered(
                out,
                Finding(r.path.name, at.frame, at.offset, "segment does not end with a rotation checkpoint but a later segment exists"),
            )
        if crash_rotation:
            out.notes.append(f"crashed while rotating to {r.path.name}")
        prev_end = r.end_hash
        seq = r.header_seq + r.events
    return _final_status(out, results)


def _crashed_while_rotating(before: _FileResult, after: _FileResult) -> bool:
    """The writer makes segment N+1's header durable before it appends the
    rotation checkpoint to N: a crash in between leaves N without that
    checkpoint and N+1 holding just its header."""
    # Killed right after the file was created, N+1 may also be empty or hold
    # part of its header.
    if before.end_kind == CK_ROTATE:
        return False
    if after.frames == 1:
        return after.torn is None
    return after.frames == 0


def _final_status(out: SessionVerification, results: list[_FileResult]) -> SessionVerification:
    tail = results[-1]
    prior = results[-2] if len(results) > 1 else None
    if tail.end_kind == CK_ROTATE:
        return _tampered(
            out,
            Finding(
                segment_name(len(results) + 1),
                None,
                None,
                f"segment missing ({tail.path.name} ends with a rotation checkpoint)",
            ),
        )
    torn = tail.torn or (prior.torn if prior is not None else None)
    if torn is not None:
        out.status = Status.TORN_TAIL
        out.torn = torn
    elif tail.end_kind != CK_CLOSE:
        out.status = Status.INCOMPLETE
    unsigned = out.events - out.signed_events
    if unsigned:
        out.notes.append(
            f"{unsigned} event(s) after the last signed checkpoint are only chain-consistent"
        )
    return out


def find_sessions(path: Path) -> list[Path]:
    """A session directory itself, or every session directory under path."""
    from recorder.reader import list_session_dirs

    if segment_files(path):
        return [path]
    return list_session_dirs(path)
