"""The interactive line tracker (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from protocols.ssh.lines import Enter, LineTracker, drawn_lines


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


def test_keys_that_edit_the_line_unseen_make_it_uncertain() -> None:
    # Home then Ctrl-U or Ctrl-W kills only what is left of the cursor: the rest runs
    assert lines(b"rm -rf x\x01\x15\r") == [("", True)]
    assert lines(b"rm -rf x\x1b[H\x17\r") == [("rm -rf ", True)]
    # undo (Ctrl-_, Ctrl-X Ctrl-U) brings a killed line back
    assert lines(b"rm -rf x\x15\x1f\r") == [("", True)]
    assert lines(b"rm -rf x\x15\x18\x15\r") == [("", True)]
    # Ctrl-X Ctrl-X jumps to the mark; Ctrl-] searches for a character
    assert lines(b" -rf x\x18\x18rm\r") == [(" -rf xrm", True)]
    assert lines(b"x\x1dx\r") == [("xx", True)]
    # Ctrl-V / Ctrl-Q insert the next key as it is, even Ctrl-U, Backspace or Enter
    assert lines(b"rm -rf x \x16\x15\r") == [("rm -rf x ", True)]
    assert lines(b"rm -rf x\x16\x7f\r") == [("rm -rf x", True)]
    assert lines(b"a\x16\rb\r") == [("ab", True)]
    # pasted control keys may be inserted rather than obeyed
    assert lines(b"\x1b[200~rm -rf x \x15\x1b[201~\r") == [("rm -rf x ", True)]
    # only Enter and Ctrl-C start a certain line again
    assert lines(b"\x01\x15ls\r", b"ls\r") == [("ls", True), ("ls", False)]
    assert lines(b"\x01\x03ls\r") == [("ls", False)]
    # harmless keys change nothing
    assert lines(b"ls\x0c\x07\r") == [("ls", False)]


def test_ctrl_o_and_ctrl_d_hand_the_line_over() -> None:
    t = LineTracker()
    pieces = t.feed(b"rm -rf x\x0fls\r")
    enters = [p for p in pieces if isinstance(p, Enter)]
    assert [(e.line.text, e.line.uncertain, e.key, e.partial) for e in enters] == [
        ("rm -rf x", False, b"\x0f", False),
        ("ls", True, b"\r", False),  # Ctrl-O put the next history line in the buffer
    ]
    t = LineTracker()
    enters = [p for p in t.feed(b"\x04rm -r\x04f x\r") if isinstance(p, Enter)]
    assert [(e.line.text, e.key, e.partial) for e in enters] == [
        ("rm -r", b"\x04", True),  # a canonical tty hands "rm -r" over, keeps reading
        ("rm -rf x", b"\r", False),
    ]
    t.feed(b"abc\x04")
    t.clear()  # the line was refused and dropped
    assert [p.line.text for p in t.feed(b"ls\r") if isinstance(p, Enter)] == ["ls"]


def test_drawn_lines_follow_the_line_editor() -> None:
    # bash's redraw of "xm -rf d", Home, Ctrl-D, "r": only the changed cell is drawn
    assert drawn_lines(b"$ xm -rf d\r\x1b[C\x1b[C\x1b[1P\x1b[1@r", 80) == ["$ rm -rf d"]
    assert drawn_lines(b"$ echo x\b\b\b\b\b\b\x1b[K", 80) == ["$"]
    assert drawn_lines(b"out\r\n$ abcdefghij", 8) == ["out", "$ abcdefghij"]  # wrapped rows join
    assert drawn_lines(b"$ ls\x1b[2D\x1b[Kcat", 80) == ["$ cat"]
    assert drawn_lines(b"\x1b]0;title\x07$ ls\x1b[H\x1b[2J$ id", 80) == ["$ id"]


def test_drawn_lines_is_bounded() -> None:
    """The client declares the width and the target writes the output: huge
    counts and widths cost no memory or time."""
    huge = b"$ x\x1b[999999999C\x1b[999999999@y\x1b[999999999Bz\x1b[" + b"9" * 8000 + b"Cq"
    lines = drawn_lines(huge, 2**32 - 1)
    assert sum(len(line) for line in lines) <= 4 * 1024


def test_ctrl_x_ctrl_e_hands_the_line_to_an_editor() -> None:
    t = LineTracker()
    [enter] = [p for p in t.feed(b"echo x\x18\x05") if isinstance(p, Enter)]
    assert (enter.line.text, enter.key, enter.editor) == ("echo x", b"\x05", True)
    assert lines(b"ab\x18\x18c\x05\r") == [("abc", True)]  # Ctrl-E alone: end of line


def test_keys_that_run_a_line_count_inside_a_paste_too() -> None:
    # a shell without bracketed paste (TERM=dumb) takes the markers as noise
    # and obeys Ctrl-O: an unclosed paste must not hide it
    t = LineTracker()
    enters = [p for p in t.feed(b"\x1b[200~rm -rf x\x0f") if isinstance(p, Enter)]
    assert [(e.line.text, e.key) for e in enters] == [("rm -rf x", b"\x0f")]
    assert lines(b"\x1b[200~rm -rf x \x15\x1b[201~\r") == [("rm -rf x ", True)]


def test_the_drop_sequence_aborts_a_key_sequence_first() -> None:
    """A refused line is dropped with keys sent to the shell. With Ctrl-X
    typed before the held key, bash read the drop's Ctrl-E as Ctrl-X Ctrl-E
    (edit-and-execute) and ran the refused line: Ctrl-G (abort) comes first,
    and the drop holds no key that runs a line."""
    from protocols.ssh.server import DROP_LINE

    assert DROP_LINE.startswith(b"\x07")
    t = LineTracker()
    t.feed(b"rm -rf x\x18")
    assert not [p for p in t.feed(DROP_LINE) if isinstance(p, Enter)]
