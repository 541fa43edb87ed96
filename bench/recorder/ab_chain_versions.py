"""ChainWriter throughput of older commits vs the working tree, in one process.

    python bench/recorder/ab_chain_versions.py [--frames 50000] [--rounds 5]

Loads recorder/chain.py as of fea9a3b (session 1), 79030d0 (hand-built
Output payloads) and ff93ab5 (runs of events, end of session 3) from git next to the current module and times them in
alternating rounds with CPU time (time.process_time), 1 KiB Output events,
64 MiB rotation, a signed checkpoint every 1000 frames, files on /dev/shm.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

import recorder.chain as current  # noqa: E402
from hoopd.model import Output, Stream  # noqa: E402
from recorder.keys import key_fingerprint  # noqa: E402


def load(commit: str, tmp: Path) -> ModuleType:
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:recorder/chain.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    path = tmp / f"chain_{commit}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"chain_{commit}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def run(mod: ModuleType, directory: str, n: int, key: Ed25519PrivateKey, ev: Output) -> float:
    chain = mod.ChainWriter(
        directory=Path(directory), session_id="core", key=key,
        key_fingerprint=key_fingerprint(key.public_key()), rotate_bytes=64 << 20,
        checkpoint_frames=1000, fsync="never", dirty=[], on_written=lambda n, b: None,
    )
    chain.open(time.time_ns())
    ts = time.time_ns()
    first = 100_000
    t0 = time.process_time()
    if hasattr(chain, "append_events"):
        for start in range(first, first + n, 4096):
            chain.append_events([(s, ts, ev) for s in range(start, min(start + 4096, first + n))])
            chain.flush()
    else:
        for seq in range(first, first + n):
            chain.append_event(seq, ts, ev)
            if not seq & 4095:
                chain.flush()
    chain.close()
    return n / (time.process_time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    ev = Output(Stream.STDOUT, os.urandom(1024))
    with tempfile.TemporaryDirectory() as tmp:
        versions = {
            "session 1 (fea9a3b)": load("fea9a3b", Path(tmp)),
            "hand-built Output payload (79030d0)": load("79030d0", Path(tmp)),
            "runs of events, session 3 (ff93ab5)": load("ff93ab5", Path(tmp)),
            "working tree": current,
        }
        results: dict[str, list[float]] = {k: [] for k in versions}
        for _ in range(args.rounds):
            for name, mod in versions.items():
                with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
                    results[name].append(run(mod, d, args.frames, key, ev))
    for name, rates in results.items():
        rates.sort()
        print(f"{name:<40} best {rates[-1]:>10,.0f}  median {rates[len(rates) // 2]:>10,.0f} frames/s")


if __name__ == "__main__":
    main()
