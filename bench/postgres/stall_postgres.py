#!/usr/bin/env python3
"""How long one session's large statement stalls the other sessions.

One PostgreSQL and one ``hoopd serve`` (the connection config of
``cpu_postgres.py``: recording, risk scoring, a masking rule). A "ping"
session runs ``SELECT 1`` back to back; meanwhile another session sends one
multi-row ``INSERT`` of ``--rows`` rows (~55 bytes each) as a simple query,
``--repeat`` times. Reported: the INSERT's wall time, and the ping's
round-trip p50 and maximum while the INSERT was in flight. Without the
gateway's parse worker the maximum is the time the event loop spent
scoring the INSERT; with it, it stays near a scheduling quantum.

    python bench/postgres/stall_postgres.py [--rows 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.postgres.cpu_postgres import config  # noqa: E402
from tests.helpers import Daemon, free_port, hoopd  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402


def big_insert(rows: int) -> str:
    values = ",".join(f"({i}, 'name {i}', 'user{i}@example.com', now())" for i in range(rows))
    return "INSERT INTO stall_t (id, name, email, ts) VALUES " + values


async def measure(dsn: str, sql: str, repeat: int) -> None:
    ping = await asyncpg.connect(dsn, statement_cache_size=0)
    bulk = await asyncpg.connect(dsn, statement_cache_size=0)
    for rnd in range(repeat):
        samples: list[float] = []
        done = asyncio.Event()

        async def pinger(samples: list[float], done: asyncio.Event) -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await ping.fetchval("SELECT 1")
                samples.append(time.perf_counter() - t0)
                await asyncio.sleep(0.005)

        task = asyncio.create_task(pinger(samples, done))
        await asyncio.sleep(0.2)
        before = len(samples)
        t0 = time.perf_counter()
        await bulk.execute(sql)
        took = time.perf_counter() - t0
        done.set()
        await task
        during = samples[before:] or [float("nan")]
        print(
            f"round {rnd + 1}: INSERT {took:6.2f} s; ping during it: {len(during)} round trips, "
            f"p50 {statistics.median(during) * 1e3:7.1f} ms, max {max(during) * 1e3:7.1f} ms",
            flush=True,
        )
    await ping.close()
    await bulk.close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.chdir(tempfile.gettempdir())
    sql = big_insert(args.rows)
    print(f"INSERT of {args.rows} rows: {len(sql) / 1e6:.1f} MB of SQL")
    with PgServer() as pg:
        pg.execute("create database bench")
        pg.execute("create table stall_t (id int, name text, email text, ts timestamptz)", "bench")
        os.environ["HOOPD_BENCH_PGPW"] = pg.password
        work = Path(tempfile.mkdtemp(prefix="hoopd-stall-"))
        port = free_port()
        daemon = Daemon(work, config(port, pg), env={"PYTHONPATH": str(ROOT)}).start()
        try:
            token = hoopd(
                "token", "issue", "-c", str(daemon.config_path), "--sub", "bench",
                "--groups", "bench", "--ttl", "2h",
            ).stdout.strip()  # fmt: skip
            dsn = f"postgresql://bench:{token}@127.0.0.1:{port}/bench?sslmode=disable"
            asyncio.run(measure(dsn, sql, args.repeat))
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
