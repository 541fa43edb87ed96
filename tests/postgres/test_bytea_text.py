"""bytea in text format is hex: ``select email::bytea`` gave psycopg the
bytes b'ann@example.com' -- the gateway scanned only the hex text, which no
content rule matches (in binary format the same value was masked)."""

from __future__ import annotations

import psycopg

from tests.postgres.conftest import Gateway


def test_bytea_in_text_format_is_masked(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        rows = conn.execute(
            "select id, email::bytea, convert_to(email || ' / ' || ssn, 'UTF8'),"
            " array[email::bytea], 'plain'::bytea from people order by id"
        ).fetchall()
        for _id, one, two, arr, plain in rows:
            for value in (bytes(one), bytes(two), *(bytes(v) for v in arr)):
                assert b"@" not in value, value
                assert b"123-45-6789" not in value, value
            assert bytes(plain) == b"plain"
        assert b"[EMAIL" in bytes(rows[0][1])
        # escape output format too
        conn.execute("set bytea_output = 'escape'")
        (value,) = conn.execute("select email::bytea from people where id = 1").fetchone() or (b"",)
        assert b"ann@example.com" not in bytes(value), value
        # and binary format, as before
        cur = conn.cursor(binary=True)
        (value,) = cur.execute("select email::bytea from people where id = 1").fetchone() or (b"",)
        assert value is None or b"ann@example.com" not in bytes(value)
