"""Kubernetes API through hoopd vs direct to the fake API server, in one run.

* latency: a kubectl-like request loop (aiohttp, keep-alive, TLS both ways):
  list pods as a Table, get one pod, list configmaps as JSON, get /version;
  direct and through hoopd alternate in rounds so both see the same machine.
* 50 concurrent watchers through hoopd, each must see every new pod.
* 20 concurrent execs through hoopd (websocket v5), each must get its own
  stdout and exit code 7.

    python bench/kubernetes/bench_kubernetes.py [--requests 2000] [--rounds 10] [--relay] [--watchers 50] [--execs 20]
        [--compare-tree DIR]

``--relay`` adds a third side per round: a bare TLS byte relay
(``tls_relay.py``), the floor of any proxy with TLS on both legs here.

``--compare-tree DIR`` adds a second gateway running the code of another
checkout (``git worktree add DIR <commit>``, with its accelerators built:
``python setup.py build_ext --inplace``), for an A/B in one run: each round
times direct, this tree and DIR (the two gateways in alternating order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hoopd.identity.tokens import KEY_FILE_NAME, GatewayTokens, load_or_create_token_key  # noqa: E402
from tests.helpers import Daemon, free_port, wait_port  # noqa: E402

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
LOOP = [
    ("GET", "/api/v1/namespaces/default/pods?limit=500", TABLE),
    ("GET", "/api/v1/namespaces/default/pods/web-0", "application/json"),
    ("GET", "/api/v1/namespaces/default/configmaps", "application/json"),
    ("GET", "/version?timeout=32s", "application/json"),
]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def request_loop(
    url: str, ctx: ssl.SSLContext, token: str, n: int, lat: list[float], per_path: dict[str, list[float]] | None = None
) -> None:
    headers = {"Authorization": f"Bearer {token}", "User-Agent": "kubectl/v1.32 (bench)"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx, limit=1)) as http:
        for i in range(n):
            method, path, accept = LOOP[i % len(LOOP)]
            t0 = time.perf_counter()
            async with http.request(method, url + path, headers={**headers, "Accept": accept}) as resp:
                await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{path}: {resp.status}")
            ms = (time.perf_counter() - t0) * 1000
            lat.append(ms)
            if per_path is not None:
                per_path.setdefault(path.split("?")[0], []).append(ms)


class Gw:
    """One gateway under test: URL, its CA and a token it accepts."""

    def __init__(self, url: str, ctx: ssl.SSLContext, token: str) -> None:
        self.url, self.ctx, self.token = url, ctx, token


async def latency(
    direct: str, gw: Gw, fake_ctx: ssl.SSLContext, total: int, rounds: int,
    relay: str | None = None, base: Gw | None = None,
) -> dict[str, Any]:
    """``rounds`` alternating rounds (direct then hoopd, each a fresh keep-alive
    connection); the headline ratio is the median of the per-round p50 ratios,
    so a burst of load from other jobs hits both sides of a round alike.
    ``base``: the --compare-tree gateway, timed in the same rounds (before or
    after this tree's, alternating)."""
    token = gw.token
    d: list[float] = []
    h: list[float] = []
    b: list[float] = []
    dp: dict[str, list[float]] = {}
    hp: dict[str, list[float]] = {}
    bp: dict[str, list[float]] = {}
    ratios: list[float] = []
    relay_ratios: list[float] = []
    base_ratios: list[float] = []
    per = max(len(LOOP), total // rounds)
    await request_loop(direct, fake_ctx, token, 40, [])  # warm up all paths
    await request_loop(gw.url, gw.ctx, gw.token, 40, [])
    if base is not None:
        await request_loop(base.url, base.ctx, base.token, 40, [])
    for i in range(rounds):
        rd: list[float] = []
        rh: list[float] = []
        rb: list[float] = []
        await request_loop(direct, fake_ctx, token, per, rd, dp)
        if base is not None and i % 2:
            await request_loop(base.url, base.ctx, base.token, per, rb, bp)
        await request_loop(gw.url, gw.ctx, gw.token, per, rh, hp)
        if base is not None and not i % 2:
            await request_loop(base.url, base.ctx, base.token, per, rb, bp)
        ratios.append(statistics.median(rh) / statistics.median(rd))
        if rb:
            base_ratios.append(statistics.median(rb) / statistics.median(rd))
        if relay is not None:
            rr: list[float] = []
            await request_loop(relay, fake_ctx, token, per, rr)
            relay_ratios.append(statistics.median(rr) / statistics.median(rd))
        d += rd
        h += rh
        b += rb
    extra: dict[str, Any] = {"tls_relay_p50_ratio": round(statistics.median(relay_ratios), 3)} if relay_ratios else {}
    if base_ratios:
        extra.update({
            "compare_tree_p50_ms": round(statistics.median(b), 3),
            "compare_tree_p95_ms": round(pct(b, 0.95), 3),
            "compare_tree_round_p50_ratios": [round(r, 2) for r in base_ratios],
            "compare_tree_p50_ratio": round(statistics.median(base_ratios), 3),
            "compare_tree_pooled_p50_ratio": round(statistics.median(b) / statistics.median(d), 3),
            "compare_tree_per_endpoint_p50_ms": {path: round(statistics.median(v), 3) for path, v in bp.items()},
        })
    return {
        **extra,
        "requests_each": len(d),
        "rounds": rounds,
        "direct_p50_ms": round(statistics.median(d), 3),
        "hoopd_p50_ms": round(statistics.median(h), 3),
        "direct_p95_ms": round(pct(d, 0.95), 3),
        "hoopd_p95_ms": round(pct(h, 0.95), 3),
        "pooled_p50_ratio": round(statistics.median(h) / statistics.median(d), 3),
        "round_p50_ratios": [round(r, 2) for r in ratios],
        "p50_ratio": round(statistics.median(ratios), 3),
        "per_endpoint_p50_ms": {
            path: [round(statistics.median(dp[path]), 3), round(statistics.median(hp[path]), 3)] for path in dp
        },
    }


async def create_pod(direct: str, ctx: ssl.SSLContext, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "main", "image": "busybox", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http, http.post(
        direct + "/api/v1/namespaces/default/pods", json=body
    ) as resp:
        if resp.status not in (201, 409):
            raise RuntimeError(f"create pod {name}: {resp.status}")


async def watchers(direct: str, gw: str, fake_ctx: ssl.SSLContext, gw_ctx: ssl.SSLContext, token: str, n: int) -> dict[str, Any]:
    new = [f"watched-{i}" for i in range(5)]
    errors: list[str] = []
    ready = asyncio.Semaphore(0)
    seen: list[set[str]] = [set() for _ in range(n)]

    async def one(i: int) -> None:
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw_ctx)) as http, http.get(
                gw + "/api/v1/namespaces/default/pods?watch=1&resourceVersion=0",
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"watch status {resp.status}")
                ready.release()
                async for line in resp.content:
                    ev = json.loads(line)
                    name = ev["object"]["metadata"]["name"]
                    if b"hunter2" in line:
                        raise RuntimeError("unmasked env value in a watch event")
                    if name in new:
                        seen[i].add(name)
                        if len(seen[i]) == len(new):
                            return
        except Exception as exc:
            errors.append(f"watcher {i}: {exc!r}")
            ready.release()

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(one(i)) for i in range(n)]
    for _ in range(n):
        await ready.acquire()
    for name in new:
        await create_pod(direct, fake_ctx, name)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    complete = sum(1 for s in seen if len(s) == len(new))
    return {"watchers": n, "complete": complete, "errors": len(errors), "first_errors": errors[:3], "seconds": round(time.perf_counter() - t0, 2)}


async def execs(gw: str, gw_ctx: ssl.SSLContext, token: str, n: int) -> dict[str, Any]:
    errors: list[str] = []
    durations: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        q = f"command=sh&command=-c&command=echo+hello-{i}%3B+sleep+0.2%3B+exit+7&container=main&stdout=true&stderr=true"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=gw_ctx)) as http, http.ws_connect(
                gw + f"/api/v1/namespaces/default/pods/web-0/exec?{q}",
                protocols=("v5.channel.k8s.io",),
                headers={"Authorization": f"Bearer {token}"},
            ) as ws:
                out = b""
                code = None
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        break
                    if msg.data[:1] == b"\x01":
                        out += msg.data[1:]
                    elif msg.data[:1] == b"\x03":
                        st = json.loads(msg.data[1:])
                        code = int(st["details"]["causes"][0]["message"]) if st.get("status") != "Success" else 0
                if out.strip() != f"hello-{i}".encode() or code != 7:
                    raise RuntimeError(f"got {out!r} exit {code}")
            durations.append(time.perf_counter() - t0)
        except Exception as exc:
            errors.append(f"exec {i}: {exc!r}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return {"execs": n, "ok": n - len(errors), "errors": len(errors), "first_errors": errors[:3], "seconds": round(time.perf_counter() - t0, 2), "p50_s": round(statistics.median(durations), 3) if durations else None}


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fake_port = free_port()
    tls_dir = work / "fake-tls"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.kubernetes.fakeapi", "--port", str(fake_port), "--tls-dir", str(tls_dir)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    daemons: list[Daemon] = []
    relay: subprocess.Popen[bytes] | None = None
    try:
        wait_port(fake_port, proc=fake)
        (work / "sa-token").write_text("bench-sa-token")

        def gateway(tree: Path, workdir: Path) -> Gw:
            """hoopd serve from ``tree`` (PYTHONSAFEPATH: the current directory
            does not shadow PYTHONPATH, nor does the editable install)."""
            workdir.mkdir(exist_ok=True)
            port = free_port()
            daemon = Daemon(workdir, {"gateway": {"log_level": "warning"}, "connections": [{
                "name": "kube", "protocol": "kubernetes", "listen": f"127.0.0.1:{port}", "allow_groups": ["dev"],
                "upstream": {"url": f"https://127.0.0.1:{fake_port}", "ca": str(tls_dir / "ca.pem"), "token": f"file:{work / 'sa-token'}"},
            }]}, env={"PYTHONPATH": str(tree), "PYTHONSAFEPATH": "1"})
            daemons.append(daemon.start())
            data_dir = Path(daemon.config["gateway"]["data_dir"])
            token = GatewayTokens(load_or_create_token_key(data_dir / KEY_FILE_NAME)).issue("bench", ["dev"], 3600)
            ctx = ssl.create_default_context(cafile=str(data_dir / "tls" / "ca.pem"))
            return Gw(f"https://127.0.0.1:{port}", ctx, token)

        this = gateway(ROOT, work / "this")
        base = gateway(Path(args.compare_tree).resolve(), work / "base") if args.compare_tree else None
        fake_ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))
        direct = f"https://127.0.0.1:{fake_port}"
        for i in range(20):
            await create_pod(direct, fake_ctx, f"web-{i}")
        relay_url = None
        if args.relay:
            relay_port = free_port()
            relay = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("tls_relay.py")), str(relay_port), str(fake_port),
                 str(tls_dir / "ca.pem"), str(tls_dir / "server.pem"), str(tls_dir / "server-key.pem")],
                cwd=ROOT, env=env,
            )
            wait_port(relay_port, proc=relay)
            relay_url = f"https://127.0.0.1:{relay_port}"
        results = {
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
            "latency": await latency(direct, this, fake_ctx, args.requests, args.rounds, relay_url, base),
            "watchers": await watchers(direct, this.url, fake_ctx, this.ctx, this.token, args.watchers),
            "execs": await execs(this.url, this.ctx, this.token, args.execs),
            "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
        }
        return results
    finally:
        if relay is not None:
            relay.kill()
            relay.wait(10)
        for daemon in daemons:
            daemon.stop()
        fake.kill()
        fake.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per side")
    parser.add_argument("--rounds", type=int, default=10, help="alternating direct/hoopd rounds")
    parser.add_argument("--relay", action="store_true",
                        help="also time a bare TLS byte relay (bench/kubernetes/tls_relay.py) as a floor")
    parser.add_argument("--watchers", type=int, default=50)
    parser.add_argument("--execs", type=int, default=20)
    parser.add_argument("--compare-tree", metavar="DIR",
                        help="also time a gateway running the checkout in DIR, in the same rounds (A/B)")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="bench-kube-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    print(json.dumps(results, indent=2))
    lat = results["latency"]
    ok = (
        lat["p50_ratio"] <= 1.3
        and results["watchers"]["errors"] == 0
        and results["watchers"]["complete"] == args.watchers
        and results["execs"]["errors"] == 0
    )
    print(f"p50 direct {lat['direct_p50_ms']} ms, hoopd {lat['hoopd_p50_ms']} ms, "
          f"median per-round p50 ratio {lat['p50_ratio']} (pooled {lat['pooled_p50_ratio']}; target <= 1.3)"
          + (f"; bare TLS relay {lat['tls_relay_p50_ratio']}" if "tls_relay_p50_ratio" in lat else ""))
    if "compare_tree_p50_ratio" in lat:
        print(f"compare tree {args.compare_tree}: hoopd {lat['compare_tree_p50_ms']} ms, median per-round p50 ratio "
              f"{lat['compare_tree_p50_ratio']} (pooled {lat['compare_tree_pooled_p50_ratio']})")
    print(f"load average before {' '.join(results['loadavg_before'])}, after {' '.join(results['loadavg_after'])}")
    print(f"watchers {results['watchers']['complete']}/{args.watchers} complete, {results['watchers']['errors']} errors; "
          f"execs {results['execs']['ok']}/{args.execs} ok")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
