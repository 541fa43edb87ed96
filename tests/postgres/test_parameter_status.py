"""A reported setting (ParameterStatus) can carry query results:
``set_config('application_name', (select email ...), false)`` -- the server
then reports the new value to the client, which got the e-mail address and
SSN that the same statement's DataRow had masked."""

from __future__ import annotations

import psycopg

from protocols.postgres import _wire as w
from tests.postgres.conftest import Gateway
from tests.postgres.test_held import _raw_session
from tests.postgres.test_query_while_discarding import READY, _until

SQL = (
    "select set_config('application_name',"
    " (select email || ' ' || ssn from people where id = 1), false) as app"
)


def test_reported_setting_is_masked(gateway: Gateway) -> None:
    s = _raw_session(gateway, "db")
    s.sendall(w.query(SQL))
    out = _until(s, READY)
    s.close()
    assert b"application_name" in out, out
    assert b"ann@example.com" not in out and b"123-45-6789" not in out, out
    assert b"[EMAIL" in out


def test_reported_setting_through_psycopg(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn("db"), sslmode="require", autocommit=True) as conn:
        row = conn.execute(SQL).fetchone()
        assert row is not None and "ann@example.com" not in row[0]
        app = conn.info.parameter_status("application_name") or ""
        assert "ann@example.com" not in app and "123-45-6789" not in app, app
        # an ordinary setting is reported as it is
        conn.execute("set application_name = 'reports'")
        assert conn.info.parameter_status("application_name") == "reports"
