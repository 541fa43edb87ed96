#!/usr/bin/env python3
"""How long one session's large output holds the ssh listener's event loop.

Starts its own sshd and ``hoopd serve`` (personal-data recognizers on). A
"ping" session (``ssh ... cat``, no terminal) gets one short line every
10 ms and its echo is timed; meanwhile another session runs one command
whose output is large and dense with e-mail addresses. Reported per shape
and size: the command's wall time, the CPU time of hoopd's main (event
loop) thread over it (/proc/PID/task/PID/stat) and the ping's worst round
trip while it ran.

    python bench/ssh/stall_ssh.py [--shapes exec,pty,sftp,idle] [--sizes 4M,16M]

Shapes: ``exec`` (``yes ann@example.com | head -c SIZE``, stdout to
/dev/null), ``pty`` (the same with ``-tt``), ``sftp`` (``sftp get`` of a
file of that size, the same text), ``idle`` (nothing for 3 s).

Needs root (sshd, root login to the test target), ssh, sftp and sshd.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers import free_port, running
from tests.ssh.harness import SSH_OPTS, keygen, ssh_conn, sshd

TICK = os.sysconf("SC_CLK_TCK")


def size_of(text: str) -> int:
    units = {"K": 1024, "M": 1024**2}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def loop_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Ping:
    """``cat`` through the gateway: a line every 10 ms, the worst echo time."""

    def __init__(self, base: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*base, "cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self.worst = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.proc.stdin.write(b"ping\n")
            got = b""
            while not got.endswith(b"\n"):
                got += self.proc.stdout.read(1)
            self.worst = max(self.worst, time.perf_counter() - t0)
            time.sleep(0.01)

    def reset(self) -> None:
        self.worst = 0.0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--shapes", default="idle,exec,pty,sftp")
    ap.add_argument("--sizes", default="4M,16M")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="stall-ssh-") as tmpdir:
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
            )  # fmt: skip
            conn["masking"] = {"recognizers": {"personal": True}}
            with running(tmp, {"gateway": {"log_level": "warning"}, "connections": [conn]}) as daemon:
                assert daemon.proc is not None
                pid = daemon.proc.pid
                opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(user_key)]
                base = ["ssh", *SSH_OPTS, *opts, "-p", str(port), "bench@127.0.0.1"]
                ping = Ping(base)
                time.sleep(2)
                print(f"{'shape':<6} {'size':>10} {'wall s':>7} {'loop cpu s':>10} {'ping max s':>10}")
                try:
                    for shape in args.shapes.split(","):
                        for size in (size_of(s) for s in args.sizes.split(",")):
                            src = tmp / f"emails-{size}"
                            if shape == "sftp" and not src.exists():
                                line = b"ann@example.com\n"
                                src.write_bytes(line * (size // len(line)))
                            time.sleep(0.3)
                            ping.reset()
                            cpu0, t0 = loop_cpu(pid), time.perf_counter()
                            if shape == "idle":
                                time.sleep(3)
                            elif shape == "sftp":
                                subprocess.run(
                                    ["sftp", *SSH_OPTS, *opts, "-P", str(port), "-b", "-", "bench@127.0.0.1"],
                                    input=f"get {src} {tmp / 'got'}\n".encode(),
                                    check=True, capture_output=True, timeout=600,
                                )  # fmt: skip
                            else:
                                tty = ["-tt"] if shape == "pty" else []
                                cmd = f"yes ann@example.com | head -c {size}"
                                with open(os.devnull, "wb") as null:
                                    subprocess.run(
                                        [*base[:1], *tty, *base[1:], cmd],
                                        stdout=null, stdin=subprocess.DEVNULL, check=True, timeout=600,
                                    )  # fmt: skip
                            wall, cpu = time.perf_counter() - t0, loop_cpu(pid) - cpu0
                            print(f"{shape:<6} {size:>10} {wall:>7.2f} {cpu:>10.2f} {ping.worst:>10.3f}", flush=True)
                finally:
                    ping.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
