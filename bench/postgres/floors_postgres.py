#!/usr/bin/env python3
"""Where hoopd's postgres handler sits between the floors of a proxy, in one run.

Five paths to one PostgreSQL (``pgbench -i -s 10``), measured in alternating
rounds (the order rotates) with ``pgbench -n -S -c 8 -j 2 -T D``:

  direct    pgbench -> PostgreSQL
  pgbouncer session pooling (Debian's package), plaintext
  bare      bench/postgres/bare_relay.py: a uvloop relay that only copies bytes
  hoopd-tcp hoopd's opaque ``tcp`` handler: a session, both directions
            recorded, no parsing
  hoopd-pg  hoopd's ``postgres`` handler with the bench_postgres.py connection
            (recording, risk scoring, a masking rule)

For each: median TPS, and the proxy process's CPU per transaction (all
threads, from /proc), which is steadier than TPS on a shared machine.

    python bench/postgres/floors_postgres.py [--duration 10] [--rounds 3]
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

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parents[1]))
sys.path.insert(0, str(ROOT))

from bench_postgres import Pgbouncer  # noqa: E402
from cpu_postgres import config, cpu_seconds  # noqa: E402

from tests.helpers import Daemon, free_port, hoopd, wait_port  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402


def run_pgbench(env: dict[str, str], duration: int) -> tuple[float, int]:
    """(tps, transactions) of one pgbench run."""
    out = subprocess.run(
        ["pgbench", "-n", "-S", "-c", "8", "-j", "2", "-T", str(duration), "bench"],
        env=env, capture_output=True, text=True, timeout=duration + 120,
    )  # fmt: skip
    tps = re.search(r"tps = ([0-9.]+)", out.stdout)
    txns = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    if out.returncode != 0 or tps is None or txns is None:
        raise RuntimeError(f"pgbench failed: {out.stdout}\n{out.stderr}")
    return float(tps.group(1)), int(txns.group(1))


def pgbouncer_pid(bouncer: Pgbouncer) -> int:
    """pgbouncer's own pid (as root it runs under runuser, a parent process)."""
    return int((bouncer.dir / "pgbouncer.pid").read_text().split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.chdir(tempfile.gettempdir())  # `python -m hoopd` must not see a source tree first
    pg = PgServer(settings={"max_connections": "200"})
    pg.start()
    work = Path(tempfile.mkdtemp(prefix="hoopd-floors-"))
    procs: list[subprocess.Popen[bytes]] = []
    bouncer = daemon = None
    try:
        pg.execute("create database bench")
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", "10", "bench"],
            env=pg.env(), check=True, capture_output=True,
        )  # fmt: skip
        os.environ["HOOPD_BENCH_PGPW"] = pg.password
        bouncer = Pgbouncer(pg)
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, str(ROOT / "bare_relay.py"), str(bare_port), str(pg.port)]
        )
        procs.append(bare)
        wait_port(bare_port, proc=bare)
        pg_port, tcp_port = free_port(), free_port()
        cfg = config(pg_port, pg)
        cfg["connections"].append(
            {
                "name": "raw", "protocol": "tcp", "listen": f"127.0.0.1:{tcp_port}",
                "upstream": {"host": "127.0.0.1", "port": pg.port}, "auth": "none",
            }
        )  # fmt: skip
        tree_env = {"PYTHONPATH": str(ROOT.parents[1])}
        daemon = Daemon(work, cfg, env=tree_env).start()
        assert daemon.proc is not None
        token = hoopd(
            "token", "issue", "-c", str(daemon.config_path), "--sub", "bench",
            "--groups", "bench", "--ttl", "2h", env={**os.environ, **tree_env},
        ).stdout.strip()  # fmt: skip
        plain = {"PGSSLMODE": "disable", "PGDATABASE": "bench"}
        targets: dict[str, tuple[dict[str, str], int | None]] = {
            "direct": (pg.env(**plain), None),
            "pgbouncer": (pg.env(**plain, PGPORT=str(bouncer.port)), pgbouncer_pid(bouncer)),
            "bare": (pg.env(**plain, PGPORT=str(bare_port)), bare.pid),
            "hoopd-tcp": (pg.env(**plain, PGPORT=str(tcp_port)), daemon.proc.pid),
            "hoopd-pg": (
                pg.env(**plain, PGPORT=str(pg_port), PGUSER="bench", PGPASSWORD=token),
                daemon.proc.pid,
            ),
        }
        tps: dict[str, list[float]] = {k: [] for k in targets}
        cpu: dict[str, list[float]] = {k: [] for k in targets}
        names = list(targets)
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for name in order:
                env, pid = targets[name]
                before = cpu_seconds(pid) if pid else (0.0, 0.0)
                rate, txns = run_pgbench(env, args.duration)
                after = cpu_seconds(pid) if pid else (0.0, 0.0)
                us = (sum(after) - sum(before)) / txns * 1e6
                tps[name].append(rate)
                cpu[name].append(us)
                print(
                    f"round {rnd + 1} {name:10s} {rate:8.0f} tps  {us:6.1f} us CPU/txn", flush=True
                )
        print(f"\nmedians of {args.rounds} rounds, pgbench -n -S -c 8 -j 2 -T {args.duration}:")
        base = statistics.median(tps["pgbouncer"])
        for name in names:
            rate = statistics.median(tps[name])
            us = statistics.median(cpu[name])
            cpu_txt = f"{us:6.1f} us proxy CPU/txn" if targets[name][1] else ""
            print(f"  {name:10s} {rate:8.0f} tps  {rate / base:5.2f}x pgbouncer  {cpu_txt}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        if daemon is not None:
            daemon.stop()
        if bouncer is not None:
            bouncer.stop()
        pg.stop()


if __name__ == "__main__":
    main()
