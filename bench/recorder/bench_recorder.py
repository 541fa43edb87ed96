"""Recorder throughput benchmark (prints a table).

    python bench/recorder/bench_recorder.py [--frames 300000] [--payload 1024]
                                            [--mixed http|pg]

Rows:
  baseline-write   msgpack-pack [seq, ts, body] + buffered write, no chaining
  core-write       ChainWriter.append_events: encode + SHA-256 chain + buffered
                   write + a signed checkpoint every 1000 frames (writer core path),
                   with the C accelerator (recorder._chainfast) when it is built
  core-write-py    the same with the pure-Python loop (as HOOPD_PURE_PYTHON=1)
  e2e-write        SessionRecording.write() on this thread -> writer thread ->
                   file, until Recorder.close() returns
  baseline-read    msgpack.Unpacker over the file, no hashing
  verify-1-job     recorder.verify.verify_session (chain + signatures), one process
  verify           the same with --jobs (default: CPU count) worker processes, as
                   `hoopd replay verify` runs: segment files are checked in parallel
Each event is an Output with a --payload byte chunk; ratios are vs the baseline.
With --mixed, the events are instead those of HTTP requests (Command, head
Output, Decision, Output with masked counts, Result) or of pgbench statements
(Command, Decision, rows Output, Result), in turn (see frame_breakdown.py).
core-write and e2e-write rotate files at --rotate bytes (the config default),
so the session verified is split into files as a real one would be.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from frame_breakdown import HTTP_REQUEST, PG_STATEMENT  # this script's directory

import recorder.chain
from hoopd.model import Event, Output, Stream
from recorder.chain import ChainWriter
from recorder.codec import event_body
from recorder.keys import key_fingerprint
from recorder.reader import make_unpacker, segment_files
from recorder.verify import Status, verify_session
from recorder.writer import Recorder, RecorderSettings


def bench_baseline_write(path: Path, events: list[Event], n: int) -> float:
    pack = msgpack.Packer().pack
    ts = time.time_ns()
    with open(path, "wb", buffering=0) as f:
        buf: list[bytes] = []
        t0 = time.perf_counter()
        for seq in range(1, n + 1):
            buf.append(pack([seq, ts, event_body(events[seq % len(events)])]))
            if len(buf) >= 4096:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))
        return time.perf_counter() - t0


def bench_core_write(
    directory: Path, key: Ed25519PrivateKey, events: list[Event], n: int, rotate: int,
    session_id: str = "core",
) -> float:
    chain = ChainWriter(
        directory=directory, session_id=session_id, key=key,
        key_fingerprint=key_fingerprint(key.public_key()), rotate_bytes=rotate,
        checkpoint_frames=1000, fsync="never", dirty=[], on_written=lambda n, b: None,
    )
    chain.open(time.time_ns())
    ts = time.time_ns()
    t0 = time.perf_counter()
    # as the writer thread does: runs of one session's queued events, a
    # flush per batch of 4096
    for start in range(1, n + 1, 4096):
        chain.append_events([
            (seq, ts, events[seq % len(events)])
            for seq in range(start, min(start + 4096, n + 1))
        ])
        chain.flush()
    chain.close()
    return time.perf_counter() - t0


def bench_e2e_write(
    directory: Path, key: Ed25519PrivateKey, events: list[Event], n: int, rotate: int
) -> float:
    rec = Recorder(RecorderSettings(dir=directory, rotate_bytes=rotate, fsync="never",
                                    queue_max_frames=n + 1), key)
    rec.start()
    t0 = time.perf_counter()
    sess = rec.open_session("e2e")
    write = sess.write
    m = len(events)
    for k in range(n):
        write(events[k % m])
    sess.close()
    rec.close(timeout=600)
    return time.perf_counter() - t0


def bench_baseline_read(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        count = sum(1 for _ in make_unpacker(f))
    return time.perf_counter() - t0, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=300_000)
    ap.add_argument("--payload", type=int, default=1024, help="bytes of output per event")
    ap.add_argument("--dir", type=Path, help="scratch directory (default: a temp dir)")
    ap.add_argument("--rotate", type=int, default=64 << 20, help="segment size (bytes)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="verify processes")
    ap.add_argument("--mixed", choices=("http", "pg"),
                    help="the events of HTTP requests / pgbench statements instead of Outputs")
    args = ap.parse_args()
    n = args.frames
    accelerated = recorder.chain.accelerated()
    key = Ed25519PrivateKey.generate()
    if args.mixed:
        events = [ev for _, ev in (HTTP_REQUEST if args.mixed == "http" else PG_STATEMENT)]
    else:
        events = [Output(Stream.STDOUT, os.urandom(args.payload))]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        rows = []
        base = bench_baseline_write(d / "plain.msgpack", events, n)
        rows.append(("baseline-write", n / base, 1.0))
        core = bench_core_write(d, key, events, n, args.rotate)
        rows.append(("core-write" if accelerated else "core-write (no C)", n / core, base / core))
        fast, recorder.chain._append_outputs = recorder.chain._append_outputs, None
        try:
            core_py = bench_core_write(d, key, events, n, args.rotate, "core-py")
        finally:
            recorder.chain._append_outputs = fast
        rows.append(("core-write-py", n / core_py, base / core_py))
        e2e = bench_e2e_write(d, key, events, n, args.rotate)
        rows.append(("e2e-write", n / e2e, base / e2e))
        rbase, _ = bench_baseline_read(d / "plain.msgpack")
        rows.append(("baseline-read", n / rbase, 1.0))
        for name, jobs in (("verify-1-job", 1), ("verify", args.jobs)):
            t0 = time.perf_counter()
            result = verify_session(d / "core", key.public_key(), jobs=jobs)
            ver = time.perf_counter() - t0
            assert result.status is Status.OK, result.summary()
            rows.append((name, result.frames / ver, rbase / ver * result.frames / n))
        files = result.files
        size = sum(p.stat().st_size for _, p in segment_files(d / "core"))
    what = f"mixed={args.mixed}" if args.mixed else f"payload={args.payload}B"
    print(f"frames={n} {what} session={size / 1e6:.1f}MB in {files} file(s) "
          f"verify jobs={args.jobs} python={sys.version.split()[0]} "
          f"accelerator={'recorder._chainfast' if accelerated else 'none'} "
          f"loadavg={os.getloadavg()[0]:.2f}")
    print(f"{'path':<16}{'frames/s':>12}{'vs baseline':>13}")
    for name, rate, ratio in rows:
        print(f"{name:<16}{rate:>12,.0f}{ratio:>12.2f}x")


if __name__ == "__main__":
    main()
