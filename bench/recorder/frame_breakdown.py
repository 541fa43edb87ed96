"""Where one 1 KiB Output frame's time goes in ChainWriter.append_events
(CPU time per frame, best of --rounds rounds of 4096-frame runs).

    python bench/recorder/frame_breakdown.py [--dir /dev/shm] [--rounds 30]

Rows:
  hashlib-sha256   hashlib.sha256(~1.1 KB).digest(): the pure path's hash alone
  c-loop           recorder._chainfast.append_outputs over a run (encode,
                   SHA-256 through libcrypto, three buffer pieces per frame),
                   nothing written
  py-loop          the pure-Python loop over the same run, nothing written
  join             b"".join of the run's buffer pieces
  write            os.write of the joined run to a file in --dir
  checkpoint       one signed periodic checkpoint, divided by 1000 frames

Then, per frame type of an HTTP request (protocols/http records a Command,
the request head as an Output, a Decision, the response as an Output with
masked counts and a Result) and of a pgbench statement, the C and the
pure-Python loop over runs of that one event (µs per frame), and over runs
of whole requests / statements (µs per request).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import recorder.chain
from hoopd.model import (
    Command,
    CommandKind,
    CommandResult,
    Decision,
    Event,
    Output,
    Stream,
    Verdict,
)
from recorder.chain import ChainWriter

RUN = 4096


def best(rounds: int, fn: Callable[[], object], per: int) -> float:
    """Best CPU time of fn() over rounds, in µs per item."""
    times = []
    for _ in range(rounds):
        t0 = time.process_time_ns()
        fn()
        times.append(time.process_time_ns() - t0)
    return min(times) / per / 1000


# One proxied HTTP request as protocols/http records it (fast path), and one
# pgbench statement as protocols/postgres does.
HTTP_REQUEST: list[tuple[str, Event]] = [
    ("command", Command(5, CommandKind.HTTP, "GET /api/items/7",
                        {"method": "GET", "path": "/api/items/7"})),
    ("head-output", Output(Stream.STDIN, b"GET /api/items/7 HTTP/1.1\r\nhost: upstream\r\n"
                           b"user-agent: wrk\r\nauthorization: <redacted>\r\n\r\n", 5)),
    ("decision", Decision(5, Verdict.ALLOW, 10, ("read-only request",), ("http-default",))),
    ("masked-output", Output(Stream.STDOUT, b"HTTP/1.1 200 OK\r\ncontent-type: application/json"
                             b"\r\ncontent-length: 96\r\n\r\n" + b'{"id": 7, "email": "****"}' * 4,
                             5, {"email": 1})),
    ("result", CommandResult(5, "200", 0.734, None, "")),
]
PG_STATEMENT: list[tuple[str, Event]] = [
    ("pg-command", Command(9, CommandKind.SQL, "SELECT abalance FROM pgbench_accounts "
                           "WHERE aid = 48213;", {"protocol": "simple"})),
    ("pg-decision", Decision(9, Verdict.ALLOW)),
    ("pg-rows", Output(Stream.ROWS, b"T\x00\x00\x00!\x00\x01abalance" + b"\x00" * 60)),
    ("pg-result", CommandResult(9, "SELECT 1", 0.213, 1, "")),
]


def event_rows(chain: ChainWriter, rounds: int, ts: int) -> list[tuple[str, float, float]]:
    """(name, C µs, Python µs) per event type and per request/statement."""
    fast = recorder.chain._append_outputs

    def cost(events: list[Event], per: int) -> tuple[float, float]:
        items = [(100_000 + k, ts, events[k % len(events)]) for k in range(RUN)]

        def run_loop() -> None:
            chain.buf.clear()
            chain.size = chain.flushed_size = 0
            chain.append_events(items)

        c = best(rounds, run_loop, per) if fast is not None else float("nan")
        recorder.chain._append_outputs = None
        try:
            py = best(rounds, run_loop, per)
        finally:
            recorder.chain._append_outputs = fast
        return c, py

    rows = [(name, *cost([ev], RUN)) for name, ev in HTTP_REQUEST + PG_STATEMENT]
    http = [ev for _, ev in HTTP_REQUEST]
    pg = [ev for _, ev in PG_STATEMENT]
    rows.append(("http-request", *cost(http, RUN // len(http))))
    rows.append(("pg-statement", *cost(pg, RUN // len(pg))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    ev = Output(Stream.STDOUT, os.urandom(1024))
    ts = time.time_ns()
    items = [(seq, ts, ev) for seq in range(100_000, 100_000 + RUN)]
    rows: list[tuple[str, float]] = []
    sample = os.urandom(1100)
    rows.append(("hashlib-sha256", best(args.rounds, lambda: [
        hashlib.sha256(sample).digest() for _ in range(RUN)] and None, RUN)))
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        chain = ChainWriter(
            directory=Path(tmp), session_id="b", key=Ed25519PrivateKey.generate(),
            key_fingerprint="k", rotate_bytes=1 << 62, checkpoint_frames=1 << 40,
            fsync="never", dirty=[], on_written=lambda n, b: None,
        )
        chain.open(ts)
        fast = recorder.chain._append_outputs
        recorder.chain._FLUSH_BYTES = 1 << 62  # the loops only: no writes in them

        def run_loop() -> None:
            chain.buf.clear()
            chain.size = chain.flushed_size = 0
            chain.append_events(items)

        if fast is not None:
            rows.append(("c-loop", best(args.rounds, run_loop, RUN)))
        recorder.chain._append_outputs = None
        try:
            rows.append(("py-loop", best(args.rounds, run_loop, RUN)))
        finally:
            recorder.chain._append_outputs = fast
        pieces = list(chain.buf)
        rows.append(("join", best(args.rounds, lambda: b"".join(pieces) and None, RUN)))
        data = b"".join(pieces)
        fd = os.open(Path(tmp) / "w", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            rows.append(("write", best(args.rounds, lambda: os.write(fd, data) and None, RUN)))
        finally:
            os.close(fd)
        rows.append(("checkpoint", best(args.rounds, lambda: chain.checkpoint("periodic"), 1000)))
        per_event = event_rows(chain, args.rounds, ts)
        chain.abandon()
    print(f"1 KiB Output frames, runs of {RUN}, best of {args.rounds}, CPU time; "
          f"loadavg={os.getloadavg()[0]:.2f}")
    print(f"{'piece':<16}{'µs/frame':>10}")
    for name, us in rows:
        print(f"{name:<16}{us:>10.3f}")
    print(f"\nper event type (runs of {RUN}), CPU µs per frame; per request/statement for the mixes")
    print(f"{'event':<16}{'C':>10}{'Python':>10}{'C/Py':>8}")
    for name, c, py in per_event:
        print(f"{name:<16}{c:>10.3f}{py:>10.3f}{c / py:>8.2f}")


if __name__ == "__main__":
    main()
