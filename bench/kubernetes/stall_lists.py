#!/usr/bin/env python3
"""How long masking one large list holds the event loop: whole vs sliced.

Builds a PodList of ``--pods`` pods whose every pod has an env value, an
email in an annotation and a pod IP (the personal recognizers on), and
masks it with the connection's ``BodyMasker`` in one event loop beside a
ticker task that yields back to back: ``mask_document`` (the whole
document in one go) and ``mask_large_document`` (``_slices``: one item at a
time, the loop given back every 10 ms). Reported per way: CPU seconds, and
the ticker's longest wait (what every other session on the listener
waits). The outputs are checked identical.

    python bench/kubernetes/stall_lists.py [--pods 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.kubernetes.bodies import BodyMasker


def pod_list(n: int) -> bytes:
    pods = [
        {
            "metadata": {"name": f"pod-{i}", "namespace": "default", "annotations": {"owner": f"user{i}@example.com"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25", "env": [{"name": "DB_PASSWORD", "value": f"pw{i}"}]}]},
            "status": {"phase": "Running", "podIP": f"10.0.{i % 250}.{i % 200}"},
        }
        for i in range(n)
    ]  # fmt: skip
    return json.dumps(
        {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
    ).encode()


async def timed(work: object) -> tuple[float, float, object]:
    gaps = [0.0]
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    cpu = time.process_time()
    result = await work  # type: ignore[misc]
    cpu = time.process_time() - cpu
    done = True
    await task
    return cpu, max(gaps), result


async def whole(bm: BodyMasker, doc: bytes) -> object:
    return bm.mask_document(doc)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pods", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    doc = pod_list(args.pods)
    cfg = MaskingConfig.model_validate({"recognizers": {"personal": True}})
    bm = BodyMasker(build_masker(cfg, b"k" * 32))
    print(f"PodList of {args.pods} pods: {len(doc) / 1e6:.1f} MB")
    for rnd in range(args.rounds):
        a_cpu, a_gap, a = asyncio.run(timed(whole(bm, doc)))
        b_cpu, b_gap, b = asyncio.run(timed(bm.mask_large_document(doc)))
        assert a == b, "sliced and whole differ"
        print(
            f"round {rnd + 1}: whole {a_cpu:5.2f} s CPU, loop held {a_gap:5.2f} s; "
            f"sliced {b_cpu:5.2f} s CPU, loop held at most {b_gap * 1e3:6.1f} ms",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
