#!/usr/bin/env python3
"""CPU per ``pgbench -S`` statement of the postgres handler, in-process and
without sockets.

The real daemon (gateway, recorder thread, risk scorer, masking, metrics)
runs in this process. One client connection logs in through the real
handshake (StartupMessage, cleartext password = an API key, plaintext on
loopback) with the upstream login replaced by a fake one; then both sides get
no-op transports and every iteration feeds the client side one pgbench
``SELECT abalance FROM pgbench_accounts WHERE aid = N;`` (simple protocol,
N varies like pgbench's) and the upstream side PostgreSQL 15's 4-message
answer to it (RowDescription, DataRow, CommandComplete ``SELECT 1``,
ReadyForQuery), through the same ``data_received`` entry points uvloop calls.

Per batch it reports, per statement:

* ``loop``: CPU of the event-loop thread (``time.thread_time`` read once per
  batch), i.e. the handler, session and enqueueing of recorded events;
* ``all``: CPU of the whole process (``time.process_time``) over the batch,
  which waits for the recorder thread to drain its queue after every 1,000
  statements (``CHUNK``, below the recorder's backpressure mark): adds the
  recorder thread.

Medians (and best) over the batches are printed. The connection config is the
one ``bench_postgres.py`` uses: recording on, risk scoring on (default
thresholds + a ``delete_without_where`` rule), masking on (default
recognizers + a ``pattern`` rule that never hits).

    python bench/postgres/inproc_postgres.py [--statements 4000] [--batches 7] [--profile]

A/B against another tree (e.g. a ``git worktree`` of an older commit),
alternating child processes, each importing its tree first:

    git worktree add /tmp/hoopd-base <commit>
    python bench/postgres/inproc_postgres.py --compare-tree /tmp/hoopd-base --rounds 6

``--callgrind`` counts instructions instead (valgrind; two runs per tree, of
N and 5N statements, so start-up cancels out): slow (minutes) but the same
on a busy machine as on an idle one.

    python bench/postgres/inproc_postgres.py --callgrind --statements 500 --compare-tree /tmp/hoopd-base

``--events N``: print the recorded events of N statements as JSON lines
(timestamps and durations zeroed), to check that two trees record the same.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from own_support import MemoryTransport, pg_inproc

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]

KEY = "hak_bench_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"


def _tree_from_argv() -> Path:
    if "--tree" in sys.argv:
        return Path(sys.argv[sys.argv.index("--tree") + 1]).resolve()
    return ROOT


TREE = _tree_from_argv()
sys.path.insert(0, str(TREE))


def backend_answer() -> bytes:
    """PostgreSQL 15's answer to a pgbench -S SELECT (table OID as in a
    `pgbench -i` database; abalance is 0 until a write test ran)."""
    from protocols.postgres import _wire as w

    field = b"abalance\x00" + struct.pack("!IhIhih", 16397, 3, 23, 4, -1, 0)
    return (
        w.message(w.ROW_DESCRIPTION, struct.pack("!h", 1) + field)
        + w.data_row([b"0"])
        + w.command_complete("SELECT 1")
        + w.ready_for_query(b"I")
    )


def queries(n: int, seed: int = 1) -> list[bytes]:
    from protocols.postgres import _wire as w

    rng = random.Random(seed)
    return [
        w.query(f"SELECT abalance FROM pgbench_accounts WHERE aid = {rng.randint(1, 1_000_000)};")
        for _ in range(n)
    ]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_connection(work: Path) -> tuple[Any, Any, Any, Any]:
    """(daemon, client connection, upstream protocol, recorder) after a real
    client handshake against a fake upstream login."""
    from hoopd.config import parse_config
    from hoopd.identity.apikeys import hash_api_key
    from hoopd.registry import Registry
    from hoopd.server import Daemon
    from protocols.postgres import _client
    from protocols.postgres import _wire as w
    from protocols.postgres._upstream import LoginResult, UpstreamProtocol

    raw = {
        "gateway": {"data_dir": str(work / "var"), "log_level": "warning"},
        "identity": {"api_keys": [{"name": "bench", "sha256": hash_api_key(KEY), "groups": ["bench"]}]},
        "connections": [
            {
                "name": "bench",
                "protocol": "postgres",
                "listen": f"127.0.0.1:{free_port()}",
                "upstream": {
                    "host": "127.0.0.1", "port": 9, "user": "bench", "database": "bench",
                    "sslmode": "disable",
                },
                "allow_groups": ["bench"],
                "masking": {"rules": [{"id": "secret-word", "pattern": "s3cr3t-[0-9]+"}]},
                "risk": {"rules": [{"match": "delete_without_where", "action": "review"}]},
                "options": {"allow_plaintext_loopback": True, "passthrough": ["database"]},
            }
        ],
    }  # fmt: skip
    registry = Registry.from_entry_points()
    daemon = Daemon(parse_config(raw, registry), registry)
    await daemon.start()
    handler = daemon.handlers["bench"]
    up = UpstreamProtocol()
    up.connection_made(MemoryTransport())

    async def fake_connect(upstream: Any, startup: dict[str, str]) -> tuple[Any, Any]:
        login = LoginResult(
            parameters=[
                ("server_version", "15.8"),
                ("client_encoding", "UTF8"),
                ("DateStyle", "ISO, MDY"),
            ],
            backend_pid=4242,
            backend_key=12345678,
        )
        return up, login

    _client.connect = fake_connect
    loop = asyncio.get_running_loop()
    seen = bytearray()
    ready = loop.create_future()

    def from_gateway(data: bytes) -> None:
        seen.extend(data)
        if not ready.done() and (
            b"R\x00\x00\x00\x08\x00\x00\x00\x03" in seen or b"Z\x00\x00\x00\x05" in seen
        ):
            ready.set_result(None)

    client_transport = MemoryTransport(from_gateway)
    conn = _client.ClientConnection(handler)  # type: ignore[arg-type]
    conn.connection_made(client_transport)
    conn.data_received(
        w.startup_message({"user": "bench", "database": "bench", "application_name": "pgbench"})
    )
    await asyncio.wait_for(ready, 10)  # the cleartext password request
    seen.clear()
    ready = loop.create_future()
    conn.data_received(w.password_message(KEY))
    await asyncio.wait_for(ready, 10)  # ReadyForQuery
    await asyncio.sleep(0.05)
    assert conn._relay and conn.session is not None, "handshake did not finish"
    pg_inproc.prime_catalog(conn)
    client_transport.on_write = None
    assert daemon.gateway is not None
    return daemon, conn, up, daemon.gateway.recorder


async def drain(recorder: Any) -> None:
    for _ in range(2000):
        if not recorder._queue:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.002)


CHUNK = 1000
"""Statements between waits for the recorder to catch up: 4 events each stay
under the recorder's backpressure mark (10,000 queued frames), so no
statement takes the congested path."""


def wait_drained(recorder: Any) -> None:
    """Block (GIL released, no event-loop work) until the recorder's queue is
    empty: costs the loop thread next to nothing, also under callgrind."""
    while recorder._queue:
        time.sleep(0.002)


async def close(daemon: Any, conn: Any) -> None:
    from protocols.postgres import _wire as w

    conn.data_received(w.terminate())
    conn.connection_lost(None)
    await daemon.stop()


async def measure(n: int, batches: int, profile: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="hoopd-inproc-pg-"))
    daemon, conn, up, recorder = await open_connection(work)
    answer = backend_answer()
    qs = queries(n)
    client_in = conn.data_received
    server_in = up.data_received
    start = conn.session._command_seq

    chunks = [qs[i : i + CHUNK] for i in range(0, len(qs), CHUNK)]

    def batch() -> None:
        for chunk in chunks:
            for q in chunk:
                client_in(q)
                server_in(answer)
            wait_drained(recorder)

    # warm-up (caches, first RowDescription)
    batch()
    await drain(recorder)
    loop_us: list[float] = []
    all_us: list[float] = []
    thread_time, process_time = time.thread_time, time.process_time
    for _ in range(batches):
        p0, t0 = process_time(), thread_time()
        batch()
        t1, p1 = thread_time(), process_time()
        loop_us.append((t1 - t0) / n * 1e6)
        all_us.append((p1 - p0) / n * 1e6)
        await asyncio.sleep(0)
    done = conn.session._command_seq - start
    assert done == n * (batches + 1), f"{done} commands recorded, expected {n * (batches + 1)}"
    if profile:
        if profile == "cprofile":
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            batch()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        else:
            from line_profiler import LineProfiler

            lp = LineProfiler()
            for spec in profile.split(","):
                mod, _, qual = spec.rpartition(":")
                obj: Any = __import__(mod, fromlist=["x"])
                for part in qual.split("."):
                    obj = getattr(obj, part)
                lp.add_function(obj)
            lp.runcall(batch)
            lp.print_stats(output_unit=1e-6)
        await drain(recorder)
    await close(daemon, conn)
    import protocols.postgres._client as c

    return {
        "tree": str(TREE),
        "module": c.__file__,
        "n": n,
        "loop_us": loop_us,
        "all_us": all_us,
    }


async def events(n: int) -> list[dict[str, Any]]:
    """The recorded events of n statements, as records (ts/duration zeroed)."""
    work = Path(tempfile.mkdtemp(prefix="hoopd-inproc-pg-"))
    daemon, conn, up, recorder = await open_connection(work)
    captured = pg_inproc.spy_events(conn.session.recording)
    answer = backend_answer()
    for q in queries(n):
        conn.data_received(q)
        up.data_received(answer)
    await drain(recorder)
    await close(daemon, conn)
    out = [{"type": kind, **rec} for kind, rec in pg_inproc.event_records(captured)]
    return out


def child_main(args: argparse.Namespace) -> int:
    import uvloop

    if args.events:
        for r in uvloop.run(events(args.events)):
            print(json.dumps(r, sort_keys=True, default=str))
        return 0
    res = uvloop.run(measure(args.statements, args.batches, args.profile))
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"tree {res['tree']} ({res['module']})")
    for key in ("loop_us", "all_us"):
        v = res[key]
        print(f"{key[:-3]:5s} median {statistics.median(v):6.1f} us/statement   best {min(v):6.1f}   "
              f"({', '.join(f'{x:.1f}' for x in v)})")  # fmt: skip
    return 0


def run_child(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, str(HERE), "--tree", str(tree), "--json",
        "--statements", str(args.statements), "--batches", str(args.batches),
    ]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "0"}
    )
    if r.returncode != 0:
        raise SystemExit(f"child for {tree} failed:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def compare_main(args: argparse.Namespace) -> int:
    trees = {"base": Path(args.compare_tree).resolve(), "this": TREE}
    got: dict[str, dict[str, list[float]]] = {k: {"loop_us": [], "all_us": []} for k in trees}
    for rnd in range(args.rounds):
        order = list(trees.items()) if rnd % 2 == 0 else list(trees.items())[::-1]
        for name, tree in order:
            res = run_child(tree, args)
            for key in ("loop_us", "all_us"):
                got[name][key].append(statistics.median(res[key]))
            print(
                f"round {rnd + 1} {name:4s} loop {statistics.median(res['loop_us']):6.1f}  "
                f"all {statistics.median(res['all_us']):6.1f} us/statement",
                flush=True,
            )
    print(f"base = {trees['base']}, this = {trees['this']}; medians of {args.rounds} rounds:")
    for key in ("loop_us", "all_us"):
        b = statistics.median(got["base"][key])
        t = statistics.median(got["this"][key])
        print(f"  {key[:-3]:5s} base {b:6.1f}  this {t:6.1f} us/statement  ({t / b:.2f}x)")
    return 0


def callgrind_instructions(tree: Path, statements: int) -> dict[str, int]:
    """Instructions executed by the main thread and by all threads (under
    callgrind) for a run of ``statements`` (plus as many warm-up) statements."""
    out = Path(tempfile.mkdtemp(prefix="hoopd-callgrind-")) / "cg.out"
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
        os.path.realpath(sys.executable), str(HERE), "--tree", str(tree),
        "--statements", str(statements), "--batches", "1",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"callgrind run for {tree} failed:\n{r.stderr[-2000:]}")
    totals = {}
    for f in sorted(out.parent.glob("cg.out-*")):
        for line in f.read_text().splitlines():
            if line.startswith("summary:"):
                totals[f.name] = int(line.split()[1])
    main_file = min(totals)  # cg.out-01: the thread that started first
    return {"main": totals[main_file], "all": sum(totals.values())}


def callgrind_main(args: argparse.Namespace) -> int:
    """Instructions per statement (main thread = event loop, and all threads)
    from two callgrind runs per tree (N and 5N statements; the difference
    cancels start-up). Deterministic, unlike CPU time on a shared machine."""
    trees = {"this": TREE}
    if args.compare_tree:
        trees = {"base": Path(args.compare_tree).resolve(), "this": TREE}
    small, large = args.statements, 5 * args.statements
    per: dict[str, dict[str, float]] = {}
    for name, tree in trees.items():
        a = callgrind_instructions(tree, small)
        b = callgrind_instructions(tree, large)
        n = 2 * (large - small)  # each run does a warm-up batch too
        per[name] = {k: (b[k] - a[k]) / n for k in ("main", "all")}
        print(
            f"{name:4s} ({tree}): loop thread {per[name]['main']:9.0f} instructions/statement, "
            f"all threads {per[name]['all']:9.0f}",
            flush=True,
        )
    if "base" in per:
        for k, label in (("main", "loop thread"), ("all", "all threads")):
            print(f"  {label}: this/base {per['this'][k] / per['base'][k]:.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--statements", type=int, default=4000, help="statements per batch")
    ap.add_argument("--batches", type=int, default=7)
    ap.add_argument("--tree", help="import hoopd from this source tree (default: this one)")
    ap.add_argument(
        "--compare-tree", help="A/B: alternate child processes between that tree and this one"
    )
    ap.add_argument("--rounds", type=int, default=6, help="with --compare-tree: processes per tree")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--callgrind",
        action="store_true",
        help="count instructions per statement under valgrind (--statements N: runs of N and 5N)",
    )
    ap.add_argument(
        "--events", type=int, default=0, help="print the recorded events of N statements"
    )
    ap.add_argument(
        "--profile",
        help="'cprofile', or line_profiler on module:Qual.name[,...] "
        "(e.g. protocols.postgres._client:ClientConnection._backend)",
    )
    args = ap.parse_args()
    if args.callgrind:
        return callgrind_main(args)
    if args.compare_tree:
        return compare_main(args)
    return child_main(args)


if __name__ == "__main__":
    sys.exit(main())
