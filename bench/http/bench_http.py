#!/usr/bin/env python3
"""HTTP benchmark: wrk on a small JSON response, in one run,

1. directly against the origin (nginx ``return 200 '<json>'``),
2. through nginx ``proxy_pass`` (upstream keepalive),
3. through ``hoopd serve`` (protocol http) with recording and masking on,

and the ratios. Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install -y wrk
nginx``). Every server runs from a temporary directory on loopback.

    python bench/http/bench_http.py [--duration 10] [--connections 32] [--threads 1]
                                    [--rounds 3] [--compare-tree DIR] [--vary]

``--vary``: the origin puts nginx's ``$request_id`` into every body, so no two
responses are the same bytes. Without it the same JSON comes back each time
(only ``Date`` changes, once a second), which hoopd's per-connection caches of
masked bodies and replayed exchanges (``protocols/http/exchange.py``) turn
into cache hits; ``--vary`` measures the path an API with unique answers
(request ids, timestamps) takes.

The machine is shared and noisy, so the targets are measured in several
alternating rounds (``--rounds``) and the medians reported, with the median
of the per-round hoopd/nginx ratios. ``--compare-tree DIR`` also runs a second
hoopd from another checkout (e.g. ``git archive HEAD~3 | tar -x -C DIR``) as
target ``hoopd-base``, for a before/after under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hoopd.identity.apikeys import hash_api_key  # noqa: E402

API_KEY = "hak_bench_0123456789abcdefghijklmnopqrstuvwxyzABCDEF"
BODY = json.dumps(
    {"id": 42, "name": "widget", "owner": "ops@example.com", "tags": ["a", "b"], "price": 12.5}
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


def nginx_conf(work: Path, origin: int, proxy: int, workers: int, vary: bool = False) -> Path:
    body = BODY.replace("'", "\\'")
    if vary:  # 32 hex characters of nginx's per-request id: every body differs
        body = body.replace('{"id": 42,', '{"id": 42, "request_id": "$request_id",')
    conf = f"""
worker_processes {workers};
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/tmp-body;
    proxy_temp_path {work}/tmp-proxy;
    fastcgi_temp_path {work}/tmp-fcgi;
    uwsgi_temp_path {work}/tmp-uwsgi;
    scgi_temp_path {work}/tmp-scgi;
    keepalive_requests 1000000;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{origin};
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    path = work / "nginx.conf"
    path.write_text(conf)
    return path


def hoopd_conf(work: Path, listen: int, origin: int, admin: int, relay: int = 0) -> Path:
    config: dict[str, Any] = {
        "gateway": {
            "admin_listen": f"127.0.0.1:{admin}",
            "data_dir": str(work / "var"),
            "log_level": "warning",
        },
        "identity": {
            "api_keys": [{"name": "bench", "sha256": hash_api_key(API_KEY), "groups": ["dev"]}]
        },
        "connections": [
            {
                "name": "bench",
                "protocol": "http",
                "listen": f"127.0.0.1:{listen}",
                "upstream": {"url": f"http://127.0.0.1:{origin}"},
                "allow_groups": ["dev"],
                "masking": {"recognizers": {"personal": True}},
                "options": {"rules": [{"method": "POST", "path": "/admin/**", "action": "deny"}]},
            }
        ],
    }
    if relay:
        # context only: the same daemon's opaque TCP relay (no HTTP parsing,
        # no commands, no masking; recorded both ways) is the Python floor
        config["connections"].append(
            {
                "name": "relay",
                "protocol": "tcp",
                "listen": f"127.0.0.1:{relay}",
                "upstream": {"host": "127.0.0.1", "port": origin},
                "auth": "none",
            }
        )
    path = work / "hoopd.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def wrk(url: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {API_KEY}",
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    text = out.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"50%\s+([\d.]+\w+)", text)
    p99 = re.search(r"99%\s+([\d.]+\w+)", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    return {
        "command": " ".join([*cmd[:-3], "-H", "'Authorization: Bearer <key>'", url]),
        "rps": float(m.group(1)) if m else 0.0,
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sock.group(1) if sock else "",
        "raw": text,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nginx-workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (medians)")
    ap.add_argument("--compare-tree", default="", help="also run hoopd from this checkout (hoopd-base)")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--vary", action="store_true", help="a different body in every response ($request_id)")
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} not found: apt-get install -y wrk nginx", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="hoopd-bench-http-"))
    origin, proxy, listen, relay = (free_port() for _ in range(4))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        conf = nginx_conf(work, origin, proxy, args.nginx_workers, args.vary)
        procs.append(
            subprocess.Popen([nginx, "-p", str(work), "-c", str(conf), "-g", "daemon off;"])
        )
        wait_port(origin)
        wait_port(proxy)
        trees = [("hoopd", ROOT, work, listen)]
        base_listen = 0
        if args.compare_tree:
            base_listen = free_port()
            trees.append(("hoopd-base", Path(args.compare_tree).resolve(), work / "base", base_listen))
        for name, tree, wdir, port in trees:
            wdir.mkdir(exist_ok=True)
            hconf = hoopd_conf(wdir, port, origin, free_port(), relay if name == "hoopd" else 0)
            log = open(wdir / "hoopd.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "hoopd", "serve", "-c", str(hconf)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=tree,
                )
            )
            wait_port(port)
            # sanity: hoopd answers and masks
            check = subprocess.run(
                ["curl", "-sS", "-H", f"Authorization: Bearer {API_KEY}", f"http://127.0.0.1:{port}/"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if "[EMAIL]" not in check.stdout:
                print(f"{name} did not mask the response:", check.stdout, check.stderr, file=sys.stderr)
                return 1
        targets = {
            "direct": f"http://127.0.0.1:{origin}/item",
            "nginx": f"http://127.0.0.1:{proxy}/item",
            "hoopd": f"http://127.0.0.1:{listen}/item",
            "tcp-relay": f"http://127.0.0.1:{relay}/item",
        }
        if base_listen:
            targets["hoopd-base"] = f"http://127.0.0.1:{base_listen}/item"
        # warm up each target briefly, then measure in alternating rounds
        # (the order is rotated every round so no target always runs last)
        warm = argparse.Namespace(**{**vars(args), "duration": 2})
        for url in targets.values():
            wrk(url, warm)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        names = list(targets)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                runs[name].append(wrk(targets[name], args))
            if not args.json:
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{n} {runs[n][-1]['rps']:.0f}" for n in names),
                    file=sys.stderr,
                )
        results: dict[str, dict[str, Any]] = {}
        for name, rs in runs.items():
            med = sorted(rs, key=lambda x: x["rps"])[len(rs) // 2]
            results[name] = {**med, "rps": statistics.median(x["rps"] for x in rs), "rounds": [x["rps"] for x in rs]}
        per_round = [
            h["rps"] / n["rps"] for h, n in zip(runs["hoopd"], runs["nginx"], strict=True) if n["rps"]
        ]
        recordings = work / "var" / "recordings"
        sessions = len([p for p in recordings.iterdir() if p.is_dir()]) if recordings.exists() else 0
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    direct, ngx, hoop = results["direct"]["rps"], results["nginx"]["rps"], results["hoopd"]["rps"]
    summary = {
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "connections": args.connections,
        "threads": args.threads,
        "nginx_workers": args.nginx_workers,
        "vary": args.vary,
        "body_bytes": len(BODY),
        "results": {k: {kk: vv for kk, vv in v.items() if kk != "raw"} for k, v in results.items()},
        "rounds": args.rounds,
        "ratio_hoopd_to_nginx": round(hoop / ngx, 3) if ngx else None,
        "ratio_hoopd_to_nginx_per_round": [round(x, 3) for x in per_round],
        "ratio_hoopd_to_nginx_median_of_rounds": round(statistics.median(per_round), 3) if per_round else None,
        "ratio_hoopd_to_direct": round(hoop / direct, 3) if direct else None,
        "ratio_nginx_to_direct": round(ngx / direct, 3) if direct else None,
        "ratio_tcp_relay_to_nginx": round(results["tcp-relay"]["rps"] / ngx, 3) if ngx else None,
        "hoopd_sessions_recorded": sessions,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'target':10} {'req/s':>10} {'p50':>9} {'p99':>9} {'non-2xx':>8}")
        for name, r in results.items():
            print(f"{name:10} {r['rps']:>10.0f} {r['p50']:>9} {r['p99']:>9} {r['non2xx']:>8}")
        for name, r in results.items():
            print(f"  {name} rounds: {', '.join(f'{x:.0f}' for x in r['rounds'])}")
        print(f"hoopd/nginx  = {summary['ratio_hoopd_to_nginx']}  (medians; target >= 0.3)")
        print(f"hoopd/nginx per round = {summary['ratio_hoopd_to_nginx_per_round']}")
        if "hoopd-base" in results and results["hoopd-base"]["rps"]:
            print(f"hoopd/hoopd-base = {hoop / results['hoopd-base']['rps']:.2f}")
        print(f"hoopd/direct = {summary['ratio_hoopd_to_direct']}")
        print(f"nginx/direct = {summary['ratio_nginx_to_direct']}")
        print(f"tcp-relay/nginx = {summary['ratio_tcp_relay_to_nginx']}  (hoopd's opaque relay, for context)")
        for name, r in results.items():
            print(f"{name}: {r['command']}")
    return 0 if hoop and ngx and hoop / ngx >= 0.3 else 1


if __name__ == "__main__":
    sys.exit(main())
