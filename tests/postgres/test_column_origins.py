"""Column rules hold whatever a query labels the column.

A ``fields: [ssn]`` rule used to match the result column's *label*: ``select
ssn as x``, a subquery or CTE that renames it, or SQLAlchemy's legacy
``session.query()`` (which labels every column ``table_column``:
``cn_staff_ssn``) returned the value in clear. The RowDescription carries
the table OID and column number of such a column; the gateway learns their
names from the catalog and masks by them too (docs/postgres.md, "Masking in
the stream")."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer

DB = "hoopd_names"
SEED = """
create table cn_staff(id int primary key, name text, ssn text, salary text, password text);
insert into cn_staff values
  (1, 'Ann', 'plain-ssn-1', 'pay-100', 'pw-aaa'),
  (2, 'Bob', 'plain-ssn-2', 'pay-200', 'pw-bbb');
create table cn_budget(id int, salary text);
insert into cn_budget values (1, 'budget-9');
"""


@pytest.fixture(scope="module")
def names(gateway: Gateway, pg: PgServer) -> Iterator[str]:
    pg.execute(f"drop database if exists {DB}")
    pg.execute(f"create database {DB}")
    pg.execute(SEED, database=DB)
    yield gateway.dsn("names")


def _fetch(dsn: str, sql: str, binary: bool = False) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, sslmode="require", autocommit=True) as conn:
        return conn.execute(sql, binary=binary).fetchall()


@pytest.mark.parametrize("binary", [False, True])
def test_aliases_subqueries_and_ctes_masked_by_the_column(names: str, binary: bool) -> None:
    masked = [(1, "[SSN_COL]", "Ann"), (2, "[SSN_COL]", "Bob")]
    assert _fetch(names, "select id, ssn as x, name as who from cn_staff order by id", binary) == masked
    assert _fetch(names, "select id, y, name from (select id, ssn as y, name from cn_staff) s order by id", binary) == masked
    assert (
        _fetch(names, "with c as (select id, ssn as z, name from cn_staff) select * from c order by id", binary)
        == masked
    )
    # a column named like a secret, relabelled
    assert _fetch(names, "select password as p from cn_staff order by id", binary) == [("[SECRET]",), ("[SECRET]",)]


def test_table_qualified_rule_follows_the_table(names: str, pg: PgServer) -> None:
    # cn_staff.salary is masked under any label ...
    assert _fetch(names, "select salary as pay from cn_staff order by id") == [("[PAY]",), ("[PAY]",)]
    # ... a salary column of another table is not ...
    assert _fetch(names, "select salary from cn_budget") == [("budget-9",)]
    # ... and a column of no table named like it still is (over-masking)
    assert _fetch(names, "select 'v'::text as salary") == [("[PAY]",)]
    # what no rule covers comes back as a direct connection returns it
    sql = "select id, name, upper(name) as n from cn_staff order by id"
    with psycopg.connect(pg.dsn_for(DB)) as direct:
        assert _fetch(names, sql) == direct.execute(sql).fetchall()


class Base(DeclarativeBase):
    pass


class Staff(Base):
    __tablename__ = "cn_staff"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    ssn: Mapped[str]


def test_sqlalchemy_legacy_query_labels(names: str) -> None:
    engine = sa.create_engine(names.replace("postgresql://", "postgresql+psycopg://", 1),
                              connect_args={"sslmode": "require"})  # fmt: skip
    try:
        with Session(engine) as s:
            query = s.query(Staff).order_by(Staff.id)
            assert "AS cn_staff_ssn" in str(query)  # the label that hid the column
            assert [(p.name, p.ssn) for p in query] == [("Ann", "[SSN_COL]"), ("Bob", "[SSN_COL]")]
    finally:
        engine.dispose()


async def test_asyncpg_binary_without_describe(names: str) -> None:
    conn = await asyncpg.connect(names, ssl="require")
    try:
        rows = await conn.fetch("select ssn as x, salary as s, name from cn_staff where id = $1", 1)
        assert [tuple(r) for r in rows] == [("[SSN_COL]", "[PAY]", "Ann")]
    finally:
        await conn.close()


def test_copy_of_a_relabelling_query(names: str) -> None:
    sql = "COPY (select id, ssn as x from cn_staff order by id) TO STDOUT"
    with psycopg.connect(names, sslmode="require", autocommit=True) as conn, conn.cursor().copy(sql) as copy:
        data = b"".join(bytes(chunk) for chunk in copy)
    assert data == b"1\t[SSN_COL]\n2\t[SSN_COL]\n", data


def test_rename_through_the_gateway_is_seen(names: str, pg: PgServer) -> None:
    pg.execute("drop table if exists cn_renamed; create table cn_renamed(a text, b text);"
               " insert into cn_renamed values ('was-a', 'was-b')", database=DB)  # fmt: skip
    with psycopg.connect(names, sslmode="require", autocommit=True) as conn:
        # names learned (and kept) while no column is called ssn
        assert conn.execute("select a as v, b as w from cn_renamed").fetchall() == [("was-a", "was-b")]
        conn.execute("alter table cn_renamed rename column a to ssn")
        assert conn.execute("select ssn as v from cn_renamed").fetchall() == [("[SSN_COL]",)]
        # renamed in a transaction and read in it: the lookup connection saw
        # the names from before the commit; they are dropped once it ends
        with conn.transaction():
            conn.execute("alter table cn_renamed rename column ssn to a")
            conn.execute("alter table cn_renamed rename column b to ssn")
            conn.execute("select a as v, ssn as w from cn_renamed").fetchall()
        assert conn.execute("select a as v, ssn as w from cn_renamed").fetchall() == [("was-a", "[SSN_COL]")]


def test_names_that_cannot_be_learned_end_the_session(names: str, pg: PgServer) -> None:
    """Fail closed: when the catalog cannot be asked, the rows are not sent."""
    with psycopg.connect(names, sslmode="require", autocommit=True) as conn:
        assert conn.execute("select 1").fetchall() == [(1,)]
        pg.execute("create table cn_fail(id int, ssn text); insert into cn_fail values (1, 'fail-value')", database=DB)
        pg.execute(f"alter database {DB} allow_connections false")
        try:
            # the gateway's lookup connection for the database, if open, goes too
            pg.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity"
                f" where application_name = 'hoopd-catalog' and datname = '{DB}'"
            )
            with pytest.raises(psycopg.OperationalError) as err:
                conn.execute("select id, ssn as x from cn_fail").fetchall()
        finally:
            pg.execute(f"alter database {DB} allow_connections true")
    assert "could not be learned for masking" in str(err.value)
    assert "fail-value" not in str(err.value)


def test_labels_only_when_column_origins_is_off(names: str, gateway: Gateway) -> None:
    """options.column_origins: false -- no lookup connection, and rules match
    result labels only (the behaviour before the catalog was asked)."""
    labels = gateway.dsn("labels")
    assert _fetch(labels, "select ssn from cn_staff where id = 1") == [("[SSN_COL]",)]
    assert _fetch(labels, "select ssn as x from cn_staff where id = 1") == [("plain-ssn-1",)]


def test_lookups_are_counted(names: str, gateway: Gateway) -> None:
    # (after the tests above: lookups that worked, and the one that failed)
    metrics = gateway.daemon.metrics()
    for result in ("ok", "failed"):
        line = f'hoopd_catalog_lookups_total{{connection="names",protocol="postgres",result="{result}"}}'
        assert any(m.startswith(line) and float(m.split()[-1]) >= 1 for m in metrics.splitlines()), (result, metrics)
