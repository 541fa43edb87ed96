#!/usr/bin/env python3
"""Masking throughput benchmark.

Prints MB/s for corpora where 1% and 20% of lines carry a sensitive value
(whole-buffer and streaming in 64 KiB chunks), µs per short field (row masker),
and baselines measured in the same run (a memchr pass and a raw RE2 scan of
the same combined pattern with no Python work per match), so results can be
compared as ratios across machines.

    python bench/masking/bench_masking.py [--mb 16] [--repeat 3] [--fields 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from masking import Column, MaskingConfig, build_masker

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


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up: RE2 builds its DFA states lazily
    times = []
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=16.0, help="corpus size in MB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fields", type=int, default=200_000, help="number of short fields")
    ap.add_argument("--chunk", type=int, default=65536, help="stream chunk size")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with process_time (CPU time of this process) instead of wall time: "
        "steadier on a shared machine where the process waits for a CPU",
    )
    args = ap.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time

    cfg = MaskingConfig.model_validate({"recognizers": {"credentials": True, "personal": True}})
    masker = build_masker(cfg, b"bench-key-0123456789abcdef")
    size = int(args.mb * 1_000_000)
    print(f"command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"python {sys.version.split()[0]}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}, "
        f"rules: {len(masker.rule_ids())} (all built-ins on), corpus {args.mb} MB, best of {args.repeat} "
        f"after one warm-up pass, {'CPU' if args.cpu_time else 'wall'} time"
    )

    base_corpus = corpus(size, 0.01)
    # baselines
    t = best(lambda: base_corpus.find(b"\x00"), args.repeat)
    memchr = size / t / 1e6
    main_rx = masker._main
    assert main_rx is not None

    def raw_scan(data: bytes) -> int:
        pos, n, count = 0, len(data), 0
        while True:
            spans = main_rx.search(data, pos, n)
            if spans is None:
                return count
            count += 1
            pos = spans[0][1] if spans[0][1] > pos else pos + 1

    print(f"baseline memchr (bytes.find)          : {memchr:9.1f} MB/s")
    for label, ratio in (("1%", 0.01), ("20%", 0.20)):
        data = base_corpus if ratio == 0.01 else corpus(size, ratio)
        t_raw = best(lambda d=data: raw_scan(d), args.repeat)  # type: ignore[misc]
        raw = size / t_raw / 1e6
        masked = sum(masker.mask_bytes(data)[1].values())
        t_whole = best(lambda d=data: masker.mask_bytes(d), args.repeat)  # type: ignore[misc]

        def streamed(d: bytes = data) -> None:
            s = masker.stream()
            for i in range(0, len(d), args.chunk):
                s.feed(d[i : i + args.chunk])
            s.flush()

        t_stream = best(streamed, args.repeat)
        w, s = size / t_whole / 1e6, size / t_stream / 1e6
        print(
            f"{label:>3} lines sensitive: raw re2 scan      : {raw:9.1f} MB/s  ({masked} values masked)"
        )
        print(
            f"{label:>3} lines sensitive: mask_bytes        : {w:9.1f} MB/s  ({w / raw:.2f}x raw re2, {w / memchr:.3f}x memchr)"
        )
        print(
            f"{label:>3} lines sensitive: stream 64KiB feed : {s:9.1f} MB/s  ({s / raw:.2f}x raw re2)"
        )

    rng = random.Random(7)
    fields = []
    for i in range(args.fields):
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
    rows = masker.rows([Column("note", "t", "text")])
    t = best(lambda: [rows.mask((f,)) for f in fields], args.repeat)
    t_mb = best(lambda: [masker.mask_value(f) for f in fields], args.repeat)
    t_base = best(lambda: [main_rx.search(f, 0, len(f)) for f in fields], args.repeat)
    n = len(fields)
    print(
        f"short field (avg {sum(map(len, fields)) / n:.1f} B): RowMasker.mask   : {t / n * 1e6:6.2f} µs/field"
    )
    print(f"short field: Masker.mask_value               : {t_mb / n * 1e6:6.2f} µs/field")
    print(f"short field: baseline raw re2 search         : {t_base / n * 1e6:6.2f} µs/field")


if __name__ == "__main__":
    main()
