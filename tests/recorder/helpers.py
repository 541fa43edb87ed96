"""Shared helpers for recorder tests: a fixed key, event strategies, a
synchronous "record these events" function."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import strategies as st

from hoopd.model import (
    ApprovalEvent,
    AuthMethod,
    Command,
    CommandKind,
    CommandResult,
    Decision,
    ErrorEvent,
    Event,
    Identity,
    Output,
    Resize,
    SessionEnd,
    SessionStart,
    Stream,
    Verdict,
)
from recorder.reader import SessionReader
from recorder.writer import Recorder, RecorderSettings

# Fixed so that golden files and test expectations are reproducible.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))

text = st.text(max_size=20)
small = st.integers(min_value=0, max_value=2**31)
identities = st.builds(
    Identity,
    subject=text,
    groups=st.frozensets(text, max_size=3),
    method=st.sampled_from(AuthMethod),
    email=text,
)
events: st.SearchStrategy[Event] = st.one_of(
    st.builds(
        SessionStart,
        session_id=text,
        connection=text,
        protocol=text,
        identity=identities,
        client_addr=text,
        attrs=st.dictionaries(text, st.integers(-(2**63), 2**64 - 1) | text, max_size=3),
    ),
    st.builds(SessionEnd, reason=text, error=text, bytes_in=small, bytes_out=small),
    st.builds(Command, seq=small, kind=st.sampled_from(CommandKind), text=text),
    st.builds(
        Decision,
        command_seq=small,
        verdict=st.sampled_from(Verdict),
        risk=st.integers(0, 100),
        reasons=st.lists(text, max_size=3).map(tuple),
    ),
    st.builds(ApprovalEvent, approval_id=text, command_seq=small, state=text),
    st.builds(
        Output,
        stream=st.sampled_from(Stream),
        data=st.binary(max_size=600),
        command_seq=small,
        masked=st.dictionaries(text, small, max_size=2),
    ),
    st.builds(Resize, cols=small, rows=small),
    st.builds(
        CommandResult,
        command_seq=small,
        status=text,
        duration_ms=st.floats(allow_nan=False),
        rows=st.none() | small,
    ),
    st.builds(ErrorEvent, message=text, code=text),
)


def record(
    directory: Path,
    session_id: str,
    evs: Iterable[Event],
    *,
    close: bool = True,
    key: Ed25519PrivateKey = KEY,
    **settings: Any,
) -> Path:
    """Write a session with a real Recorder and return its directory."""
    settings.setdefault("fsync", "never")
    rec = Recorder(RecorderSettings(dir=directory, **settings), key)
    if close:
        rec.start()
    sess = rec.open_session(session_id)
    for ev in evs:
        sess.write(ev)
    if close:
        sess.close()
        rec.close()
    else:
        # Like a crash after every frame reached the file: drive the writer
        # loop by hand (no thread), then drop the files without the close
        # checkpoint.
        while rec._queue:
            rec._process_batch()
            rec._flush_dirty()
        for chain in rec._chains.values():
            chain.abandon()
    return directory / session_id


def read_back(session_dir: Path) -> list[Event]:
    reader = SessionReader(session_dir)
    out = [r.event for r in reader.events()]
    assert not reader.problems, reader.problems
    return out


def sample_session() -> Sequence[Event]:
    ident = Identity("alice", frozenset({"dba"}), AuthMethod.OIDC, email="alice@example.com")
    return [
        SessionStart("sess-1", "prod-db", "postgres", ident, "10.0.0.7:5123", gateway="gw1"),
        Resize(100, 30),
        Command(1, CommandKind.SQL, "SELECT * FROM users"),
        Decision(1, Verdict.MASK, risk=20, reasons=("pii",), rule_ids=("r1",)),
        Output(Stream.STDOUT, b"id | email\n1 | ****\n", command_seq=1, masked={"email": 1}),
        CommandResult(1, "SELECT 1", duration_ms=3.5, rows=1),
        Command(2, CommandKind.SQL, "DROP TABLE users"),
        Decision(2, Verdict.REVIEW, risk=90, reasons=("destructive",)),
        ApprovalEvent("ap-1", 2, "pending", command_hash="abc"),
        ApprovalEvent("ap-1", 2, "approved", reviewer="bob"),
        Output(Stream.STDERR, b"ERROR: permission denied\n", command_seq=2),
        SessionEnd("client_closed", bytes_in=100, bytes_out=200),
    ]
