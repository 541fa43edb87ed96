"""After an error in an extended batch the server ignores every message up
to Sync -- a simple Query too. The gateway expected an answer to such a
Query, and from then on took each answer for the one before: the rows of
the next query were attributed to no statement and reached the client
unmasked."""

from __future__ import annotations

import socket
import time

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _raw_session

READY = b"Z\x00\x00\x00\x05"


def _until(s: socket.socket, marker: bytes, timeout: float = 15.0) -> bytes:
    buf = b""
    s.settimeout(timeout)
    end = time.monotonic() + timeout
    while marker not in buf and time.monotonic() < end:
        chunk = s.recv(65536)
        assert chunk, buf
        buf += chunk
    assert marker in buf, buf
    return buf


def test_query_ignored_after_an_extended_error(gateway: Gateway) -> None:
    s = _raw_session(gateway, "db")
    s.sendall(w.parse("bad", "selec 1") + w.message(w.H))
    assert b"42601" in _until(s, b"42601")
    s.sendall(w.query("select 'ignored'"))  # the server skips it
    time.sleep(0.3)
    s.sendall(w.sync())
    _until(s, READY)
    s.sendall(w.query("select email, ssn from people order by id"))
    out = _until(s, READY)
    assert b"ann@example.com" not in out and b"123-45-6789" not in out, out
    assert b"[EMAIL" in out, out
    s.sendall(w.query("select 'still in step' as x"))
    out = _until(s, READY)
    s.close()
    assert b"still in step" in out


def test_copy_probe_sent_into_a_failing_batch(gateway: Gateway) -> None:
    """A COPY TO STDOUT while the server skips to Sync: the gateway's
    column probe (with a Sync of its own) ended that state early, so the
    client's next extended messages ran -- with the gateway still taking
    them for skipped, their rows attributed to nothing, unmasked."""
    s = _raw_session(gateway, "db")
    s.sendall(w.parse("bad", "selec 1") + w.message(w.H))
    assert b"42601" in _until(s, b"42601")
    s.sendall(w.query("copy people to stdout"))
    time.sleep(0.5)
    s.sendall(
        w.parse("", "select email, ssn from people order by id")
        + w.bind("", "")
        + w.execute("")
        + w.message(w.H)
    )
    time.sleep(0.5)
    s.sendall(w.sync())
    out = _until(s, READY)
    assert b"ann@example.com" not in out and b"123-45-6789" not in out, out
    s.sendall(w.query("select email, ssn from people order by id"))
    out = _until(s, READY)
    assert b"ann@example.com" not in out and b"123-45-6789" not in out, out
    assert b"[EMAIL" in out, out
    s.sendall(w.query("select 'still in step' as x"))
    _until(s, b"still in step")
    s.close()
