"""Postgres benchmark: direct vs pgbouncer vs hoopd, in one run.

    python bench/postgres/bench_postgres.py [--duration 20] [--rounds 2] [--skip-stream]

1. ``pgbench -S -c 8 -j 2 -T DURATION`` alternating direct / pgbouncer
   (session pooling) / hoopd (recording, risk scoring, a masking rule on),
   ROUNDS times; reports TPS and ratios.
2. A ~100 MB result streamed to a raw socket client (asyncio, no libpq),
   direct vs hoopd with content masking on and no hits.
3. hoopd RSS growth while streaming ~1 GB.
4. hoopd RSS with 1,000 idle sessions.

Everything runs on loopback; PostgreSQL comes from tests/support/pgserver.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from protocols.postgres import _wire as w  # noqa: E402
from protocols.postgres._upstream import UpstreamProtocol, _login  # noqa: E402
from tests.helpers import Daemon, free_port, hoopd, wait_port  # noqa: E402
from tests.support.pgserver import PgServer  # noqa: E402

STREAM_Q = "select * from generate_series(1, {n}) g, md5(g::text)"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pgbench(env: dict[str, str], duration: int) -> float:
    r = subprocess.run(
        ["pgbench", "-n", "-S", "-c", "8", "-j", "2", "-T", str(duration), "bench"],
        env=env, capture_output=True, text=True, timeout=duration + 120,
    )  # fmt: skip
    m = re.search(r"tps = ([0-9.]+)", r.stdout)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"pgbench failed: {r.stdout}\n{r.stderr}")
    return float(m.group(1))


class Pgbouncer:
    def __init__(self, pg: PgServer) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="hoopd-pgb-"))
        (self.dir / "users.txt").write_text(f'"{pg.user}" "{pg.password}"\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"bench = host=127.0.0.1 port={pg.port} dbname=bench user={pg.user} "
            f"password={pg.password}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir = {self.dir}\n"
            "auth_type = plain\n"
            f"auth_file = {self.dir}/users.txt\n"
            "pool_mode = session\nmax_client_conn = 200\ndefault_pool_size = 20\n"
            f"logfile = {self.dir}/pgbouncer.log\npidfile = {self.dir}/pgbouncer.pid\n"
        )
        cmd = ["pgbouncer", str(self.dir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in [self.dir, *self.dir.iterdir()]:
                os.chown(p, pw.pw_uid, pw.pw_gid)
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


async def raw_login(port: int, user: str, password: str, database: str) -> UpstreamProtocol:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(UpstreamProtocol, "127.0.0.1", port)
    up = SimpleNamespace(
        host="127.0.0.1", port=port, user=user, sslmode="disable", ca=None,
        password=SimpleNamespace(reveal=lambda: password),
    )
    await _login(proto, up, {"user": user, "database": database})
    return proto


async def stream(port: int, user: str, password: str, rows: int) -> tuple[float, int]:
    """Seconds and bytes to drain one big result on a raw socket."""
    proto = await raw_login(port, user, password, "bench")
    done = asyncio.get_running_loop().create_future()
    total = 0
    tail = b""

    def on_data(data: bytes) -> None:
        nonlocal total, tail
        total += len(data)
        tail = (tail + data[-16:])[-16:]
        if tail.endswith(b"Z\x00\x00\x00\x05I") and not done.done():
            done.set_result(None)

    proto.on_data = on_data
    assert proto.transport is not None
    started = time.perf_counter()
    proto.transport.write(w.query(STREAM_Q.format(n=rows)))
    await done
    elapsed = time.perf_counter() - started
    proto.transport.write(w.terminate())
    proto.transport.close()
    return elapsed, total


async def idle_sessions(port: int, token: str, count: int) -> list[UpstreamProtocol]:
    out = []
    sem = asyncio.Semaphore(16)

    async def one() -> None:
        async with sem:
            out.append(await raw_login(port, "bench", token, "bench"))

    await asyncio.gather(*(one() for _ in range(count)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--stream-rows", type=int, default=2_000_000)
    ap.add_argument("--big-rows", type=int, default=20_000_000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--skip-pgbench", action="store_true")
    ap.add_argument("--skip-big", action="store_true", help="skip the 1 GB RSS and idle-session checks")
    args = ap.parse_args()

    pg = PgServer(settings={"max_connections": "1200", "shared_buffers": "256MB"})
    pg.start()
    work = Path(tempfile.mkdtemp(prefix="hoopd-pgbench-"))
    bouncer = daemon = None
    try:
        pg.execute("create database bench")
        subprocess.run(
            ["pgbench", "-i", "-q", "-s", "10", "bench"], env=pg.env(), check=True, capture_output=True
        )
        bouncer = Pgbouncer(pg)
        port = free_port()
        os.environ["HOOPD_BENCH_PGPW"] = pg.password
        config = {
            "connections": [
                {
                    "name": "bench",
                    "protocol": "postgres",
                    "listen": f"127.0.0.1:{port}",
                    "upstream": {
                        "host": "127.0.0.1", "port": pg.port, "user": pg.user,
                        "password": "env:HOOPD_BENCH_PGPW", "database": "bench",
                        "sslmode": "disable",
                    },
                    "allow_groups": ["bench"],
                    "masking": {"rules": [{"id": "secret-word", "pattern": "s3cr3t-[0-9]+"}]},
                    "risk": {"rules": [{"match": "delete_without_where", "action": "review"}]},
                    "options": {"allow_plaintext_loopback": True, "passthrough": ["database"]},
                }
            ]
        }
        daemon = Daemon(work, config).start()
        assert daemon.proc is not None
        token = hoopd(
            "token", "issue", "-c", str(daemon.config_path), "--sub", "bench", "--groups", "bench",
            "--ttl", "2h",
        ).stdout.strip()
        envs = {
            "direct": pg.env(PGSSLMODE="disable", PGDATABASE="bench"),
            "pgbouncer": pg.env(PGSSLMODE="disable", PGPORT=str(bouncer.port), PGDATABASE="bench"),
            "hoopd": pg.env(
                PGSSLMODE="disable", PGPORT=str(port), PGPASSWORD=token, PGUSER="bench",
                PGDATABASE="bench",
            ),
        }
        results: dict[str, list[float]] = {k: [] for k in envs}
        for rnd in range(0 if args.skip_pgbench else args.rounds):
            for name, env in envs.items():
                tps = pgbench(env, args.duration)
                results[name].append(tps)
                print(f"round {rnd + 1} {name:10s} tps {tps:10.1f}", flush=True)
        if not args.skip_pgbench:
            med = {k: statistics.median(v) for k, v in results.items()}
            print(
                f"pgbench -S -c 8 -j 2 -T {args.duration} (median of {args.rounds}): "
                f"direct {med['direct']:.0f}, pgbouncer {med['pgbouncer']:.0f}, "
                f"hoopd {med['hoopd']:.0f} tps; "
                f"hoopd/pgbouncer {med['hoopd'] / med['pgbouncer']:.2f}x, "
                f"hoopd/direct {med['hoopd'] / med['direct']:.2f}x"
            )
        if args.skip_stream:
            return
        pid = daemon.proc.pid
        times: dict[str, list[float]] = {"direct": [], "hoopd": []}
        size = 0
        for _ in range(max(2, args.rounds)):
            t, size = asyncio.run(stream(pg.port, pg.user, pg.password, args.stream_rows))
            times["direct"].append(t)
            t, _ = asyncio.run(stream(port, "bench", token, args.stream_rows))
            times["hoopd"].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        print(
            f"stream {size / 1e6:.1f} MB (alternating, {len(times['hoopd'])} each): "
            f"direct median {med['direct']:.2f} s, hoopd median {med['hoopd']:.2f} s, "
            f"ratio {med['hoopd'] / med['direct']:.2f}x; best {best['direct']:.2f} / "
            f"{best['hoopd']:.2f} s, {best['hoopd'] / best['direct']:.2f}x"
        )
        if args.skip_big:
            return
        before = rss_kb(pid)
        peak = before
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, rss_kb(pid))
                time.sleep(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t, size = asyncio.run(stream(port, "bench", token, args.big_rows))
        stop.set()
        th.join()
        print(
            f"stream {size / 1e9:.2f} GB through hoopd in {t:.1f} s: RSS before {before / 1024:.1f} MB, "
            f"peak {peak / 1024:.1f} MB, growth {(peak - before) / 1024:.1f} MB"
        )

        async def idle() -> None:
            base = rss_kb(pid)
            conns = await idle_sessions(port, token, args.idle)
            await asyncio.sleep(1.0)
            now = rss_kb(pid)
            print(
                f"{len(conns)} idle sessions: hoopd RSS {now / 1024:.1f} MB "
                f"(before {base / 1024:.1f} MB, +{(now - base) / 1024:.1f} MB)"
            )
            for c in conns:
                if c.transport is not None:
                    c.transport.write(w.terminate())
                    c.transport.close()

        asyncio.run(idle())
    finally:
        if daemon is not None:
            daemon.stop()
        if bouncer is not None:
            bouncer.stop()
        pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
