#!/usr/bin/env python3
"""Masking throughput benchmark.

Prints MB/s for corpora where 1% and 20% of lines carry a sensitive value
(whole-buffer and streaming in 64 KiB chunks), µs per short field (row masker),
and baselines measured in the same run (a memchr pass and a raw RE2 scan of
the same combined pattern with no Python work per match), so results can be
compared as ratios across machines.

    python bench/masking/bench_masking.py [--mb 16] [--repeat 3] [--fields 200000]
        [--cpu-time] [--compare-tree DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import time
import types
from collections.abc import Callable

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

WORDS = [
    *[
        "request",
        "served",
        "user",
        "session",
        "cache",
        "miss",
        "hit",
        "upstream",
        "latency",
        "ok",
        "error",
        "retry",
    ],
    *[
        "connection",
        "closed",
        "opened",
        "query",
        "select",
        "from",
        "where",
        "table",
        "rows",
        "returned",
        "bytes",
    ],
    *[
        "worker",
        "pool",
        "queue",
        "job",
        "started",
        "finished",
        "status",
        "processing",
        "handler",
        "route",
    ],
]


def _luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def secret(rng: random.Random) -> str:
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def r(n: int, alphabet: str = alnum) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    kind = rng.randrange(10)
    if kind == 0:
        return f"user {r(6).lower()}.{r(5).lower()}@example.com logged in"
    if kind == 1:
        return f"card {_luhn_card(rng)} charged"
    if kind == 2:
        return (
            f"ssn {rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)} on file"
        )
    if kind == 3:
        return f"key AKIA{r(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567')} used"
    if kind == 4:
        return f"dsn postgres://app:{r(12)}@db.internal:5432/app"
    if kind == 5:
        return f"password={r(14)} accepted"
    if kind == 6:
        return f"from 10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)} accepted"
    if kind == 7:
        return f"auth ghp_{r(36)} ok"
    if kind == 8:
        return f"call +1 415-555-{rng.randint(1000, 9999)} placed"
    return "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + r(43)


def corpus(size: int, ratio: float, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    lines = []
    total = 0
    n = 0
    while total < size:
        n += 1
        ts = f"2026-11-27T15:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z"
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12)))
        rid = f"{rng.getrandbits(64):016x}"
        line = f"{ts} INFO [{rid}] {body} took={rng.randint(1, 999)}ms"
        if rng.random() < ratio:
            line += " " + secret(rng)
        lines.append(line)
        total += len(line) + 1
    return ("\n".join(lines) + "\n").encode()


CLOCK = time.perf_counter


def load_tree(root: str) -> types.ModuleType:
    """The ``masking`` package of another checkout, imported as ``masking_base``."""
    pkg = os.path.join(os.path.abspath(root), "masking")
    spec = importlib.util.spec_from_file_location(
        "masking_base", os.path.join(pkg, "__init__.py"), submodule_search_locations=[pkg]
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["masking_base"] = mod
    spec.loader.exec_module(mod)
    return mod


def short_fields(n: int) -> list[bytes]:
    rng = random.Random(7)
    fields = []
    for i in range(n):
        k = i % 100
        if k == 0:
            fields.append(
                f"{rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}".encode()
            )
        elif k < 40:
            fields.append(rng.choice(WORDS).encode() + b" " + rng.choice(WORDS).encode())
        elif k < 70:
            fields.append(str(rng.randrange(10**6)).encode())
        else:
            fields.append(f"{rng.choice(WORDS)}-{rng.randrange(10**4)}".encode())
    return fields


def cases(
    mod: types.ModuleType,
    corpora: dict[str, bytes],
    fields: list[bytes],
    chunk: int,
    keep_results: bool = False,
) -> dict[str, Callable[[], object]]:
    """name -> one timed pass, for the masking package ``mod``."""
    cfg = mod.MaskingConfig.model_validate({"recognizers": {"credentials": True, "personal": True}})
    masker = mod.build_masker(cfg, b"bench-key-0123456789abcdef")
    main_rx = masker._main
    assert main_rx is not None
    out: dict[str, Callable[[], object]] = {}

    def raw_scan(data: bytes) -> int:
        pos, n, count = 0, len(data), 0
        while True:
            spans = main_rx.search(data, pos, n)
            if spans is None:
                return count
            count += 1
            pos = spans[0][1] if spans[0][1] > pos else pos + 1

    def streamed(d: bytes) -> None:
        s = masker.stream()
        for i in range(0, len(d), chunk):
            s.feed(d[i : i + chunk])
        s.flush()

    for label, data in corpora.items():
        out[f"{label} raw"] = lambda d=data: raw_scan(d)  # type: ignore[misc]
        out[f"{label} whole"] = lambda d=data: masker.mask_bytes(d)  # type: ignore[misc]
        out[f"{label} stream"] = lambda d=data: streamed(d)  # type: ignore[misc]
    rows = masker.rows([mod.Column("note", "t", "text")])

    # results are dropped as a protocol drops each row once sent (a list of 200k
    # result rows kept alive makes the cyclic GC walk it again and again, which
    # --keep-results measures too)
    def each(fn: Callable[[bytes], object]) -> object:
        if keep_results:  # the earlier method: [fn(f) for f in fields]
            return [fn(f) for f in fields]
        for f in fields:
            fn(f)
        return None

    out["rows"] = lambda: each(lambda f: rows.mask((f,)))
    out["mask_value"] = lambda: each(masker.mask_value)
    out["field raw"] = lambda: each(lambda f: main_rx.search(f, 0, len(f)))
    out["_masker"] = lambda: masker
    return out


def _scan_kind(masker: object) -> str:
    """Which candidate scan a masker uses (trees before the C++ one have no flag)."""
    if getattr(masker, "accelerated", False):
        return "C++ (masking._re2scan)"
    return "Python loop over google-re2"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=16.0, help="corpus size in MB")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (best is reported)")
    ap.add_argument("--fields", type=int, default=200_000, help="number of short fields")
    ap.add_argument("--chunk", type=int, default=65536, help="stream chunk size")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process_time (CPU time of this process) instead of wall time: "
        "steadier on a shared machine where the process waits for a CPU",
    )
    ap.add_argument(
        "--compare-tree",
        metavar="DIR",
        help="also time DIR/masking (e.g. an older checkout: git archive REV masking | "
        "tar -x -C DIR) in the same process, alternating with this tree every round",
    )
    ap.add_argument(
        "--keep-results",
        action="store_true",
        help="short fields: keep every result in a list, as this script did before "
        "(the cyclic GC then walks the growing list: slower, less like a protocol)",
    )
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    import masking

    size = int(args.mb * 1_000_000)
    corpora = {"1%": corpus(size, 0.01), "20%": corpus(size, 0.20)}
    fields = short_fields(args.fields)
    trees: dict[str, dict[str, Callable[[], object]]] = {
        "this": cases(masking, corpora, fields, args.chunk, args.keep_results)
    }
    if args.compare_tree:
        trees["base"] = cases(
            load_tree(args.compare_tree), corpora, fields, args.chunk, args.keep_results
        )
        a = trees["this"]["_masker"]().mask_bytes(corpora["20%"])  # type: ignore[attr-defined]
        b = trees["base"]["_masker"]().mask_bytes(corpora["20%"])  # type: ignore[attr-defined]
        print(f"outputs of both trees on the 20% corpus: {'identical' if a == b else 'DIFFERENT'}")
    masker = trees["this"]["_masker"]()
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}, "
        f"rules: {len(masker.rule_ids())} (all built-ins on), corpus {args.mb} MB, best of {args.repeat} "  # type: ignore[attr-defined]
        f"after one warm-up pass, {'CPU' if args.cpu_time else 'wall'} time"
        + (f", alternating with {args.compare_tree}" if args.compare_tree else "")
    )
    print(
        f"candidate scan: this tree {_scan_kind(masker)}"
        + (f", base {_scan_kind(trees['base']['_masker']())}" if "base" in trees else "")
    )
    names = [k for k in trees["this"] if not k.startswith("_")]
    times: dict[tuple[str, str], list[float]] = {(t, k): [] for t in trees for k in names}
    for fn in (f for t in trees.values() for k, f in t.items() if not k.startswith("_")):
        fn()  # warm-up: RE2 builds its DFA states lazily
    order = list(trees)
    for r in range(args.repeat):
        for k in names:
            for t in order if r % 2 == 0 else order[::-1]:
                t0 = CLOCK()
                trees[t][k]()
                times[(t, k)].append(CLOCK() - t0)
    t_memchr = min(
        (lambda t0: (corpora["1%"].find(b"\x00"), CLOCK() - t0)[1])(CLOCK()) for _ in range(5)
    )
    memchr = size / max(t_memchr, 1e-9) / 1e6
    print(f"baseline memchr (bytes.find)          : {memchr:9.1f} MB/s")
    masked = {label: sum(masker.mask_bytes(d)[1].values()) for label, d in corpora.items()}  # type: ignore[attr-defined]

    def mbs(t: str, k: str) -> float:
        return size / min(times[(t, k)]) / 1e6

    def us(t: str, k: str) -> float:
        return min(times[(t, k)]) / len(fields) * 1e6

    def base_mbs(k: str) -> str:
        if "base" not in trees:
            return ""
        return f"   base {mbs('base', k):7.1f} MB/s ({mbs('this', k) / mbs('base', k):.2f}x)"

    def base_us(k: str) -> str:
        if "base" not in trees:
            return ""
        return f"   base {us('base', k):6.2f} µs ({us('base', k) / us('this', k):.2f}x faster)"

    for label in corpora:
        raw = mbs("this", f"{label} raw")
        w, s = mbs("this", f"{label} whole"), mbs("this", f"{label} stream")
        print(
            f"{label:>3} lines sensitive: raw re2 scan      : {raw:9.1f} MB/s  ({masked[label]} values masked)"
        )
        print(
            f"{label:>3} lines sensitive: mask_bytes        : {w:9.1f} MB/s  ({w / raw:.2f}x raw re2, {w / memchr:.3f}x memchr)"
            + base_mbs(f"{label} whole")
        )
        print(
            f"{label:>3} lines sensitive: stream 64KiB feed : {s:9.1f} MB/s  ({s / raw:.2f}x raw re2)"
            + base_mbs(f"{label} stream")
        )
    n = len(fields)
    print(
        f"short field (avg {sum(map(len, fields)) / n:.1f} B): RowMasker.mask   : {us('this', 'rows'):6.2f} µs/field"
        + base_us("rows")
    )
    print(
        f"short field: Masker.mask_value               : {us('this', 'mask_value'):6.2f} µs/field"
        + base_us("mask_value")
    )
    print(f"short field: baseline raw re2 search         : {us('this', 'field raw'):6.2f} µs/field")
    print(f"load avg at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
