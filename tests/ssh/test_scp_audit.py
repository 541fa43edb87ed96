"""Legacy scp stream auditing (sans-IO)."""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from protocols.ssh.scp import ScpAudit, ScpError

STREAM = (
    b"T1700000000 0 1700000000 0\nC0644 5 a.txt\nhello\x00"
    b"D0755 0 sub\nC0600 3 b.bin\n\x00\x01\x02\x00E\n"
    b"C0644 0 empty\n\x00"
)


def files(chunks: list[bytes]) -> list[tuple[str, int, str]]:
    audit = ScpAudit()
    out = []
    for c in chunks:
        out += [(f.path, f.size, f.mode) for f in audit.feed(c)]
    return out


def test_files_with_paths_and_sizes() -> None:
    assert files([STREAM]) == [("a.txt", 5, "0644"), ("sub/b.bin", 3, "0600"), ("empty", 0, "0644")]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_chunking(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks, last = [], 0
    for p in points:
        chunks.append(STREAM[last:p])
        last = p
    chunks.append(STREAM[last:])
    assert files(chunks) == files([STREAM])


@given(st.binary(max_size=500))
def test_garbage_raises_only_scp_error(data: bytes) -> None:
    with contextlib.suppress(ScpError):
        ScpAudit().feed(data)
