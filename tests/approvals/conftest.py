from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pgserver import PgServer, available


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    if not available():
        pytest.skip("PostgreSQL 15 binaries not found (set PG_BIN)")
    with PgServer() as pg:
        yield pg
