"""A throwaway PostgreSQL server for tests and demos (the canonical fixture).

Usage::

    from tests.support.pgserver import PgServer, pg_server  # fixture re-export

    with PgServer() as pg:            # initdb + start; stop + remove on exit
        pg.dsn                         # postgresql://hoopd:<pw>@127.0.0.1:<port>/postgres
        pg.dsn_for("app", sslmode="verify-full")
        pg.psql("-c", "select 1")      # runs psql against it (returns CompletedProcess)
        pg.restart()                   # or stop()/start() to simulate an outage

Details:

- binaries from ``$PG_BIN`` or ``/usr/lib/postgresql/15/bin`` (``available()``
  says whether they exist);
- a temp directory for data, socket, log and TLS files; a free loopback port;
- ``scram-sha-256`` password authentication for every host connection
  (superuser ``hoopd`` by default, password random unless given);
- TLS on (``ssl=on``) with a certificate signed by a generated CA
  (``pg.ca_path``), so clients can use ``sslmode=verify-full`` with
  ``sslrootcert=pg.ca_path`` and host ``127.0.0.1`` or ``localhost``;
- when running as root, ``initdb``/``pg_ctl`` run as the ``postgres`` OS user
  through ``runuser`` and the temp directory is owned by it;
- ``pg_server``: a session-scoped pytest fixture (skipped when the binaries
  are missing).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
PSQL = shutil.which("psql") or str(PG_BIN / "psql")


def available() -> bool:
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_tls(root: Path) -> tuple[Path, Path, Path]:
    from cryptography.hazmat.primitives import serialization

    from hoopd.tls import cert_pem, generate_ca, issue_certificate

    ca, ca_key = generate_ca("hoopd test postgres CA")
    leaf, leaf_key = issue_certificate(ca, ca_key, "localhost", hostnames=("localhost", "127.0.0.1"))
    ca_path, cert_path, key_path = root / "ca.pem", root / "server.crt", root / "server.key"
    ca_path.write_bytes(cert_pem(ca))
    cert_path.write_bytes(cert_pem(leaf))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


class PgServer:
    def __init__(
        self,
        user: str = "hoopd",
        password: str | None = None,
        *,
        tls: bool = True,
        port: int | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.tls = tls
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="hoopd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.ca_path = self.root / "ca.pem"
        self._as_root = os.geteuid() == 0
        self._owner: tuple[int, int] | None = None
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            self._owner = (pw.pw_uid, pw.pw_gid)
            os.chown(self.root, *self._owner)
        self._initialized = False

    # -- addresses -------------------------------------------------------------
    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return (
            f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"
            + (f"?{query}" if query else "")
        )

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for libpq tools (psql, pgbench) connecting directly."""
        return {
            **os.environ,
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGDATABASE": "postgres",
            **extra,
        }

    # -- lifecycle ---------------------------------------------------------------
    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, *self._owner)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stdout}\n{proc.stderr}\n{log}")
        return proc

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        pwfile.chmod(0o600)
        self._run(
            str(PG_BIN / "initdb"),
            "-D", str(self.data),
            "-U", self.user,
            "--pwfile", str(pwfile),
            "--auth", "scram-sha-256",
            "-E", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 300",
            "password_encryption = 'scram-sha-256'",
        ]
        if self.tls:
            ca, cert, key = _write_tls(self.root)
            for p in (ca, cert, key):
                self._chown(p)
            conf += [
                "ssl = on",
                f"ssl_cert_file = '{cert}'",
                f"ssl_key_file = '{key}'",
                f"ssl_ca_file = '{ca}'",
            ]
        conf += [f"{k} = '{v}'" for k, v in self.settings.items()]
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write("\n# hoopd test server\n" + "\n".join(conf) + "\n")
        # Password (SCRAM) for every TCP connection, TLS or not; local socket too.
        (self.data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        self._chown(self.data / "pg_hba.conf")
        self._initialized = True

    def start(self) -> None:
        if not self._initialized:
            self.init()
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True).returncode == 0

    def cleanup(self) -> None:
        try:
            if self._initialized and self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------
    def psql(
        self, *args: str, database: str = "postgres", check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-d", database, *args],
            capture_output=True,
            text=True,
            timeout=kw.pop("timeout", 120),
            env=self.env(),
            **kw,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql {args} failed: {proc.stdout}\n{proc.stderr}")
        return proc

    def execute(self, sql: str, database: str = "postgres") -> str:
        return self.psql("-Atq", "-c", sql, database=database).stdout

    def create_user(self, name: str, password: str, *, superuser: bool = False) -> None:
        role = "SUPERUSER" if superuser else ""
        self.execute(f"CREATE ROLE {name} LOGIN {role} PASSWORD '{password}'")

    def set_password_encryption_md5(self, user: str, password: str) -> None:
        """Give ``user`` an md5 password and let it log in with md5 (for upstream tests)."""
        self.execute(
            f"SET password_encryption = 'md5'; ALTER ROLE {user} PASSWORD '{password}'"
        )

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


try:
    import pytest

    @pytest.fixture(scope="session")
    def pg_server() -> Iterator[PgServer]:
        if not available():
            pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}")
        with PgServer() as pg:
            yield pg

except ImportError:  # pragma: no cover - used outside pytest (demo, bench)
    pass
