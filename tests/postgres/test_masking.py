"""Masking through real clients, checked value by value against what the
rules promise (docs/postgres.md, "Masking in the stream"): a rule never lets
the value through, and what replaces it is something the client's type
loaders accept."""

from __future__ import annotations

import asyncpg
import psycopg

from tests.postgres.conftest import Gateway


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
