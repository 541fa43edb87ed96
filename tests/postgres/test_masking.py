"""Masking through real clients, checked value by value against what the
rules promise (docs/postgres.md, "Masking in the stream"): a rule never lets
the value through, and what replaces it is something the client's type
loaders accept."""

from __future__ import annotations

import asyncpg
import psycopg

from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer


def test_pipeline_column_rule_applies_to_every_statement(gateway: Gateway) -> None:
    # psycopg pipelines Parse/Bind/Describe/Execute of the unnamed statement
    # and portal for each query: the first Describe's answer arrives after the
    # second Bind re-used the name, and must still describe the first result.
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        with conn.pipeline():
            first = conn.execute("select %s::text as ssn, 1 as n", ("plain-value-1",))
            second = conn.execute("select %s::text as other", ("y",))
            third = conn.execute("select %s::text as ssn", ("plain-value-3",))
        assert first.fetchall() == [("[SSN_COL]", 1)]
        assert second.fetchall() == [("y",)]
        assert third.fetchall() == [("[SSN_COL]",)]


async def test_secret_named_columns_replaced_whole(gateway: Gateway) -> None:
    # docs/masking.md: with secret_key_value on (the default), a result column
    # named like a secret has its value replaced whole, whatever the value.
    query = "select 'hunter2' as password, 'k-1' as api_key, 'hunter2' as note"
    with psycopg.connect(gateway.dsn("db"), sslmode="require") as conn:
        assert conn.execute(query).fetchone() == ("[SECRET]", "[SECRET]", "hunter2")
        assert conn.execute(query, binary=True).fetchone() == ("[SECRET]", "[SECRET]", "hunter2")
    conn2 = await asyncpg.connect(gateway.dsn("plain"), ssl="require")
    try:
        row = await conn2.fetchrow(query)
        assert tuple(row) == ("[SECRET]", "[SECRET]", "hunter2")
    finally:
        await conn2.close()


TYPED = (
    "select 5 as ssn, 5.5::numeric as ssn, array['a'] as ssn, '{\"a\": 1}'::jsonb as ssn,"
    " '{\"a\": 1}'::json as ssn, 'x'::varchar as ssn"
)
"""A column rule on columns of several types."""
TYPED_MASKED = (None, None, None, "[SSN_COL]", "[SSN_COL]", "[SSN_COL]")
CONTENT = (
    "select card, note from people where id = 1 union all"
    " select 4111111111111111, '{\"card\": 4111111111111111, \"n\": 1.5}'::jsonb"
)
"""A card number in a bigint column and as a JSON number inside jsonb."""


def _no_card(value: object) -> None:
    assert "4111111111111111" not in repr(value)


def test_replacements_load_in_psycopg(gateway: Gateway) -> None:
    # Before: '[SSN_COL]' in an int/numeric/array/jsonb column (text format),
    # and '[SSN_COL]' without jsonb's version byte (binary) made psycopg raise
    # ValueError / DataError / JSONDecodeError; '[CARD]' in a bigint or as a
    # JSON number likewise.
    with psycopg.connect(gateway.dsn("db"), sslmode="require") as conn:
        for binary in (False, True):
            assert conn.execute(TYPED, binary=binary).fetchone() == TYPED_MASKED
            rows = conn.execute(CONTENT, binary=binary).fetchall()
            _no_card(rows)
            assert [r[0] for r in rows] == [None, None]
            assert rows[0][1] == {"mail": "[EMAIL]"}
            assert rows[1][1] == {"card": "[CARD]", "n": 1.5}


async def test_replacements_load_in_asyncpg(gateway: Gateway) -> None:
    conn = await asyncpg.connect(gateway.dsn("db"), ssl="require")
    try:
        # (asyncpg returns json/jsonb as their JSON text)
        assert tuple(await conn.fetchrow(TYPED)) == (
            None, None, None, '"[SSN_COL]"', '"[SSN_COL]"', "[SSN_COL]"
        )
        rows = await conn.fetch(CONTENT)
        _no_card([tuple(r) for r in rows])
        assert [r[0] for r in rows] == [None, None]
    finally:
        await conn.close()


def test_unmasked_typed_values_identical_to_direct(gateway: Gateway, pg: PgServer) -> None:
    query = (
        "select 42::int8, 1.50::numeric, array[1, 2], '{\"a\": [1, 2.50]}'::jsonb,"
        " '{ \"b\" :1 }'::json, array['x', 'y']"
    )
    with psycopg.connect(pg.dsn) as direct, psycopg.connect(gateway.dsn("db"), sslmode="require") as conn:
        for binary in (False, True):
            assert conn.execute(query, binary=binary).fetchone() == direct.execute(
                query, binary=binary
            ).fetchone()
            # an address the ipv4 recognizer hits: NULL, as ipaddress cannot load '[IP]'
            assert conn.execute("select '10.1.2.3'::inet", binary=binary).fetchone() == (None,)


async def test_binary_arrays_and_records_of_numbers_scanned(gateway: Gateway) -> None:
    # Before: a card number inside a binary int8[]/numeric[] or a record came
    # back in clear (the binary elements are not text, so nothing saw them).
    query = (
        "select array[4111111111111111, 1] as a, array[4111111111111111.0, 2] as n,"
        " row(1, 4111111111111111) as r, array[1, 2] as ok, row(1, 'x') as rok"
    )
    with psycopg.connect(gateway.dsn("db"), sslmode="require") as conn:
        row = conn.execute(query, binary=True).fetchone()
        assert row is not None
        _no_card(row)
        assert row[:3] == (None, None, None) and row[3] == [1, 2]
    conn2 = await asyncpg.connect(gateway.dsn("db"), ssl="require")
    try:
        arow = await conn2.fetchrow(query)
        _no_card(tuple(arow))
        assert tuple(arow)[:4] == (None, None, None, [1, 2])
        assert tuple(arow["rok"]) == (1, "x")
    finally:
        await conn2.close()


async def test_jsonb_nested_too_deep_to_parse_is_null_not_a_broken_session(gateway: Gateway) -> None:
    """A jsonb value with a hit, nested deeper than Python's parser goes (a
    user can store one): it cannot be re-checked as JSON, so it is NULL, the
    same as a document that does not parse; the session goes on. (asyncpg
    returns jsonb as its text: the client does not parse it either.)"""
    query = (
        "select (repeat('[', 3000) || '{\"card\": 4111111111111111, \"s\": \"4111111111111111\"}'"
        " || repeat(']', 3000))::jsonb as doc, 1 as n"
    )
    conn = await asyncpg.connect(gateway.dsn("db"), ssl="require")
    try:
        row = await conn.fetchrow(query)
        assert tuple(row) == (None, 1)
        assert await conn.fetchval("select 2") == 2
    finally:
        await conn.close()
