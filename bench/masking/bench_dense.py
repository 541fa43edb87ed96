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
        [--compare-tree DIR] [--adversarial]

``--adversarial`` times instead input shapes that make a candidate every few
bytes and reject it (each was re-checked in Python: validator, boundaries,
the rule's own regex), 1 MB of each (``--kb 1000``; ``--blobs 1``): ``first``
is the first call of the process, ``warm`` the median of ``--rounds`` more
calls over the same bytes (``fresh`` is not printed).

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
ADVERSARIAL = {
    # one unit repeated: each makes a candidate every few bytes that fails
    "ipv6 a::": b"a::",  # '::' forms that fail their boundaries
    "hex ab:": b"ab:",  # hex groups with colons
    "azure abc1Q~": b"abc1Q~",  # Azure-like secrets glued to the next
    "email a@b.c": b"a@b.c",  # e-mail-like, half of them real
    "kv xtoken:": b"xtoken:",  # a key word whose value runs on
    "card 4111 ": b"4111 ",  # card candidates failing Luhn
    "dots 1.": b"1.",  # digits and dots
    "digits  1": b" 1",  # a list of small numbers: card candidates that fail
    "cards  4": b" 4",  # real cards, trimmed back to a separator
    "ipv6 ::.": b"::.",  # IPv6 candidates without hex digits
}


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
        elif kind in ADVERSARIAL:
            unit = ADVERSARIAL[kind]
            out.append((unit * (size // len(unit) + 1))[:size])
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
    ap.add_argument("--kb", type=int, help="blob size in KB (40; 1000 with --adversarial)")
    ap.add_argument(
        "--blobs", type=int, help="fresh blobs per measurement (6; 1 with --adversarial)"
    )
    ap.add_argument("--rounds", type=int, default=3, help="repeated passes over the blobs")
    ap.add_argument("--compare-tree", metavar="DIR", help="also time DIR/masking")
    ap.add_argument(
        "--adversarial", action="store_true", help="dense failing candidates (1 MB each)"
    )
    ap.add_argument("--child", nargs=3, metavar=("TREE", "CONFIG", "KIND"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.kb is None:
        args.kb = 1000 if args.adversarial else 40
    if args.blobs is None:
        args.blobs = 1 if args.adversarial else 6
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
    kinds = tuple(ADVERSARIAL) if args.adversarial else KINDS
    width = max(len(k) for k in kinds)
    fresh = "" if args.adversarial else f" {'fresh':>8s}"
    print(f"{'config':9s} {'data':{width}s} {'tree':5s} {'first':>8s}{fresh} {'warm':>8s}")
    for config in CONFIGS:
        for kind in kinds:
            for name, tree in trees.items():
                r = measure(tree, config, kind, args)
                flag = "" if r["accelerated"] else "  (Python loop: no C++ scan)"
                fresh = "" if args.adversarial else f" {r['fresh']:8.1f}"
                f = ".2f" if args.adversarial else ".1f"  # under 1 MB/s before
                print(
                    f"{config:9s} {kind:{width}s} {name:5s} {r['first']:8{f}}{fresh} "
                    f"{r['warm']:8{f}}{flag}",
                    flush=True,
                )
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
