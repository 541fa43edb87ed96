"""The relay's fast path for a whole simple-query result
(``ClientConnection._one_result``) leaves exactly what the general loop in
``_backend`` leaves: the same bytes to the client and the same recorded
events, whatever the answers and however the server's bytes are split.

In-process: a real gateway (recorder, scorer, masking) and client handshake,
the upstream login replaced by a fake one and no-op transports."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hoopd.config import parse_config
from hoopd.registry import Registry
from hoopd.server import Daemon
from protocols.postgres import _catalog, _client
from protocols.postgres import _wire as w
from tests.helpers import free_port
from tests.support.pg_inproc import (
    event_records,
    fake_catalog_connect,
    fake_connect,
    open_client,
    play,
)

Env = tuple[asyncio.AbstractEventLoop, Any]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("relay")
    raw = {
        "gateway": {"data_dir": str(work / "var"), "log_level": "warning"},
        "connections": [
            {
                "name": "db",
                "protocol": "postgres",
                "listen": f"127.0.0.1:{free_port()}",
                "upstream": {"host": "127.0.0.1", "port": 9, "user": "u", "sslmode": "disable"},
                "auth": "none",
                "options": {"max_client_message": "1MiB"},
                "masking": {
                    "rules": [
                        {"id": "secret-word", "pattern": "s3cr3t-[0-9]+"},
                        {"id": "ssn-col", "fields": ["ssn"]},
                    ]
                },
            }
        ],
    }
    registry = Registry.from_entry_points()
    daemon = Daemon(parse_config(raw, registry), registry)
    loop = asyncio.new_event_loop()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_client, "connect", fake_connect)
        mp.setattr(_catalog, "connect", fake_catalog_connect)
        loop.run_until_complete(daemon.start())
        yield loop, daemon
        loop.run_until_complete(daemon.stop())
    loop.close()


def _row_description(name: str) -> bytes:
    field = name.encode() + b"\0" + struct.pack("!IhIhih", 16397, 1, 25, -1, -1, 0)
    return w.message(w.ROW_DESCRIPTION, struct.pack("!h", 1) + field)


value = st.sampled_from([b"0", b"42", b"hello", b"s3cr3t-7", b"no s3cr3t here"])
statement = st.one_of(
    st.tuples(
        st.just("rows"),
        st.sampled_from(["abalance", "ssn", "note"]),
        st.lists(value, max_size=4),
        st.booleans(),  # a tag without a count (SHOW): the rows seen are recorded
    ),
    st.tuples(st.just("tag"), st.sampled_from(["INSERT 0 1", "BEGIN", "SET", "UPDATE 3"])),
    st.tuples(st.just("empty")),
    st.tuples(st.just("error")),
)
query = st.lists(statement, min_size=1, max_size=3)
group = st.lists(query, min_size=1, max_size=3)
"""Queries a client sends before reading the answers (pipelined)."""
PLAYS = (
    st.lists(group, min_size=1, max_size=4),
    st.lists(st.integers(0, 2000), max_size=4),  # where the answers are split
    st.booleans(),  # a group's queries in one write
)
"""The arguments of ``play``: groups, cuts, joined."""


def _answer(stmts: list[tuple[Any, ...]]) -> bytes:
    out = []
    for stmt in stmts:
        if stmt[0] == "rows":
            out.append(_row_description(stmt[1]))
            out += [w.data_row([v]) for v in stmt[2]]
            out.append(w.command_complete("SHOW" if stmt[3] else f"SELECT {len(stmt[2])}"))
        elif stmt[0] == "tag":
            out.append(w.command_complete(stmt[1]))
        elif stmt[0] == "empty":
            out.append(w.message(w.EMPTY_QUERY))
        else:
            out.append(w.error_response("42P01", "relation does not exist"))
            break
    out.append(w.ready_for_query(b"I"))
    return b"".join(out)


async def _run(daemon: Any, groups: list[list[Any]], cuts: list[int], joined: bool) -> Any:
    conn, sink, events = await open_client(daemon.handlers["db"])
    play(conn, groups, _answer, cuts, joined)
    return bytes(sink.data), event_records(events)


def _both(env: Env, groups: list[list[Any]], cuts: list[int], joined: bool) -> tuple[Any, Any]:
    loop, daemon = env
    out = []
    for fast in (True, False):
        _client.FAST_RESULT = fast
        try:
            out.append(loop.run_until_complete(_run(daemon, groups, cuts, joined)))
        finally:
            _client.FAST_RESULT = True
    return out[0], out[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*PLAYS)
def test_fast_result_path_is_the_general_loop(
    env: Env, groups: list[list[Any]], cuts: list[int], joined: bool
) -> None:
    fast, general = _both(env, groups, cuts, joined)
    assert fast == general


async def _run_learning(daemon: Any, groups: list[list[Any]], cuts: list[int], joined: bool) -> Any:
    """As _run, but the catalog does not know the table yet: the first
    result waits at its RowDescription for the (fake) lookup connection."""
    conn, sink, events = await open_client(daemon.handlers["db"])
    conn._db.forget()
    play(conn, groups, _answer, cuts, joined, close=False)
    if groups[0][0][0][0] == "rows":  # the first answer starts with a RowDescription
        assert conn._held_up is not None, "the result did not wait for the catalog"
    for _ in range(100):
        await asyncio.sleep(0)
        if conn._held_up is None:
            break
    assert conn._held_up is None
    conn.connection_lost(None)
    return bytes(sink.data), event_records(events)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(*PLAYS)
def test_waiting_for_the_catalog_changes_nothing(
    env: Env, groups: list[list[Any]], cuts: list[int], joined: bool
) -> None:
    """Server bytes held while the catalog is asked (split anywhere, more
    arriving meanwhile) reach the client, and the recording, exactly as
    when the names were known already."""
    loop, daemon = env
    known = loop.run_until_complete(_run(daemon, groups, cuts, joined))
    learned = loop.run_until_complete(_run_learning(daemon, groups, cuts, joined))
    assert learned[0] == known[0]
    # Events may come in another order (a later query recorded before an
    # earlier result that waited) and rows in other chunks: the same events
    # with the same counts, the same bytes recorded as sent.
    assert _unordered(learned[1]) == _unordered(known[1])


def _unordered(records: list[list[Any]]) -> tuple[list[str], str, dict[str, int]]:
    import json

    others = sorted(json.dumps(r, sort_keys=True) for r in records if r[0] != "output")
    outputs = [r[1] for r in records if r[0] == "output"]
    masked: dict[str, int] = {}
    for o in outputs:
        for k, n in o.get("masked", {}).items():
            masked[k] = masked.get(k, 0) + n
    return others, "".join(o["data"] for o in outputs), masked


def test_pgbench_select_takes_the_fast_path(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = []
    real = _client.ClientConnection._one_result

    def counting(self: Any, *args: Any) -> Any:
        result = real(self, *args)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(_client.ClientConnection, "_one_result", counting)
    groups = [[[("rows", "abalance", [b"0"], False)]]] * 3 + [[[("tag", "BEGIN")]]]
    fast, general = _both(env, groups, [], False)
    assert fast == general
    # (the first RowDescription may be new: the loop decodes it, then it is cached)
    assert len(taken) == 4 and taken[1:] == [True, True, True]
    kinds = [t for t, _ in fast[1]]
    assert kinds[:4] == ["command", "decision", "result", "output"]


@pytest.mark.parametrize("after_a_result", [False, True])
def test_rows_of_no_statement_end_the_session_unsent(env: Env, after_a_result: bool) -> None:
    """Rows the tracker cannot give a statement (the gateway and the server
    disagree about what runs) cannot be masked by column: fail closed, with
    a FATAL in the protocol's terms, and the rows are not passed on."""
    loop, daemon = env

    async def go() -> tuple[bytes, Any]:
        conn, sink, _ = await open_client(daemon.handlers["db"])
        answer = b""
        if after_a_result:
            conn.data_received(w.query("SELECT 1"))
            answer = _answer([("rows", "note", [b"fine"], False)])
        stray = _row_description("ssn") + w.data_row([b"123-45-6789"]) + w.command_complete("SELECT 1")
        if answer:
            conn.up.data_received(answer)
        conn.up.data_received(stray + w.ready_for_query(b"I"))
        return bytes(sink.data), sink

    out, sink = loop.run_until_complete(go())
    assert b"123-45-6789" not in out
    assert b"match no statement the gateway tracked" in out and b"08P01" in out
    assert (b"fine" in out) == after_a_result
    assert sink.is_closing()


def test_login_settings_and_notices_are_masked(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the database says during its login (a setting from ``ALTER ROLE
    ... SET application_name``, a notice) is masked like the same messages
    later in the session."""
    loop, daemon = env

    async def connect(upstream: Any, startup: dict[str, str]) -> tuple[Any, Any]:
        up, login = await fake_connect(upstream, startup)
        login.parameters.append(("application_name", "batch s3cr3t-42"))
        login.notices.append(w.message(w.NOTICE, b"SNOTICE\0C00000\0Mwelcome s3cr3t-7\0\0"))
        return up, login

    monkeypatch.setattr(_client, "connect", connect)

    async def go() -> bytes:
        conn, sink, _ = await open_client(daemon.handlers["db"], keep_handshake=True)
        conn.connection_lost(None)
        return bytes(sink.data)

    out = loop.run_until_complete(go())
    assert b"application_name\0batch [" in out and b"welcome [" in out, out
    assert b"s3cr3t" not in out, out
    assert b"server_version\x0015.8\0" in out


def test_a_client_message_over_max_client_message_ends_the_session(env: Env) -> None:
    """options.max_client_message bounds what one session can make the
    gateway hold: the message is refused at its header, before it is read."""
    loop, daemon = env

    async def go() -> tuple[bytes, bytes, Any]:
        conn, sink, _ = await open_client(daemon.handlers["db"])
        conn.data_received(w.query("SELECT 1"))
        first = bytes(sink.data)
        big = w.query("SELECT '" + "x" * (1024 * 1024) + "'")
        conn.data_received(big[:4096])  # the header says more than 1 MiB
        return first, bytes(sink.data), sink

    first, out, sink = loop.run_until_complete(go())
    assert b"08P01" not in first
    assert b"08P01" in out and b"is longer than the limit of 1048576" in out, out
    assert sink.is_closing()
