"""The password the gateway logs in to PostgreSQL with (``upstream.password``)
never reaches the client, even when the database hands it back: in a row (a
table that stores it, set up directly against PostgreSQL) or quoted in an
error message. The client sees ``[REDACTED]``."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.postgres.conftest import Gateway
from tests.support.pgserver import PgServer


@pytest.fixture(scope="module")
def stored(pg: PgServer) -> Iterator[str]:
    pg.psql(
        "-q",
        "-c",
        "drop table if exists inj_conf; create table inj_conf(k text, v text);"
        f"insert into inj_conf values ('dsn', 'host=db password={pg.password} sslmode=require'),"
        f" ('raw', '{pg.password}');",
    )
    yield pg.password
    pg.psql("-q", "-c", "drop table if exists inj_conf")


@pytest.mark.parametrize("conn", ["db", "plain"])
def test_upstream_password_in_rows_and_errors_is_masked(
    gateway: Gateway, stored: str, conn: str
) -> None:
    with psycopg.connect(gateway.dsn(conn), autocommit=True) as c:
        rows = c.execute("select k, v from inj_conf order by k").fetchall()
        assert rows == [
            ("dsn", "host=db password=[REDACTED] sslmode=require"),
            ("raw", "[REDACTED]"),
        ]
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as err:
            c.execute("select v::int from inj_conf where k = 'raw'")
        assert str(err.value).startswith('invalid input syntax for type integer: "[REDACTED]"')
        assert stored not in str(err.value)
