"""Column rules name fields; in a json/jsonb value the keys are those names
(docs/masking.md: ``fields`` are column / JSON key names). A JSON value was
masked by content only, so ``row_to_json(p)`` or ``jsonb_build_object('ssn',
...)`` handed over what the same column was masked for."""

from __future__ import annotations

import json

import psycopg

from tests.postgres.conftest import Gateway


def test_json_keys_are_masked_like_columns(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        conn.execute("create temp table tt(id int, ssn text, api_key text, note text)")
        conn.execute("insert into tt values (1, 'plainvalue', 'hunter2xyz', 'ok')")
        row = conn.execute(
            "select row_to_json(t), to_jsonb(t), json_build_object('x', json_build_object('ssn', ssn))"
            " from tt t"
        ).fetchone()
        assert row is not None
        for doc in row:
            text = json.dumps(doc)
            assert "plainvalue" not in text and "hunter2xyz" not in text, text
        assert row[0]["note"] == "ok" and row[0]["id"] == 1
        assert row[1]["ssn"] == "[SSN_COL]", row[1]
        # binary jsonb too
        cur = conn.cursor(binary=True)
        (doc,) = cur.execute("select to_jsonb(t) from tt t").fetchone() or (None,)
        assert doc is not None and "plainvalue" not in json.dumps(doc), doc
        # a document without such keys is passed as it was written
        (doc,) = conn.execute("""select '{"a" :  1}'::json""").fetchone() or (None,)
        assert doc == {"a": 1}
