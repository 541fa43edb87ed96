"""Column rules apply to ``COPY ... TO STDOUT`` as to a SELECT
(docs/postgres.md, "Masking in the stream"): the gateway learns the COPY's
columns with a probe before it runs, then replaces the fields of masked
columns in every row, escaped for the format; every other byte is what a
direct connection returns. Where the columns cannot be learned or the
format cannot be masked by column, the COPY is refused (42501) and the
session goes on.

The ``db`` connection masks the column ``ssn`` (rule ``ssn-col``) and
secret-named columns; ``nocols`` has no rule that depends on a name."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest

from tests.postgres.conftest import Gateway
from tests.postgres.test_error_masking import _recorded, _user_env
from tests.postgres.test_held import Psql
from tests.support.pgserver import PgServer

SSNS = ("plain-ssn-1", "tab\tand\\back", 'line\nbreak,"quoted"')
"""Values only the column rule catches (no recognizer matches them), some
with the bytes each format escapes."""

SETUP = """
drop table if exists cm_people, cm_gen;
create table cm_people(id int, name text, ssn text, note text, password text);
insert into cm_people values
  (1, 'Ann', 'plain-ssn-1', E'tab\\there, back\\\\slash', 'pw-1'),
  (2, E'Bob\\nNewline', E'tab\\tand\\\\back', 'comma, "quote"', null),
  (3, 'Cy', E'line\\nbreak,"quoted"', null, 'pw-3'),
  (4, 'Dee', null, '', 'pw-4');
create table cm_gen(id int, ssn text, twice int generated always as (id * 2) stored, tail text);
insert into cm_gen(id, ssn, tail) values (1, 'plain-ssn-1', 'end');
"""


@pytest.fixture(scope="module")
def tables(pg: PgServer) -> Iterator[None]:
    pg.psql("-q", "-c", SETUP)
    yield
    pg.psql("-q", "-c", "drop table cm_people, cm_gen")


def psql(
    env: dict[str, str], command: str, *, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=0", "-c", command] if input is None
        else ["psql", "-X", "-q", "-f", "-"],
        env=env, capture_output=True, text=True, timeout=60, input=input,
    )  # fmt: skip


def _text_fields(line: str) -> list[str]:
    return line.split("\t")


def _expect_masked(direct: str, columns: list[int], sep: str = "\t", null: str = "\\N") -> str:
    """The direct output with the fields of ``columns`` replaced as the
    gateway does for a text column (NULL stays NULL)."""
    out = []
    for line in direct.splitlines(keepends=True):
        body = line.rstrip("\n")
        fields = body.split(sep)
        for i in columns:
            if fields[i] != null:
                fields[i] = "[SSN_COL]" if i != 4 else "[SECRET]"
        out.append(sep.join(fields) + line[len(body) :])
    return "".join(out)


def test_psql_copy_table_to_stdout(gateway: Gateway, pg: PgServer, tables: None) -> None:
    cmd = "\\copy (select * from cm_people order by id) to stdout"
    direct = psql(pg.env(), cmd)
    through = psql(gateway.env("db"), cmd)
    assert through.returncode == 0, through.stderr
    # ssn (column 2) by the column rule, password (4) by its secret-like name
    assert through.stdout == _expect_masked(direct.stdout, [2, 4])
    for value in SSNS:
        assert value.encode("unicode_escape").decode() not in through.stdout
    assert "pw-" not in through.stdout
    # the whole table, as COPY writes it (no query), and a column list
    table = psql(gateway.env("db"), "\\copy cm_people to stdout")
    assert sorted(table.stdout.splitlines()) == sorted(through.stdout.splitlines())
    listed = psql(gateway.env("db"), "\\copy cm_people (ssn, id) to stdout")
    assert listed.stdout.splitlines()[0] == "[SSN_COL]\t1"


def test_psql_copy_query_to_stdout(gateway: Gateway, pg: PgServer, tables: None) -> None:
    cmd = "\\copy (select ssn, id, name from cm_people order by id) to stdout"
    direct = psql(pg.env(), cmd)
    through = psql(gateway.env("db"), cmd)
    assert through.stdout == _expect_masked(direct.stdout, [0])
    assert through.stdout.splitlines()[3] == "\\N\t4\tDee"  # NULL is not masked into a value
    # content rules still apply, in the same rows as the column rule
    mixed = psql(
        gateway.env("db"), "\\copy (select ssn, email, name from people order by id) to stdout"
    )
    assert mixed.stdout == "[SSN_COL]\t[EMAIL]\tAnn\n[SSN_COL]\t[EMAIL]\tBob\n"


async def test_asyncpg_copy_from_query(gateway: Gateway, tables: None) -> None:
    conn = await asyncpg.connect(gateway.dsn("db"), ssl="require")
    try:
        out = io.BytesIO()
        await conn.copy_from_query("select id, ssn from cm_people order by id", output=out)
        assert out.getvalue().splitlines()[:2] == [b"1\t[SSN_COL]", b"2\t[SSN_COL]"]
        out = io.BytesIO()
        await conn.copy_from_table("cm_people", columns=["ssn", "name"], output=out, format="csv")
        assert b"plain-ssn" not in out.getvalue() and b"[SSN_COL],Ann" in out.getvalue()
        assert await conn.fetchval("select 'usable'") == "usable"
    finally:
        await conn.close()


def test_copy_csv_header_column_list(gateway: Gateway, pg: PgServer, tables: None) -> None:
    cmd = "COPY cm_people (id, ssn, note) TO STDOUT WITH (FORMAT csv, HEADER)"
    direct = psql(pg.env(), cmd).stdout
    through = psql(gateway.env("db"), cmd)
    assert through.returncode == 0, through.stderr
    # a quoted CSV field may span lines: compare the parsed rows
    want = list(csv.reader(io.StringIO(direct)))
    got = list(csv.reader(io.StringIO(through.stdout)))
    assert got[0] == ["id", "ssn", "note"]  # the header is column names, not values
    assert [r[0] for r in got] == [r[0] for r in want]
    assert [r[2] for r in got] == [r[2] for r in want]
    assert [r[1] for r in got[1:]] == ["[SSN_COL]", "[SSN_COL]", "[SSN_COL]", ""]
    # custom delimiter, quote, escape and NULL string
    custom = (
        "COPY (select id, ssn, note from cm_people order by id) TO STDOUT"
        " WITH (FORMAT csv, DELIMITER ';', QUOTE '''', ESCAPE '\\', NULL 'NIL')"
    )
    d = psql(pg.env(), custom).stdout.splitlines()
    t = psql(gateway.env("db"), custom).stdout.splitlines()
    assert t[0] == "1;[SSN_COL];" + d[0].split(";", 2)[2]
    assert t[-1] == d[-1] == "4;NIL;"


def test_psycopg_copy_rows(gateway: Gateway, pg: PgServer, tables: None) -> None:
    query = "COPY (select id, name, ssn, note from cm_people order by id) TO STDOUT"
    with psycopg.connect(pg.dsn) as direct, direct.cursor().copy(query) as copy:
        want = list(copy.rows())
    with psycopg.connect(gateway.dsn("db"), sslmode="require") as conn:
        with conn.cursor().copy(query) as copy:
            got = list(copy.rows())
        # the session goes on, in the same transaction
        assert conn.execute("select 'after'").fetchone() == ("after",)
    assert [r[2] for r in got] == ["[SSN_COL]", "[SSN_COL]", "[SSN_COL]", None]
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in want]


def test_generated_columns_left_out_as_copy_does(
    gateway: Gateway, pg: PgServer, tables: None
) -> None:
    direct = psql(pg.env(), "\\copy cm_gen to stdout").stdout
    assert direct == "1\tplain-ssn-1\tend\n"
    assert psql(gateway.env("db"), "\\copy cm_gen to stdout").stdout == "1\t[SSN_COL]\tend\n"


def test_unmasked_without_column_rules(gateway: Gateway, pg: PgServer, tables: None) -> None:
    for cmd in (
        "\\copy cm_people to stdout",
        "COPY cm_people TO STDOUT WITH (FORMAT csv, HEADER)",
        "\\copy (select ssn, password from cm_people) to stdout",
    ):
        direct = psql(pg.env(), cmd)
        through = psql(gateway.env("nocols"), cmd)
        assert through.returncode == 0, through.stderr
        assert through.stdout == direct.stdout


def test_binary_copy_with_masked_column_refused(
    gateway: Gateway, pg: PgServer, tables: None
) -> None:
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        cur = conn.cursor()
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege) as caught,
            cur.copy("COPY cm_people TO STDOUT (FORMAT binary)") as copy,
        ):
            list(copy)
        assert "binary COPY data cannot be masked by column" in str(caught.value)
        assert "ssn" in str(caught.value)
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)
        # binary without a masked column goes through
        with cur.copy(
            "COPY (select id, name from cm_people order by id) TO STDOUT (FORMAT binary)"
        ) as copy:
            copy.set_types(["int4", "text"])
            assert [r[0] for r in copy.rows()] == [1, 2, 3, 4]
        # a COPY in the extended protocol: its columns are not learned
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            cur.execute("COPY cm_people TO STDOUT", binary=True)
        assert "extended-protocol" in str(caught.value)
        assert conn.execute("select 2").fetchone() == (2,)


def test_probe_errors_and_transactions(gateway: Gateway, tables: None) -> None:
    script = "\n".join(
        [
            "\\copy no_such_table to stdout",
            "select 'after refusal';",
            "begin;",
            "select 'in transaction';",
            "\\copy (select id, ssn from cm_people where id = 1) to stdout",
            "commit;",
            "begin;",
            "select 1/0;",
            "copy cm_people to stdout;",
            "rollback;",
            "\\copy (select ssn from cm_people where id = 1) to stdout",
        ]
    )
    r = psql(gateway.env("db"), "", input=script)
    assert "hoopd: COPY refused: its columns could not be learned for masking (42P01" in r.stderr
    # in a multi-statement query, an earlier statement could change what the
    # COPY's columns are after the probe (here: which cm_people it reads)
    multi = psql(
        gateway.env("db"),
        "create temp table cm_people(id int, other text, x text, y text, z text);"
        " copy cm_people to stdout",
    )
    assert "COPY refused: a COPY TO STDOUT is masked by column only as the single" in multi.stderr
    assert multi.stdout == ""
    assert "after refusal" in r.stdout
    assert "in transaction" in r.stdout and "\n1\t[SSN_COL]\n" in r.stdout
    # an aborted transaction: the COPY fails as it would without the gateway
    assert "current transaction is aborted" in r.stderr
    assert r.stdout.rstrip().endswith("[SSN_COL]")
    assert "plain-ssn" not in r.stdout


def test_recording_holds_masked_rows_and_refusals(gateway: Gateway, tables: None) -> None:
    user, env = _user_env(gateway, "copymask")
    script = (
        "\\copy (select ssn, password from cm_people order by id) to stdout\n"
        "copy cm_people to stdout (format binary);\n"
    )
    r = psql(env, "", input=script)
    assert r.stdout.startswith("[SSN_COL]\t[SECRET]\n")
    assert "ERROR:  hoopd: COPY refused: binary COPY data" in r.stderr
    recorded = _recorded(gateway, user)
    assert "[SSN_COL]" in recorded
    assert "plain-ssn-1" not in recorded and "pw-1" not in recorded
    # the refusal is a deny decision of its own rule, as other refusals
    decisions = [
        json.loads(line)
        for line in recorded.splitlines()
        if '"decision"' in line and "copy_columns" in line
    ]
    assert decisions and decisions[0]["verdict"] == "deny"


def test_held_copy_probed_after_approval(gateway: Gateway, tables: None) -> None:
    # a COPY a risk rule holds for review: approved, its columns are probed
    # and masked like any other COPY's
    script = (
        "\\copy (select ssn, 'hoopd-review-marker' as tag from cm_people where id = 1) to stdout\n"
        "select 'after';\n"
    )
    held = Psql(gateway.env("db"), script)
    assert held.approval.wait(20), held.lines
    r = gateway.approvals("approve", held.approval_id, "--comment", "ok")
    assert r.returncode == 0, r.stdout + r.stderr
    out, err = held.finish()
    assert held.proc.returncode == 0, err
    assert out == "[SSN_COL]\thoopd-review-marker\nafter\n"
