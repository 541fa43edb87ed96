"""The interactive line tracker (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.ssh.lines import Enter, LineTracker


def lines(*chunks: bytes) -> list[tuple[str, bool]]:
    t = LineTracker()
    out = []
    for c in chunks:
        out += [(p.line.text, p.line.uncertain) for p in t.feed(c) if isinstance(p, Enter)]
    return out


def test_typing_editing_and_enter() -> None:
    assert lines(b"ls -la\r") == [("ls -la", False)]
    assert lines(b"lx\x7fs\r") == [("ls", False)]
    assert lines(b"rm -rf x\x15echo hi\r") == [("echo hi", False)]
    assert lines(b"echo one two\x17three\r") == [("echo one three", False)]
    assert lines(b"sleep 30\x03", b"date\r") == [("date", False)]
    assert lines(b"a\r\nb\n") == [("a", False), ("b", False)]
    assert lines("écho\x7f\x7f\x7f\x7fecho\r".encode()) == [("echo", False)]


def test_cursor_motion_and_history_make_lines_uncertain() -> None:
    assert lines(b"\x1b[A\r") == [("", True)]
    assert lines(b"ls -l\x1b[Dx\r") == [("ls -lx", True)]
    assert lines(b"ls /us\t\r") == [("ls /us", True)]
    assert lines(b"\x1b[200~echo pasted\x1b[201~\r") == [("echo pasted", False)]


@given(st.lists(st.binary(max_size=50), max_size=20))
def test_pieces_reassemble_the_input(chunks: list[bytes]) -> None:
    t = LineTracker()
    for c in chunks:
        pieces = t.feed(c)
        rebuilt = b"".join(p.key if isinstance(p, Enter) else p for p in pieces)
        assert rebuilt == c


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=300))
def test_chunking_does_not_change_lines(data: bytes, cut: int) -> None:
    whole = lines(data)
    assert lines(data[:cut], data[cut:]) == whole
