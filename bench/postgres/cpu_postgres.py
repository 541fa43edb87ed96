#!/usr/bin/env python3
"""Daemon CPU per ``pgbench -S`` transaction, real sockets, A/B between trees.

One PostgreSQL (``pgbench -i -s 2``) and one ``hoopd serve`` per source tree
(each started with ``PYTHONPATH=TREE``, the connection config of
``bench_postgres.py``: recording, risk scoring and a masking rule on). Rounds
alternate the trees (ABBA...); each runs ``pgbench -n -S -c 4 -j 2 -t N``
against one daemon and reads that daemon's CPU time from /proc before and
after: all threads, and the main (event-loop) thread, user+system. CPU per
transaction is far steadier on a shared machine than TPS (reported too).

    git worktree add /tmp/hoopd-base <commit>
    python bench/postgres/cpu_postgres.py --compare-tree /tmp/hoopd-base [--rounds 6] [--txns 3000] [--mode prepared]
    python bench/postgres/cpu_postgres.py --compare-tree /tmp/hoopd-base --client asyncpg

Without ``--compare-tree`` only this tree (or ``--tree``) is measured.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers import Daemon, free_port, hoopd  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds of a process (all threads) or one thread."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def config(listen_port: int, pg: PgServer) -> dict[str, Any]:
    return {
        "connections": [
            {
                "name": "bench",
                "protocol": "postgres",
                "listen": f"127.0.0.1:{listen_port}",
                "upstream": {
                    "host": "127.0.0.1", "port": pg.port, "user": pg.user,
                    "password": "env:HOOPD_BENCH_PGPW", "database": "bench", "sslmode": "disable",
                },
                "allow_groups": ["bench"],
                "masking": {"rules": [{"id": "secret-word", "pattern": "s3cr3t-[0-9]+"}]},
                "risk": {"rules": [{"match": "delete_without_where", "action": "review"}]},
                "options": {"allow_plaintext_loopback": True, "passthrough": ["database"]},
            }
        ]
    }  # fmt: skip


ASYNCPG_CLIENT = """
import asyncio, random, sys, time
import asyncpg

async def client(n):
    conn = await asyncpg.connect()  # PGHOST, PGPORT, PGUSER, PGPASSWORD... from the environment
    for _ in range(n):
        await conn.fetchval("SELECT abalance FROM pgbench_accounts WHERE aid = $1", random.randint(1, 200000))
    await conn.close()

async def main(n):
    started = time.perf_counter()
    await asyncio.gather(*(client(n) for _ in range(4)))
    print(f"tps = {4 * n / (time.perf_counter() - started):.1f}")

asyncio.run(main(int(sys.argv[1])))
"""
"""Four asyncpg connections, each running the pgbench -S SELECT as a prepared
statement (asyncpg's Bind/Execute/Sync, no Describe), -t times."""


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--compare-tree", help="the other source tree (e.g. a git worktree)")
    ap.add_argument("--tree", help="the tree measured as 'this' (default: this checkout)")
    ap.add_argument("--rounds", type=int, default=6, help="pgbench runs per tree")
    ap.add_argument("--txns", type=int, default=3000, help="transactions per pgbench client")
    ap.add_argument("--mode", choices=["simple", "extended", "prepared"], default="simple",
                    help="pgbench -M: the query protocol")
    ap.add_argument("--client", choices=["pgbench", "asyncpg"], default="pgbench",
                    help="asyncpg: the same SELECT as a prepared statement, Bind/Execute without Describe")
    args = ap.parse_args()
    this = Path(args.tree).resolve() if args.tree else ROOT
    trees = {"this": this}
    if args.compare_tree:
        trees = {"base": Path(args.compare_tree).resolve(), "this": this}

    # `python -m hoopd` puts its working directory first on sys.path, before
    # PYTHONPATH: start the daemons from a directory that is not a tree
    os.chdir(tempfile.gettempdir())
    pg = PgServer(settings={"max_connections": "200"})
    pg.start()
    work = Path(tempfile.mkdtemp(prefix="hoopd-cpu-"))
    daemons: dict[str, Daemon] = {}
    try:
        pg.execute("create database bench")
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", "2", "bench"],
            env=pg.env(),
            check=True,
            capture_output=True,
        )
        os.environ["HOOPD_BENCH_PGPW"] = pg.password
        envs: dict[str, dict[str, str]] = {}
        for name, tree in trees.items():
            port = free_port()
            (work / name).mkdir()
            tree_env = {"PYTHONPATH": str(tree)}
            daemons[name] = Daemon(work / name, config(port, pg), env=tree_env).start()
            token = hoopd(
                "token", "issue", "-c", str(daemons[name].config_path), "--sub", "bench",
                "--groups", "bench", "--ttl", "2h", env={**os.environ, **tree_env},
            ).stdout.strip()  # fmt: skip
            envs[name] = pg.env(
                PGSSLMODE="disable", PGPORT=str(port), PGPASSWORD=token, PGUSER="bench",
                PGDATABASE="bench",
            )  # fmt: skip
        got: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in trees}
        n = 4 * args.txns
        for rnd in range(args.rounds):
            order = list(trees) if rnd % 2 == 0 else list(trees)[::-1]
            for name in order:
                proc = daemons[name].proc
                assert proc is not None
                pid = proc.pid
                a, am = cpu_seconds(pid), cpu_seconds(pid, pid)
                argv = (
                    [sys.executable, "-c", ASYNCPG_CLIENT, str(args.txns)] if args.client == "asyncpg"
                    else ["pgbench", "-n", "-S", "-M", args.mode, "-c", "4", "-j", "2", "-t", str(args.txns), "bench"]
                )  # fmt: skip
                out = subprocess.run(argv, env=envs[name], capture_output=True, text=True, check=True).stdout
                b, bm = cpu_seconds(pid), cpu_seconds(pid, pid)
                m = re.search(r"tps = ([0-9.]+)", out)
                tps = float(m.group(1)) if m else 0.0
                row = (
                    (b[0] + b[1] - a[0] - a[1]) / n * 1e6,
                    (bm[0] + bm[1] - am[0] - am[1]) / n * 1e6,
                    (bm[1] - am[1]) / n * 1e6,
                    tps,
                )
                got[name].append(row)
                print(
                    f"round {rnd + 1} {name:4s} all threads {row[0]:6.1f} us/txn, "
                    f"loop thread {row[1]:6.1f} (system {row[2]:5.1f}), tps {tps:6.0f}",
                    flush=True,
                )
        what = "the asyncpg client" if args.client == "asyncpg" else f"pgbench -n -S -M {args.mode} -c 4 -j 2"
        print(f"medians of {args.rounds} runs of {what} -t {args.txns}:")
        for name, tree in trees.items():
            rows = got[name]
            med = [statistics.median(r[i] for r in rows) for i in range(4)]
            print(
                f"  {name:4s} ({tree}): all threads {med[0]:6.1f} us/txn, loop thread "
                f"{med[1]:6.1f} (system {med[2]:5.1f}), tps {med[3]:6.0f}"
            )
    finally:
        for d in daemons.values():
            d.stop()
        pg.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
