#!/usr/bin/env python3
"""Masking throughput on alphanumeric-dense data (MB/s of CPU time).

Base64 (JWTs, certificates, Kubernetes Secret data, images in JSON), hex
dumps and random printable ASCII are where RE2's lazily built DFA for the
joined pattern of every rule explodes; "anchors" are runs of ``://`` and
``Q~`` whose rules fail, which the scan finds from those literals. For each config (credentials only = the
default; every built-in = ``personal``) and kind of data, a fresh process builds
a masker and masks ``--blobs`` fresh blobs of ``--kb`` KB each with
``mask_bytes``, then the same blobs ``--rounds`` more times:

* first: the first call of the process (the DFA is built while it runs: what
  a new gateway process, or a pattern whose DFA cache was just reset, pays);
* fresh: median over the other first-seen blobs;
* warm: median over the repeated calls.

    python bench/masking/bench_dense.py [--kb 40] [--blobs 6] [--rounds 3]
        [--compare-tree DIR]

``--compare-tree DIR`` also times DIR/masking (e.g. ``git archive REV masking |
tar -x -C DIR``, plus a built ``_re2scan*.so`` copied in for its C++ scan) in
the same way, for before/after figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIGS = {"default": {}, "personal": {"personal": True}}
KINDS = ("base64", "hex", "printable", "anchors")


def blobs(kind: str, count: int, size: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        if kind == "base64":
            out.append(base64.b64encode(rng.randbytes(size * 3 // 4)))
        elif kind == "hex":
            out.append(rng.randbytes(size // 2).hex().encode())
        elif kind == "printable":
            out.append(bytes(rng.randrange(32, 127) for _ in range(size)))
        else:
            # URL schemes and Azure-secret markers whose tails fail, back to
            # back: the rules found from a literal anchor (recognizers.SideForm)
            unit = rng.choice([b"ab://", b"x+y://z/", b"Q~", b"q1Q~-"])
            out.append((unit * (size // len(unit) + 1))[:size])
    return out


def child(tree: str, config: str, kind: str, kb: int, count: int, rounds: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    sys.path.insert(0, tree)
    from masking import MaskingConfig, build_masker
    from masking.engine import accelerated

    m = build_masker(
        MaskingConfig.model_validate({"recognizers": CONFIGS[config]}), b"bench-key-0123456789"
    )
    data = blobs(kind, count, kb * 1000)

    def rate(b: bytes) -> float:
        t = time.process_time()
        m.mask_bytes(b)
        return len(b) / 1e6 / max(time.process_time() - t, 1e-9)

    fresh = [rate(b) for b in data]
    warm = [rate(b) for _ in range(rounds) for b in data]
    print(
        json.dumps(
            {
                "first": fresh[0],
                "fresh": statistics.median(fresh[1:]) if count > 1 else fresh[0],
                "warm": statistics.median(warm) if warm else fresh[-1],
                "accelerated": accelerated(),
            }
        )
    )


def measure(tree: str, config: str, kind: str, args: argparse.Namespace) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            tree,
            config,
            kind,
            "--kb",
            str(args.kb),
            "--blobs",
            str(args.blobs),
            "--rounds",
            str(args.rounds),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--kb", type=int, default=40, help="blob size in KB")
    ap.add_argument("--blobs", type=int, default=6, help="fresh blobs per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="repeated passes over the blobs")
    ap.add_argument("--compare-tree", metavar="DIR", help="also time DIR/masking")
    ap.add_argument("--child", nargs=3, metavar=("TREE", "CONFIG", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.kb, args.blobs, args.rounds)
        return
    trees = {"this": ROOT}
    if args.compare_tree:
        trees["base"] = os.path.abspath(args.compare_tree)
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}; "
        f"{args.blobs} blobs of {args.kb} KB, {args.rounds} warm rounds; MB/s of CPU time"
    )
    print(f"{'config':9s} {'data':10s} {'tree':5s} {'first':>8s} {'fresh':>8s} {'warm':>8s}")
    for config in CONFIGS:
        for kind in KINDS:
            for name, tree in trees.items():
                r = measure(tree, config, kind, args)
                flag = "" if r["accelerated"] else "  (Python loop: no C++ scan)"
                print(
                    f"{config:9s} {kind:10s} {name:5s} {r['first']:8.1f} {r['fresh']:8.1f} "
                    f"{r['warm']:8.1f}{flag}",
                    flush=True,
                )
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
