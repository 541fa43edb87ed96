"""SQLAlchemy (what many agents and services use) through the gateway: the
ORM over psycopg 3, async Core over asyncpg. Its dialects introspect the
server (version, standard_conforming_strings, type OIDs), use server-side
prepared statements (asyncpg) and transactions; all of it must go through,
results unmasked where no rule applies and masked where one does."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer


class Base(DeclarativeBase):
    pass


class Widget(Base):
    __tablename__ = "sa_widgets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    owner_email: Mapped[str]


class Person(Base):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    email: Mapped[str]
    ssn: Mapped[str]


def url(gateway: Gateway, conn: str, driver: str) -> str:
    return gateway.dsn(conn).replace("postgresql://", f"postgresql+{driver}://", 1)


def test_orm_over_psycopg_round_trip(gateway: Gateway, pg: PgServer) -> None:
    engine = sa.create_engine(url(gateway, "plain", "psycopg"), connect_args={"sslmode": "require"})
    try:
        Base.metadata.create_all(engine, tables=[Widget.__table__])
        with Session(engine) as s, s.begin():
            s.add_all([Widget(id=i, name=f"w{i}", owner_email=f"o{i}@example.com") for i in range(1, 21)])
        with Session(engine) as s:
            got = s.scalars(sa.select(Widget).where(Widget.id <= 3).order_by(Widget.id)).all()
            assert [(w.name, w.owner_email) for w in got] == [(f"w{i}", f"o{i}@example.com") for i in (1, 2, 3)]
            s.execute(sa.update(Widget).where(Widget.id == 2).values(name="renamed"))
            s.rollback()  # a rolled-back transaction through the gateway leaves nothing behind
            assert s.scalar(sa.select(Widget.name).where(Widget.id == 2)) == "w2"
        direct = sa.create_engine(pg.dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        with direct.connect() as c:
            assert c.scalar(sa.text("select count(*) from sa_widgets")) == 20
        direct.dispose()
    finally:
        Base.metadata.drop_all(engine, tables=[Widget.__table__])
        engine.dispose()


def test_orm_results_are_masked(gateway: Gateway) -> None:
    engine = sa.create_engine(url(gateway, "db", "psycopg"), connect_args={"sslmode": "require"})
    try:
        with Session(engine) as s:
            ann = s.get(Person, 1)
            assert ann is not None
            assert (ann.name, ann.email, ann.ssn) == ("Ann", "[EMAIL]", "[SSN_COL]")
    finally:
        engine.dispose()


def test_async_core_over_asyncpg(gateway: Gateway) -> None:
    async def run() -> None:
        engine = create_async_engine(url(gateway, "db", "asyncpg"), connect_args={"ssl": "require"})
        try:
            async with engine.connect() as c:
                rows = (await c.execute(
                    sa.text("select n, t from numbers where n between :lo and :hi order by n"),
                    {"lo": 3, "hi": 5},
                )).all()
                assert [r.n for r in rows] == [3, 4, 5]
                email = await c.scalar(sa.text("select email from people where id = :i"), {"i": 1})
                assert email == "[EMAIL]"
                # a statement the connection's rules refuse surfaces as a DB-API error
                # (42501, insufficient privilege: a ProgrammingError to DB-API)
                with pytest.raises(sa.exc.ProgrammingError, match="hoopd: statement refused: DROP DATABASE"):
                    await c.execute(sa.text("drop database if exists nothing_here"))
                await c.rollback()
                assert await c.scalar(sa.text("select 7")) == 7  # the connection goes on
        finally:
            await engine.dispose()

    asyncio.run(run())
