"""One PostgreSQL 15 (scram-sha-256, TLS on) and one ``hoopd serve`` for the
whole directory. Connections on the gateway:

- ``db``: masking (personal recognizers, an ``ssn`` column rule, a custom
  pattern), risk rules (review deletes without WHERE, deny DROP DATABASE),
  upstream over TLS verify-full, plaintext allowed from loopback;
- ``plain``: default masking, ``review_at: never`` -- for identity checks
  against a direct connection and for benchmarks-like traffic;
- ``strict``: TLS required from clients;
- ``quick``: approvals time out after 1 s; statements over 64 KiB are not parsed;
- ``capped``: at most 100 rows per statement;
- ``nocols``: content masking only (no column rule, secret_key_value off,
  so no value is masked by its column's name);
- ``hurry``: clients must be logged in within 1 s;
- ``names``: the ``db`` masking rules plus a table-qualified rule
  (``cn_staff.salary``), on its own database ``hoopd_names``
  (test_column_origins; the database is created there);
- ``labels``: as ``names`` without the catalog (``options.column_origins: false``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Daemon, free_port, hoopd
from tests.support.pgserver import PgServer, available

SEED = """
create table people(id int primary key, name text, email text, ssn text, card bigint, note jsonb);
insert into people values
  (1, 'Ann', 'ann@example.com', '123-45-6789', 4111111111111111, '{"mail": "ann@example.com"}'),
  (2, 'Bob', 'bob@corp.io', '987-65-4321', 42, '{"ok": true}');
create table victims(id int);
insert into victims select generate_series(1, 10);
create table numbers(n int, t text);
insert into numbers select g, md5(g::text) from generate_series(1, 5000) g;
"""


@dataclass
class Gateway:
    daemon: Daemon
    ports: dict[str, int]
    token: str
    reviewer_token: str
    pg: PgServer

    def env(self, conn: str = "db", **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.ports[conn]),
            "PGUSER": "someone",
            "PGPASSWORD": self.token,
            "PGDATABASE": "postgres",
            "PGSSLMODE": "prefer",
            **extra,
        }

    def dsn(self, conn: str = "db", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://someone:{self.token}@127.0.0.1:{self.ports[conn]}/postgres" + (
            f"?{query}" if query else ""
        )

    @property
    def ca(self) -> Path:
        return Path(self.daemon.config["gateway"]["data_dir"]) / "tls" / "ca.pem"

    def approvals(self, *args: str) -> Any:
        return hoopd(
            "approvals", *args, "--gateway", self.daemon.url(""), "--token", self.reviewer_token
        )


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    if not available():
        pytest.skip("PostgreSQL binaries not installed")
    with PgServer() as server:
        server.psql("-q", "-c", SEED)
        yield server


def _conn(name: str, port: int, pg: PgServer, **extra: Any) -> dict[str, Any]:
    conn: dict[str, Any] = {
        "name": name,
        "protocol": "postgres",
        "listen": f"127.0.0.1:{port}",
        "upstream": {
            "host": "127.0.0.1",
            "port": pg.port,
            "user": pg.user,
            "password": "env:HOOPD_TEST_PGPW",
            "sslmode": "verify-full",
            "ca": str(pg.ca_path),
        },
        "allow_groups": ["dba"],
        "risk": {"reviewers": ["reviewers"]},
        "options": {"allow_plaintext_loopback": True},
    }
    conn.update(extra)
    return conn


@pytest.fixture(scope="session")
def gateway(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    work = tmp_path_factory.mktemp("pg-gateway")
    names = ("db", "plain", "strict", "quick", "capped", "nocols", "hurry", "names", "labels")
    ports = {n: free_port() for n in names}
    masking = {
        "recognizers": {"personal": True},
        "rules": [
            {"id": "ssn-col", "fields": ["ssn"]},
            {"id": "secret-word", "pattern": "s3cr3t-[0-9]+"},
        ],
    }
    risk = {
        "reviewers": ["reviewers"],
        "rules": [
            {"match": "delete_without_where", "action": "review"},
            {"match": "drop_database", "action": "deny"},
            # a marker for statements a test wants held (test_copy_masking)
            {"pattern": "hoopd-review-marker", "action": "review"},
        ],
    }
    config = {
        "connections": [
            _conn("db", ports["db"], pg, masking=masking, risk=risk, approval={"timeout": "30s"}),
            _conn("plain", ports["plain"], pg, risk={"review_at": "never"}),
            _conn("strict", ports["strict"], pg, options={}),
            _conn(
                "quick",
                ports["quick"],
                pg,
                risk=risk,
                approval={"timeout": "1s"},
                options={"allow_plaintext_loopback": True, "max_parsed_sql": "64KiB"},
            ),
            _conn(
                "capped",
                ports["capped"],
                pg,
                options={"allow_plaintext_loopback": True, "max_rows_per_statement": 100},
            ),
            _conn(
                "nocols",
                ports["nocols"],
                pg,
                masking={"recognizers": {"personal": True, "disable": ["secret_key_value"]}},
            ),
            _conn(
                "hurry",
                ports["hurry"],
                pg,
                options={"allow_plaintext_loopback": True, "login_timeout": "1s"},
            ),
            _conn(
                "names",
                ports["names"],
                pg,
                upstream={**_conn("", 0, pg)["upstream"], "database": "hoopd_names"},
                masking={**masking, "rules": [*masking["rules"], {"id": "pay", "fields": ["cn_staff.salary"]}]},
            ),
            _conn(
                "labels",
                ports["labels"],
                pg,
                upstream={**_conn("", 0, pg)["upstream"], "database": "hoopd_names"},
                masking=masking,
                options={"allow_plaintext_loopback": True, "column_origins": False},
            ),
        ]
    }
    os.environ["HOOPD_TEST_PGPW"] = pg.password
    daemon = Daemon(work, config).start()
    try:
        token = hoopd("token", "issue", "-c", str(daemon.config_path), "--sub", "alice",
                      "--groups", "dba").stdout.strip()  # fmt: skip
        reviewer = hoopd("token", "issue", "-c", str(daemon.config_path), "--sub", "bob",
                         "--groups", "reviewers").stdout.strip()  # fmt: skip
        assert token and reviewer
        yield Gateway(daemon, ports, token, reviewer, pg)
    finally:
        daemon.stop()
        if os.environ.get("HOOPD_KEEP_LOGS"):
            shutil.copy(daemon.log_path, "/tmp/hoopd-pg-test.log")
