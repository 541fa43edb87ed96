#!/usr/bin/env python3
"""How long one large *result* holds the postgres listener's event loop.

One PostgreSQL and one ``hoopd serve`` (personal-data recognizers on). A
"ping" session runs ``SELECT 1`` every 10 ms; meanwhile another session
runs one statement whose answer is large and dense with e-mail addresses (the
ping runs in its own process; its worst round trip covers the 1 s before
the statement too).
Reported per shape and size: the statement's wall time, the CPU time of
hoopd's main (event loop) thread over it (/proc/PID/task/PID/stat) and the
ping's worst round trip while it ran.

    python bench/postgres/stall_results.py [--shapes text-cell,jsonb-cell,many-rows,copy,notice]
                                           [--sizes 4M,16M]

Shapes: ``text-cell`` (one DataRow, ``repeat('ann@example.com ', n)``),
``jsonb-cell`` (one jsonb array of that many bytes of e-mail strings),
``many-rows`` (rows of 64-byte e-mail-dense text, that many bytes in all),
``copy`` (the same rows, ``COPY (...) TO STDOUT``), ``notice`` (one
``RAISE NOTICE`` whose message is that long, from a function), ``idle`` (nothing for 3 s:
the ping's worst round trip on this machine at this moment).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers import Daemon, free_port, hoopd  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
UNIT = "ann@example.com "  # 16 bytes


def size_of(text: str) -> int:
    mult = {"K": 1 << 10, "M": 1 << 20}
    if text[-1].upper() in mult:
        return int(float(text[:-1]) * mult[text[-1].upper()])
    return int(text)


def statement(shape: str, size: int) -> str:
    n = size // len(UNIT)
    if shape == "idle":
        return ""
    if shape == "text-cell":
        return f"SELECT repeat('{UNIT}', {n})"
    if shape == "jsonb-cell":
        return (
            "SELECT jsonb_agg('u' || g || '@example.com') FROM generate_series(1, "
            f"{size // 22}) g"
        )
    rows = size // 64
    inner = f"SELECT g, repeat('{UNIT}', 3) || 'x' || g FROM generate_series(1, {rows}) g"
    if shape == "many-rows":
        return inner
    if shape == "copy":
        return f"COPY ({inner}) TO STDOUT"
    if shape == "notice":
        return f"SELECT stall_notice({n})"
    raise SystemExit(f"unknown shape {shape}")


def loop_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


async def ping_process(dsn: str) -> None:
    """The ping session, in its own process (so the bulk client's decoding
    does not delay it): round trips until stdin closes, then the worst one."""
    ping = await asyncpg.connect(dsn, statement_cache_size=0)
    loop = asyncio.get_running_loop()
    stop = loop.run_in_executor(None, sys.stdin.read)
    worst = 0.0
    while not stop.done():
        t0 = time.perf_counter()
        await ping.fetchval("SELECT 1")
        worst = max(worst, time.perf_counter() - t0)
        await asyncio.sleep(0.01)
    print(worst, flush=True)
    await ping.close()


async def one(dsn: str, pid: int, shape: str, size: int) -> dict[str, Any]:
    bulk = await asyncpg.connect(dsn, statement_cache_size=0)
    pinger = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--ping", dsn, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    await asyncio.sleep(1.0)
    sql = statement(shape, size)
    cpu0, t0 = loop_cpu(pid), time.perf_counter()
    got = 0
    if shape == "idle":
        await asyncio.sleep(3)
    elif shape == "copy":
        sink = bytearray()

        async def output(chunk: bytes) -> None:
            sink.extend(chunk)

        await bulk.copy_from_query(sql[len("COPY (") : sql.rindex(") TO STDOUT")], output=output)
        got = len(sink)
    elif shape == "notice":
        seen: list[int] = []
        bulk.add_log_listener(lambda c, m: seen.append(len(m.message)))
        await bulk.execute(sql)
        await asyncio.sleep(0.05)
        got = sum(seen)
    else:
        rows = await bulk.fetch(sql)
        got = sum(len(str(v)) for r in rows for v in r)
    wall, cpu = time.perf_counter() - t0, loop_cpu(pid) - cpu0
    await asyncio.sleep(0.1)
    out, _ = await pinger.communicate(b"")
    await bulk.close()
    return {"got": got, "wall": wall, "loop_cpu": cpu, "ping_max": float(out)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="text-cell,jsonb-cell,many-rows,copy,notice")
    ap.add_argument("--sizes", default="4M,16M")
    ap.add_argument("--ping", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ping:
        asyncio.run(ping_process(args.ping))
        return 0
    os.chdir(tempfile.gettempdir())
    with PgServer() as pg:
        pg.execute("create database bench")
        # (created directly: a DO block through the gateway is held for review)
        pg.execute(
            "create function stall_notice(n int) returns int language plpgsql as "
            f"$$ begin raise notice '%', repeat('{UNIT}', n); return n; end $$",
            "bench",
        )
        os.environ["HOOPD_BENCH_PGPW"] = pg.password
        work = Path(tempfile.mkdtemp(prefix="hoopd-stall-"))
        port = free_port()
        config = {
            "gateway": {"log_level": "warning"},
            "connections": [
                {
                    "name": "bench",
                    "protocol": "postgres",
                    "listen": f"127.0.0.1:{port}",
                    "upstream": {
                        "host": "127.0.0.1", "port": pg.port, "user": pg.user,
                        "password": "env:HOOPD_BENCH_PGPW", "database": "bench", "sslmode": "disable",
                    },
                    "allow_groups": ["bench"],
                    "masking": {"recognizers": {"personal": True}},
                    "options": {"allow_plaintext_loopback": True, "passthrough": ["database"]},
                }
            ],
        }  # fmt: skip
        daemon = Daemon(work, config, env={"PYTHONPATH": str(ROOT)}).start()
        try:
            assert daemon.proc is not None
            token = hoopd(
                "token", "issue", "-c", str(daemon.config_path), "--sub", "bench",
                "--groups", "bench", "--ttl", "2h",
            ).stdout.strip()  # fmt: skip
            dsn = f"postgresql://bench:{token}@127.0.0.1:{port}/bench?sslmode=disable"
            print(f"{'shape':<11} {'size':>10} {'got':>10} {'wall s':>7} {'loop cpu s':>10} {'ping max s':>10}")
            for shape in args.shapes.split(","):
                for size in (size_of(s) for s in args.sizes.split(",")):
                    r = asyncio.run(one(dsn, daemon.proc.pid, shape, size))
                    print(
                        f"{shape:<11} {size:>10} {r['got']:>10} {r['wall']:>7.2f}"
                        f" {r['loop_cpu']:>10.2f} {r['ping_max']:>10.3f}",
                        flush=True,
                    )
        finally:
            daemon.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
