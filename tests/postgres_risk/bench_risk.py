"""Micro-benchmark of SqlRiskScorer: µs per call by path.

Run from the repository root: ``python tests/postgres_risk/bench_risk.py``.
Not collected by pytest. Results go in docs/postgres-risk.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from pglast import parser as pg

from hoopd.config import RiskRule, RiskSection
from hoopd.model import Verdict
from protocols.postgres.risk import PreparedStatements, SqlRiskScorer, score_statement_text

N = 20_000


def bench(label: str, fn: Callable[[str], object], texts: list[str], repeat: int = 3) -> None:
    for text in texts[:200]:
        fn(text)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for text in texts:
            fn(text)
        best = min(best, (time.perf_counter() - t0) / len(texts) * 1e6)
    print(f"| {label} | {best:.1f} |")


def main() -> None:
    rules = RiskSection(
        rules=(
            RiskRule(match="ddl", action=Verdict.REVIEW),
            RiskRule(pattern=r"(?i)\bssn\b", action=Verdict.DENY),
        )
    )
    s = SqlRiskScorer(None)
    r = SqlRiskScorer(rules)
    cold = SqlRiskScorer(None, cache_size=0)
    sel = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"
    join = (
        "SELECT u.id, u.name, o.total FROM users u JOIN orders o ON o.user_id = u.id "
        "WHERE o.created_at > now() - interval '7 days' AND u.active ORDER BY o.total DESC LIMIT 50"
    )
    upd = "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {}"
    print(f"load average before: {os.getloadavg()[0]:.2f}, cores: {os.cpu_count()}")
    print("| path | µs/call (best of 3) |\n|---|---|")
    bench("reference: bare `pglast.parser.fingerprint` of the pgbench -S text", pg.fingerprint, [sel] * N)
    bench("exact-text cache hit: pgbench -S text with `$1` (extended protocol)", s.score, [sel] * N)
    bench("same, with 2 rules (1 `match`, 1 RE2 `pattern`)", r.score, [sel] * N)
    bench(
        "fast path: pgbench -S with a distinct literal each time (simple protocol)",
        s.score,
        [f"SELECT abalance FROM pgbench_accounts WHERE aid = {i}" for i in range(N)],
    )
    bench(
        "same, fast path off (fingerprint-cache hit instead)",
        SqlRiskScorer(None, fast_path=False).score,
        [f"SELECT abalance FROM pgbench_accounts WHERE aid = {i}" for i in range(N)],
    )
    bench(
        "fingerprint-cache hit: pgbench UPDATE, distinct literals",
        s.score,
        [upd.format(i, i * 7) for i in range(N)],
    )
    bench(
        "fingerprint-cache hit: 180-char join, distinct literals",
        s.score,
        [join.replace("50", str(i)) for i in range(N)],
    )
    bench("uncached (cache_size=0): pgbench -S `$1` (fast path still applies)", cold.score, [sel] * 5000)
    bench("uncached (cache_size=0): pgbench UPDATE", cold.score, [upd.format(1, 2)] * 5000)
    bench("uncached (cache_size=0): 180-char join", cold.score, [join] * 5000)
    bench(
        "uncached (cache_size=0): `WITH d AS (DELETE ...) SELECT`",
        cold.score,
        ["WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d"] * 5000,
    )
    bench(
        "DO block with EXECUTE, distinct bodies (never fingerprint-cached)",
        s.score,
        # more distinct texts than the 4096-entry text cache holds: all misses
        [f"DO $$BEGIN EXECUTE 'drop table t{i}'; END$$" for i in range(6000)],
    )
    bench("unparseable text (never cached)", s.score, [f"selec {i} frm x" for i in range(N)])
    t = PreparedStatements()
    score_statement_text(
        "PREPARE q(int) AS SELECT abalance FROM pgbench_accounts WHERE aid = $1", t, s
    )
    bench(
        "score_statement_text: `EXECUTE q(n)`, distinct n (body cached)",
        lambda x: score_statement_text(x, t, s),
        [f"EXECUTE q({i})" for i in range(N)],
    )
    bench(
        "score_statement_text: text without PREPARE/EXECUTE (= score)",
        lambda x: score_statement_text(x, t, s),
        [sel] * N,
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
