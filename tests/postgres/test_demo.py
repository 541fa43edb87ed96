"""``hoopd demo`` as a user runs it: start, paste the printed psql command,
see masked personal data, have a DELETE held and approve it with the printed
reviewer command from another process, Ctrl-C, nothing left behind."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.pgserver import available


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


def _start_demo(start_new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hoopd", "demo", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=start_new_session,
    )


@pytest.mark.skipif(not available(), reason="PostgreSQL binaries not installed")
def test_demo_starts_masks_and_cleans_up() -> None:
    proc = _start_demo()
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        out = "".join(lines)
        assert "Press Ctrl-C" in out, out
        demo_dir = Path(re.search(r"^demo directory: (\S+)$", out, re.M).group(1))  # type: ignore[union-attr]
        command = next(x.strip() for x in lines if x.strip().startswith("PGPASSWORD="))
        assert "hoopd approvals approve" in out and "--token" in out

        # the printed line, as a shell would run it
        words = shlex.split(command)
        assignment, program, dsn = words
        assert program == "psql"
        token = assignment.split("=", 1)[1]
        env = {**os.environ, "PGPASSWORD": token}
        r = subprocess.run(
            ["psql", "-X", "-At", dsn, "-c", "select name, email, phone, card from customers order by id"],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        rows = r.stdout.splitlines()
        assert rows[0].startswith("Ada Lovelace|")
        assert "@" not in r.stdout and "4111" not in r.stdout, r.stdout
        assert all("[EMAIL]" in row for row in rows), r.stdout

        # a DELETE without WHERE is held; the NOTICE names the approval, and
        # the reviewer line the demo printed approves it from another process
        held = subprocess.Popen(
            ["psql", "-X", "-At", dsn, "-c", "delete from orders", "-c", "select count(*) from orders"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert held.stderr is not None
            notice = held.stderr.readline()
            found = re.search(r"approval \(id (apr_[0-9a-z]+)\)", notice)
            assert found, notice
            assert held.poll() is None  # waiting for the reviewer
            approve = next(
                x.strip() for x in lines if x.strip().startswith("hoopd approvals approve")
            )
            words = shlex.split(approve.replace("APPROVAL_ID", found.group(1)))
            assert words[:3] == ["hoopd", "approvals", "approve"]
            r = subprocess.run(
                [sys.executable, "-m", "hoopd", *words[1:]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert "approved" in r.stdout
            out, err = held.communicate(timeout=30)
        finally:
            if held.poll() is None:
                held.kill()
                held.wait()
        assert held.returncode == 0, err
        assert out.split() == ["DELETE", "40", "0"], out + err  # it ran, then the count

        assert demo_dir.exists()
        assert _processes_mentioning(str(demo_dir))  # the demo's postgres

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped; removed" in rest
    finally:
        if proc.poll() is None:
            # a failed assertion above: Ctrl-C first, so that the demo still
            # stops its PostgreSQL and removes its directory (SIGKILL would
            # leave both behind)
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert not demo_dir.exists()
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(demo_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(demo_dir)) == []


@pytest.mark.skipif(not available(), reason="PostgreSQL binaries not installed")
def test_demo_ctrl_c_while_starting_cleans_up() -> None:
    """Ctrl-C as a terminal sends it -- to the whole process group, pg_ctl,
    initdb and psql included -- at points spread over the start-up (initdb,
    pg_ctl start, loading the data, the gateway starting): the demo exits and
    leaves no server and no directory behind."""
    for delay in (0.0, 0.6, 1.2, 1.8, 2.4):
        proc = _start_demo(start_new_session=True)  # its own process group, as in a terminal
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            assert first.startswith("hoopd demo: starting PostgreSQL"), first
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGINT)
            rest, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        found = re.search(r"^hoopd demo: stopped; removed (\S+)$", rest, re.M)
        assert found, f"Ctrl-C {delay} s into the start-up: {rest}"
        assert proc.returncode == 0, rest
        demo_dir = found.group(1)
        assert not Path(demo_dir).exists()
        deadline = time.monotonic() + 10
        while _processes_mentioning(demo_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_mentioning(demo_dir) == [], f"Ctrl-C {delay} s into the start-up"
