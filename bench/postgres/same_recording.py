#!/usr/bin/env python3
"""Do two source trees relay and record simple-query traffic the same way?

Seeded random traffic: pipelined simple queries of 1-3 statements, answered
with rows (a masked column, content hits, tags with and without a count),
command tags, empty queries, notices and errors, the server's bytes split at
random points, sent through the in-process relay of one tree (real gateway,
recorder, scorer and masking; fake upstream login, no-op transports). The
bytes the client got and the recorded events (durations zeroed) of every
scenario go into one digest: run it on two trees and compare.

    python bench/postgres/same_recording.py /tmp/hoopd-base [--seed 7] [--scenarios 300]
    python bench/postgres/same_recording.py .
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import socket
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from own_support import pg_inproc

VALUES = [b"0", b"42", b"hello", b"s3cr3t-7", b"no s3cr3t here", b"ann@example.com"]
Statement = tuple[Any, ...]


def scenario(rng: random.Random) -> tuple[list[list[list[Statement]]], list[int], bool]:
    def statement() -> Statement:
        kind = rng.choice(["rows", "rows", "tag", "empty", "error", "notice"])
        if kind == "rows":
            values = [rng.choice(VALUES) for _ in range(rng.randint(0, 4))]
            return ("rows", rng.choice(["abalance", "ssn", "note"]), values, rng.random() < 0.3)
        if kind == "tag":
            return ("tag", rng.choice(["INSERT 0 1", "BEGIN", "SET", "UPDATE 3"]))
        return (kind,)

    groups = [
        [[statement() for _ in range(rng.randint(1, 3))] for _ in range(rng.randint(1, 3))]
        for _ in range(rng.randint(1, 4))
    ]
    cuts = [rng.randint(0, 2000) for _ in range(rng.randint(0, 4))]
    return groups, cuts, rng.random() < 0.5


def answer(stmts: list[Statement]) -> bytes:
    from protocols.postgres import _wire as w

    out = []
    for st in stmts:
        if st[0] == "rows":
            field = st[1].encode() + b"\0" + struct.pack("!IhIhih", 16397, 1, 25, -1, -1, 0)
            out.append(w.message(w.ROW_DESCRIPTION, struct.pack("!h", 1) + field))
            out += [w.data_row([v]) for v in st[2]]
            out.append(w.command_complete("SHOW" if st[3] else f"SELECT {len(st[2])}"))
        elif st[0] == "tag":
            out.append(w.command_complete(st[1]))
        elif st[0] == "empty":
            out.append(w.message(w.EMPTY_QUERY))
        elif st[0] == "notice":
            out.append(w.notice_response("00000", "note s3cr3t-9"))
        else:
            out.append(w.error_response("42P01", "relation s3cr3t-1 does not exist"))
            break
    out.append(w.ready_for_query(b"I"))
    return b"".join(out)


async def run(seed: int, scenarios: int) -> str:
    from hoopd.config import parse_config
    from hoopd.registry import Registry
    from hoopd.server import Daemon
    from protocols.postgres import _client

    _client.connect = pg_inproc.fake_connect
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="hoopd-same-"))
    raw = {
        "gateway": {"data_dir": str(work / "var"), "log_level": "warning"},
        "connections": [
            {
                "name": "db",
                "protocol": "postgres",
                "listen": f"127.0.0.1:{port}",
                "upstream": {"host": "127.0.0.1", "port": 9, "user": "u", "sslmode": "disable"},
                "auth": "none",
                "masking": {
                    "recognizers": {"personal": True},
                    "rules": [
                        {"id": "secret-word", "pattern": "s3cr3t-[0-9]+"},
                        {"id": "ssn-col", "fields": ["ssn"]},
                    ],
                },
            }
        ],
    }
    registry = Registry.from_entry_points()
    daemon = Daemon(parse_config(raw, registry), registry)
    await daemon.start()
    rng = random.Random(seed)
    digest = hashlib.sha256()
    for _ in range(scenarios):
        groups, cuts, joined = scenario(rng)
        conn, sink, events = await pg_inproc.open_client(daemon.handlers["db"])
        pg_inproc.play(conn, groups, answer, cuts, joined)
        records = pg_inproc.event_records(events)
        line = json.dumps([bytes(sink.data).hex(), records], sort_keys=True, default=str)
        digest.update(line.encode())
    await daemon.stop()
    return digest.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("tree", help="source tree to import hoopd from")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--scenarios", type=int, default=300)
    args = ap.parse_args()
    tree = Path(args.tree).resolve()
    sys.path.insert(0, str(tree))
    digest = asyncio.run(run(args.seed, args.scenarios))
    from protocols.postgres import _client

    print(f"{digest}  seed {args.seed}, {args.scenarios} scenarios, {_client.__file__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
