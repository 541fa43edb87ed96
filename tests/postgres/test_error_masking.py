"""Sensitive values that reach the client inside ErrorResponse and
NoticeResponse fields -- message, DETAIL, HINT, CONTEXT, the internal query
-- and in COPY TO STDOUT rows are masked, for psql (terse and verbose) and
psycopg alike, and the session's recording does not hold them either.

The values come from the database (tables and functions created directly
against PostgreSQL), never from the SQL the client sends: so anything of
them in what the client receives or in the recording is a leak."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import hoopd, wait_for
from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer

EMAIL = "ann@example.com"
HINT_EMAIL = "bob@example.com"
QUERY_EMAIL = "carl@example.com"
CARD = "4111111111111111"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
URL_PASSWORD = "hunter2secret"
VALUES = (EMAIL, HINT_EMAIL, QUERY_EMAIL, CARD, AWS_KEY, URL_PASSWORD)

SETUP = f"""
drop table if exists em_creds, em_unique, "em audit {EMAIL}" cascade;
create table em_creds(kind text, v text);
insert into em_creds values
  ('aws', '{AWS_KEY}'), ('url', 'postgres://u:{URL_PASSWORD}@h/db');
create table em_unique(email text unique);
insert into em_unique values ('{EMAIL}');
-- an identifier that a rule hits comes back in the table (t) field
create table "em audit {EMAIL}"(id int primary key);
insert into "em audit {EMAIL}" values (1);
create or replace function em_duplicate() returns int language plpgsql as $$
begin
  insert into "em audit {EMAIL}" values (1);
  return 1;
end $$;
create or replace function em_notice() returns int language plpgsql as $$
begin
  raise notice 'card % mail %', '{CARD}', '{EMAIL}';
  return 1;
end $$;
create or replace function em_raise() returns int language plpgsql as $$
begin
  raise exception 'refused' using detail = '{EMAIL}', hint = '{HINT_EMAIL}';
end $$;
-- the failing statement comes back as the internal query (q) and, inside
-- the CONTEXT (W) line, as "SQL statement ..."
create or replace function em_dynamic() returns int language plpgsql as $$
begin
  execute 'select ''{QUERY_EMAIL}''::int';
  return 1;
end $$;
create or replace function em_perform() returns int language plpgsql as $$
begin
  perform '{QUERY_EMAIL}'::int;
  return 1;
end $$;
-- the argument's value is echoed in CONTEXT by a SQL function
create or replace function em_inner(v text) returns int language plpgsql as $$
begin
  raise exception 'inner failed' using detail = v;
end $$;
create or replace function em_outer() returns int language plpgsql as $$
declare r int;
begin
  execute format('select em_inner(%L)', '{EMAIL}') into r;
  return r;
end $$;
"""

STATEMENTS = [
    "select em_notice()",
    "select em_raise()",
    "select em_dynamic()",
    "select em_perform()",
    "select em_outer()",
    "insert into em_unique select email from people where id = 1",
    "select v::int from em_creds where kind = 'aws'",
    "select v::int from em_creds where kind = 'url'",
    "select em_duplicate()",
    "copy (select name, email, card from people order by id) to stdout",
]


@pytest.fixture(scope="module")
def prepared(pg: PgServer) -> Iterator[None]:
    pg.psql("-q", "-c", SETUP)
    yield
    pg.psql("-q", "-c", f'drop table em_creds, em_unique, "em audit {EMAIL}";'
            " drop function em_notice, em_raise, em_dynamic, em_perform, em_outer, em_inner,"
            " em_duplicate")  # fmt: skip


def _user_env(gateway: Gateway, prefix: str) -> tuple[str, dict[str, str]]:
    """A fresh subject, so its session's recording can be found."""
    user = f"{prefix}-{secrets.token_hex(4)}"
    token = hoopd(
        "token", "issue", "-c", str(gateway.daemon.config_path), "--sub", user, "--groups", "dba"
    ).stdout.strip()
    assert token
    return user, {**gateway.env("db"), "PGPASSWORD": token}


def _recorded(gateway: Gateway, user: str, sessions: int = 1) -> str:
    """Everything the recordings of ``user``'s sessions hold, output bytes
    decoded, as one text."""
    recordings = gateway.daemon.recordings

    def ended() -> list[str] | None:
        r = hoopd("replay", "list", str(recordings), "--json")
        ids = [
            s["session_id"]
            for s in map(json.loads, r.stdout.splitlines())
            if s["user"] == user and s["end_reason"]
        ]
        return ids if len(ids) >= sessions else None

    texts = []
    for sid in wait_for(ended, timeout=15):
        export = hoopd("replay", "export", str(recordings), sid, "--format", "jsonl")
        assert export.returncode == 0, export.stderr
        for line in export.stdout.splitlines():
            event: dict[str, Any] = json.loads(line)
            data = event.get("data")
            if isinstance(data, dict) and "base64" in data:
                event["data"] = base64.b64decode(data["base64"]).decode("utf-8", "replace")
            texts.append(json.dumps(event, ensure_ascii=False))
    return "\n".join(texts)


def _leaks(text: str) -> list[str]:
    return [v for v in VALUES if v in text]


@pytest.mark.parametrize("verbosity", ["default", "verbose"])
def test_psql_errors_and_notices_masked(gateway: Gateway, prepared: None, verbosity: str) -> None:
    user, env = _user_env(gateway, f"errmask-{verbosity}")
    script = f"\\set VERBOSITY {verbosity}\n" + "".join(f"{s};\n" for s in STATEMENTS)
    r = subprocess.run(
        ["psql", "-X", "-At", "-f", "-"], env=env, input=script,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    seen = r.stdout + r.stderr
    assert _leaks(seen) == [], seen
    err = r.stderr
    # each value is there, as its placeholder
    assert "card [CARD] mail [EMAIL]" in err  # NOTICE message
    assert "DETAIL:  [EMAIL]" in err and "HINT:  [EMAIL]" in err  # RAISE ... USING
    assert "Key (email)=([EMAIL]) already exists." in err  # unique violation DETAIL
    assert 'integer: "[AWS_ACCESS_KEY_ID]"' in err  # message echoing a credential
    assert 'integer: "postgres://u:' in err  # the URL, without its password
    if verbosity == "verbose":
        assert "QUERY:  select '[EMAIL]'::int" in err  # internal query (q)
    assert "SQL statement \"select em_inner('[EMAIL]')\"" in err  # CONTEXT (W)
    # COPY TO STDOUT rows
    assert "Ann\t[EMAIL]\t[CARD]" in r.stdout
    assert _leaks(_recorded(gateway, user)) == []


def _diag_text(diag: psycopg.errors.Diagnostic) -> str:
    """Every field of an error or notice as psycopg exposes it."""
    names = [n for n in dir(diag) if not n.startswith("_")]
    return "\n".join(f"{n}={getattr(diag, n)}" for n in names)


def test_psycopg_diagnostics_masked(gateway: Gateway, prepared: None) -> None:
    user, env = _user_env(gateway, "errmask-psycopg")
    notices: list[str] = []
    errors: dict[str, str] = {}
    dsn = gateway.dsn("db").replace(gateway.token, env["PGPASSWORD"])
    with psycopg.connect(dsn, sslmode="require", autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(_diag_text(d)))
        for sql in STATEMENTS[:-1]:
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                assert exc.diag is not None
                errors[sql] = f"{exc}\n{_diag_text(exc.diag)}"
        # a notice between every two rows of a streamed result
        notices.clear()
        rows = conn.execute("select n, em_notice() from numbers where n <= 500").fetchall()
        assert len(rows) == 500 and len(notices) == 500
        assert all("message_primary=card [CARD] mail [EMAIL]" in n for n in notices)
        # binary results too: the error fields do not depend on the format
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as caught:
            conn.execute("select v::int from em_creds where kind = 'aws'", binary=True)
        errors["binary"] = str(caught.value)
    everything = "\n".join([*notices, *errors.values()])
    assert _leaks(everything) == [], everything
    assert any("message_primary=card [CARD] mail [EMAIL]" in n for n in notices), notices
    raised = errors["select em_raise()"]
    assert "message_detail=[EMAIL]" in raised and "message_hint=[EMAIL]" in raised
    assert "internal_query=select '[EMAIL]'::int" in errors["select em_dynamic()"]
    assert "message_detail=Key (email)=([EMAIL]) already exists." in errors[STATEMENTS[5]]
    # the fields that hold no values are left as they are: clients act on them
    assert "sqlstate=23505" in errors[STATEMENTS[5]]
    assert "constraint_name=em_unique_email_key" in errors[STATEMENTS[5]]
    assert "table_name=em audit [EMAIL]" in errors["select em_duplicate()"]
    assert "severity=ERROR" in raised and "severity_nonlocalized=ERROR" in raised
    assert _leaks(_recorded(gateway, user)) == []
