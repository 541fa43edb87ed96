"""SFTP packet auditing (sans-IO): any chunking gives the same operations,
garbage raises SftpError and nothing else."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.ssh import sftp
from protocols.ssh.sftp import SftpAudit, SftpError, SftpFramer
from tests.support.chunks import split


def pkt(ptype: int, body: bytes) -> bytes:
    return struct.pack(">IB", len(body) + 1, ptype) + body


def s(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def u32(*v: int) -> bytes:
    return struct.pack(f">{len(v)}I", *v)


def status(rid: int, code: int = 0) -> bytes:
    return pkt(sftp.STATUS, u32(rid, code) + s(b"") + s(b""))


Steps = list[tuple[str, bytes]]


def conversation(size: int = 100_000) -> Steps:
    """An upload, a download, a rename and a remove, in the order they cross."""
    steps: Steps = [("c", pkt(sftp.INIT, u32(3))), ("s", pkt(sftp.VERSION, u32(3)))]

    def rt(request: bytes, reply: bytes) -> None:
        steps.append(("c", request))
        steps.append(("s", reply))

    rt(pkt(sftp.OPEN, u32(1) + s(b"/up.bin") + u32(sftp.PFLAG_WRITE | sftp.PFLAG_CREAT | sftp.PFLAG_TRUNC) + u32(0)),
       pkt(sftp.HANDLE, u32(1) + s(b"H1")))
    rid = 2
    writes, replies = b"", b""
    for off in range(0, size, 32768):  # pipelined writes, then their replies
        n = min(32768, size - off)
        writes += pkt(sftp.WRITE, u32(rid) + s(b"H1") + struct.pack(">Q", off) + s(b"x" * n))
        replies += status(rid)
        rid += 1
    rt(writes, replies)
    rt(pkt(sftp.CLOSE, u32(rid) + s(b"H1")), status(rid))
    rid += 1
    rt(pkt(sftp.OPEN, u32(rid) + s(b"/down.bin") + u32(sftp.PFLAG_READ) + u32(0)), pkt(sftp.HANDLE, u32(rid) + s(b"H2")))
    rid += 1
    rt(pkt(sftp.READ, u32(rid) + s(b"H2") + struct.pack(">QI", 0, 65536))
       + pkt(sftp.READ, u32(rid + 1) + s(b"H2") + struct.pack(">QI", 5000, 65536)),
       pkt(sftp.DATA, u32(rid) + s(b"y" * 5000)) + status(rid + 1, 1))
    rid += 2
    rt(pkt(sftp.CLOSE, u32(rid) + s(b"H2")), status(rid))
    rid += 1
    rt(pkt(sftp.EXTENDED, u32(rid) + s(b"posix-rename@openssh.com") + s(b"/up.bin") + s(b"/moved.bin")), status(rid))
    rid += 1
    rt(pkt(sftp.REMOVE, u32(rid) + s(b"/missing")), status(rid, 2))
    rid += 1
    rt(pkt(sftp.OPEN, u32(rid) + s("/ünï".encode() * 2000) + u32(1) + u32(0)), status(rid, 2))
    return steps


def run(steps: Steps, cuts: list[int] | None = None) -> list[tuple[str, str, str, int, int, str]]:
    audit = SftpAudit()
    done = []
    for side, data in steps:
        feed = audit.client_data if side == "c" else audit.server_data
        for chunk in split(data, cuts or []):
            done += feed(chunk)[1]
    done += audit.close()
    return [(o.op, o.path[:20], o.target, o.bytes_read, o.bytes_written, o.status) for o in done]


def test_operations_with_paths_and_sizes() -> None:
    ops = run(conversation())
    assert ops == [
        ("open", "/up.bin", "", 0, 100_000, "ok"),
        ("open", "/down.bin", "", 5000, 0, "ok"),
        ("rename", "/up.bin", "/moved.bin", 0, 0, "ok"),
        ("remove", "/missing", "", 0, 0, "no such file"),
        ("open", ("/ünï" * 2000)[:20], "", 0, 0, "no such file"),
    ]


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_gives_the_same_operations(cuts: list[int]) -> None:
    steps = conversation(70_000)
    assert run(steps, cuts) == run(steps)


@given(st.lists(st.integers(min_value=0), max_size=30))
def test_framer_split_invariance(cuts: list[int]) -> None:
    stream = b"".join(d for side, d in conversation(40_000) if side == "c")
    whole = SftpFramer().feed(stream)
    framer = SftpFramer()
    parts = [p for chunk in split(stream, cuts) for p in framer.feed(chunk)]
    assert parts == whole


@given(st.binary(max_size=2000))
def test_garbage_raises_only_sftp_error(data: bytes) -> None:
    audit = SftpAudit()
    for side in (audit.client_data, audit.server_data):
        with contextlib.suppress(SftpError):
            side(data)


@given(st.integers(min_value=sftp.MAX_PACKET + 1, max_value=2**32 - 1))
def test_oversized_packet_is_refused(length: int) -> None:
    with pytest.raises(SftpError):
        SftpFramer().feed(struct.pack(">IB", length, 3))


def test_framer_keeps_only_headers_of_bulk_packets() -> None:
    framer = SftpFramer()
    big = pkt(sftp.DATA, u32(9) + s(b"z" * 200_000))
    packets = framer.feed(big[:100]) + framer.feed(big[100:])
    assert len(packets) == 1
    assert len(packets[0].body) <= SftpFramer.HEADER_KEEP
    assert packets[0].request_id == 9
