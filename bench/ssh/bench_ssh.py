"""SSH through hoopd vs direct, in one run, same cipher.

    python bench/ssh/bench_ssh.py [--size 200M] [--runs 3] [--keys 300] [--compare-tree DIR]

Starts its own sshd (own config, host key, loopback port) and ``hoopd serve``
with recording (always on) and masking on (the connection's default masker:
the built-in credential recognizers; ``--mask-rule`` adds a custom rule),
then measures:

* bulk: ``ssh -c aes128-gcm@openssh.com -o Compression=no ... 'head -c 200M
  /dev/zero' > /dev/null``, direct and through the gateway, interleaved;
* the same bulk transfer through a bare asyncssh relay (``bare_proxy.py``:
  no auth, policy, masking or recording), to show what asyncssh itself costs;
* keystroke echo: in a PTY session running ``cat``, the time from writing one
  key to the local terminal until its echo comes back, direct and through;
* with ``--compare-tree DIR`` (e.g. ``git worktree add DIR <base commit>``,
  its accelerators built with ``python setup.py build_ext --inplace``), a
  second ``hoopd serve`` running that tree's code, measured interleaved with
  the others: an A/B within one run on a shared machine.

The load average (/proc/loadavg) is printed before and after.

Needs root (sshd, root login to the test target), ssh and sshd installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import free_port, running, wait_port
from tests.ssh.harness import SSH_OPTS, keygen, ssh_conn, sshd

CIPHER = "aes128-gcm@openssh.com"


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def ssh_base(port: int, key: Path, user: str) -> list[str]:
    return ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(key),
            "-c", CIPHER, "-o", "Compression=no", "-p", str(port), f"{user}@127.0.0.1"]


def bulk(base: list[str], size_arg: str) -> float:
    started = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([*base, f"head -c {size_arg} /dev/zero"], stdout=null, check=True, timeout=600)
    return time.perf_counter() - started


def echo_latencies(base: list[str], keys: int) -> list[float]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen([*base[:-1], "-tt", base[-1], "stty -icanon; exec cat >/dev/null"],
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)

    def read_until(marker: bytes, timeout: float = 15.0) -> None:
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            r, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                raise TimeoutError(f"no {marker!r}; got {buf[-200:]!r}")
            buf += os.read(master, 4096)

    try:
        os.write(master, b"z")
        read_until(b"z")  # session up, cat running
        times = []
        for i in range(keys):
            ch = bytes([0x61 + i % 26])
            started = time.perf_counter()
            os.write(master, ch)
            read_until(ch)
            times.append(time.perf_counter() - started)
            time.sleep(0.002)
        return times
    finally:
        proc.kill()
        proc.wait()
        os.close(master)


def compare_env(tree: Path) -> dict[str, str]:
    """Run ``python -m hoopd`` from ``tree``: its directory first on the path
    and not the current one (PYTHONSAFEPATH), ahead of the editable install."""
    return {"PYTHONPATH": str(tree.resolve()), "PYTHONSAFEPATH": "1"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="200M")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keys", type=int, default=300)
    ap.add_argument("--no-masking", action="store_true", help="diagnosis: masking disabled")
    ap.add_argument("--mask-rule", action="store_true",
                    help="add a custom masking rule to the default recognizers")
    ap.add_argument("--compare-tree", type=Path, metavar="DIR",
                    help="also run hoopd from this checkout (A/B, interleaved)")
    args = ap.parse_args()
    load_before = loadavg()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmpdir:
        tmp = Path(tmpdir)
        user_key = tmp / "user_key"
        user_pub = keygen(user_key, "bench")
        with sshd(tmp) as target:
            (target.dir / "authorized_keys").write_text(
                (target.dir / "authorized_keys").read_text() + user_pub + "\n"
            )
            port = free_port()
            conn = ssh_conn(
                "bench", port, target,
                options={"authorized_keys": [{"key": user_pub, "subject": "bench", "groups": ["ops"]}]},
            )
            if args.mask_rule:
                conn["masking"] = {"rules": [{"id": "bench-secret", "pattern": "bench-secret-[0-9a-f]{16}"}]}
            if args.no_masking:
                conn["masking"] = {"enabled": False}
            bare_port = free_port()
            bare = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("bare_proxy.py")), str(bare_port),
                 str(target.port), str(target.client_key), target.host_pub],
            )
            with contextlib.ExitStack() as stack:
                stack.callback(bare.wait)
                stack.callback(bare.kill)  # also when a daemon does not start
                daemon = stack.enter_context(running(tmp, {"connections": [conn]}))
                assert daemon.proc is not None
                pids = {"asyncssh": bare.pid, "hoopd": daemon.proc.pid}
                bases = {
                    "direct": ssh_base(target.port, user_key, "root"),
                    "asyncssh": ssh_base(bare_port, user_key, "any"),
                    "hoopd": ssh_base(port, user_key, "bench"),
                }
                if args.compare_tree is not None:
                    (tmp / "compare").mkdir()
                    cport = free_port()
                    other = stack.enter_context(running(
                        tmp / "compare", {"connections": [{**conn, "listen": f"127.0.0.1:{cport}"}]},
                        env=compare_env(args.compare_tree),
                    ))
                    assert other.proc is not None
                    pids["compare"] = other.proc.pid
                    bases = {"direct": bases["direct"], "asyncssh": bases["asyncssh"],
                             "compare": ssh_base(cport, user_key, "bench"), "hoopd": bases["hoopd"]}
                wait_port(bare_port, proc=bare)
                for base in bases.values():
                    bulk(base, "1M")
                rows: dict[str, list[float]] = {k: [] for k in bases}
                cpu: dict[str, list[float]] = {k: [] for k in pids}
                for _ in range(args.runs):
                    for k, base in bases.items():
                        before = cpu_seconds(pids[k]) if k in pids else 0.0
                        rows[k].append(bulk(base, args.size))
                        if k in pids:
                            cpu[k].append(cpu_seconds(pids[k]) - before)
                lat = {k: echo_latencies(base, args.keys) for k, base in bases.items()}
                recorded = sum(f.stat().st_size for f in daemon.recordings.rglob("*") if f.is_file())
    mbps = {k: [size / 1e6 / t for t in v] for k, v in rows.items()}
    best = {k: max(v) for k, v in mbps.items()}
    med = {k: statistics.median(v) for k, v in mbps.items()}
    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    p99 = {k: sorted(v)[int(len(v) * 0.99) - 1] * 1000 for k, v in lat.items()}
    labels = {"direct": "direct sshd", "asyncssh": "bare asyncssh relay (no hoopd)",
              "compare": f"hoopd of {args.compare_tree}", "hoopd": "hoopd (recording+masking)"}
    print(f"load average before: {load_before}, after: {loadavg()}")
    print(f"bulk {args.size} x{args.runs}, cipher {CIPHER}, Compression=no")
    for k in rows:
        runs = ", ".join(f"{x:.0f}" for x in mbps[k])
        print(f"  {labels[k]:32} MB/s: {runs}  (median {med[k]:.0f}, best {best[k]:.0f})")
    print("  relay process CPU per run (all threads; less sensitive to the load than MB/s):")
    for k, v in cpu.items():
        print(f"  {labels[k]:32} s: {', '.join(f'{x:.2f}' for x in v)}  (median {statistics.median(v):.2f})")
    print(f"  ratio hoopd/direct: median {med['hoopd'] / med['direct']:.2f}, best {best['hoopd'] / best['direct']:.2f}")
    print(f"  ratio bare asyncssh/direct: median {med['asyncssh'] / med['direct']:.2f}")
    print(f"  ratio hoopd/bare asyncssh: median {med['hoopd'] / med['asyncssh']:.2f}")
    if "compare" in rows:
        print(f"  ratio hoopd/compare tree: median {med['hoopd'] / med['compare']:.2f} "
              f"(compare tree/direct: median {med['compare'] / med['direct']:.2f})")
    print(f"  recordings written (this tree's hoopd): {recorded / 1e6:.0f} MB")
    print(f"keystroke echo round trip, {args.keys} keys")
    for k in rows:
        print(f"  {labels[k]:32} p50 {p50[k]:.3f} ms  p99 {p99[k]:.3f} ms")
    print(f"  added by hoopd at p50: {p50['hoopd'] - p50['direct']:.3f} ms "
          f"(bare asyncssh relay adds {p50['asyncssh'] - p50['direct']:.3f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
