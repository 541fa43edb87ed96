"""The gateway reads statement text as UTF-8; the server reads it in the
client's encoding. In SJIS, BIG5, GBK... a multi-byte character can end in
a backslash byte, so ``select E'<0x95>\\'; delete from victims; --'`` is one
harmless string to the gateway and, to the server, a SELECT of one SJIS
character followed by ``delete from victims``: it ran without review."""

from __future__ import annotations

import socket

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _read_until
from tests.postgres.test_query_while_discarding import READY, _until
from tests.postgres.test_stale_statement import _refused, _reset, _victims
from tests.support.pgserver import PgServer

ATTACK = b"select E'\x95\\'; delete from victims; --'"


def _session(gateway: Gateway, conn: str, **params: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gateway.ports[conn]), timeout=20)
    s.sendall(w.startup_message({"user": "x", "database": "postgres", **params}))
    assert s.recv(9)[:1] == b"R"
    s.sendall(w.password_message(gateway.token))
    _read_until(s, w.ready_for_query(b"I"))
    return s


def _query(raw: bytes) -> bytes:
    return w.message(w.Q, raw + b"\0")


def test_sjis_backslash_hides_a_delete(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    s = _session(gateway, "quick")
    s.sendall(w.query("set client_encoding = 'SJIS'"))
    assert b"SJIS" in _until(s, READY)
    s.sendall(_query(ATTACK))
    out = _until(s, READY)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_encoding_changed_in_the_same_write(gateway: Gateway, pg: PgServer) -> None:
    """Pipelined behind the SET: judged before the server reports it."""
    _reset(pg)
    s = _session(gateway, "quick")
    s.sendall(w.query("set client_encoding = 'SJIS'") + _query(ATTACK))
    out = _until(s, READY)
    out += _until(s, READY) if out.count(READY) < 2 else b""
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_encoding_from_the_startup_packet(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    s = _session(gateway, "quick", client_encoding="BIG5")
    s.sendall(_query(b"select E'\xa4\\'; delete from victims; --'"))
    out = _until(s, READY)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_utf8_text_still_runs(gateway: Gateway) -> None:
    s = _session(gateway, "quick")
    s.sendall(w.query("select 'déjà vu' as x"))
    out = _until(s, READY)
    assert "déjà vu".encode() in out and b"NOTICE" not in out, out
    # after a change of encoding is answered, back to normal
    s.sendall(w.query("set client_encoding = 'UTF8'"))
    _until(s, READY)
    s.sendall(w.query("select 'naïve' as x"))
    out = _until(s, READY)
    s.close()
    assert "naïve".encode() in out and b"42501" not in out, out


SCS_ATTACK = "select '\\'' ; delete from victims; -- '"
"""With standard_conforming_strings on (the gateway's reading) one string
literal; with it off, the string ends at the third quote and the DELETE runs."""


def test_standard_conforming_strings_off(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    s = _session(gateway, "quick")
    s.sendall(w.query("set standard_conforming_strings = off"))
    _until(s, READY)
    s.sendall(w.query(SCS_ATTACK))
    out = _until(s, READY)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_standard_conforming_strings_off_from_startup(gateway: Gateway, pg: PgServer) -> None:
    _reset(pg)
    s = _session(gateway, "quick", standard_conforming_strings="off")
    s.sendall(w.query(SCS_ATTACK))
    out = _until(s, READY)
    s.close()
    assert _refused(out), out
    assert _victims(pg) == "10"


def test_backslashes_run_with_standard_strings(gateway: Gateway) -> None:
    s = _session(gateway, "quick")
    s.sendall(w.query("select 'a1' ~ '\\d' as x, E'tab\\there' as y"))
    out = _until(s, READY)
    s.close()
    assert b"SELECT 1" in out and b"42501" not in out, out
