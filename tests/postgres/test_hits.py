"""``StreamMasking.hits``: one prefilter span per message is enough.

The relay looks at a message row by row only when a prefilter span touches
it. Enumerating every prefilter match made one search call per e-mail of a
text cell dense with them: a 16 MiB cell took 4.3 s of loop CPU in ``hits``
alone, more than masking it (``bench/postgres/stall_results.py --shapes
text-cell``). Now the search goes on from the end of the message a match is
in; these tests hold that every message with a match of its own is still
touched, and that nothing is touched that was not before.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from masking import MaskingConfig, build_masker
from protocols.postgres import _wire as w
from protocols.postgres._masking import Hits, StreamMasking

CONFIG = MaskingConfig.model_validate(
    {"recognizers": {"personal": True}, "rules": [{"id": "emp", "pattern": "EMP-[0-9]{6}"}]}
)
MASKER = build_masker(CONFIG, b"k" * 32)
SM = StreamMasking(MASKER, CONFIG)


def every_match(sm: StreamMasking, buf: bytes, start: int, end: int) -> Hits | None:
    """The enumeration before: every leftmost non-overlapping match."""
    assert sm.prefilter is not None
    search = sm.prefilter.raw_search
    s, e = search(buf, start, end)[0]
    if s < 0:
        return None
    starts: list[int] = []
    ends: list[int] = []
    while True:
        pos = e if e > s else s + 1
        starts.append(s)
        ends.append(pos)
        if pos >= end:
            break
        s, e = search(buf, pos, end)[0]
        if s < 0:
            break
    return Hits(starts, ends)


def touched(hits: Hits | None, bounds: list[tuple[int, int]]) -> list[bool]:
    return [hits is not None and hits.touch(s, e) for s, e in bounds]


pieces = st.sampled_from(
    [
        b"ann@example.com", b"4111 1111 1111 1111", b"123-45-6789", b"EMP-123456", b"x",
        b" ", b"\n", b"@", b"D", b"plain words", b"+14155552671", b"10.1.2.3", b"a::b",
        b"bob@", b"example.com", b"\x00\x00", b"\xff", b"ann", b"-", b"4111",
    ]
)  # fmt: skip
values = st.one_of(st.none(), st.lists(pieces, max_size=8).map(b"".join), st.binary(max_size=12))
messages = st.one_of(
    st.lists(values, max_size=4).map(w.data_row),
    st.sampled_from([b"SELECT 1", b"note ann@example.com"]).map(
        lambda t: w.message(b"C", t + b"\0")
    ),
)


@settings(max_examples=300)
@given(st.lists(messages, min_size=1, max_size=8), st.binary(max_size=6))
def test_every_message_with_a_match_is_touched(msgs: list[bytes], prefix: bytes) -> None:
    buf = prefix + b"".join(msgs)
    bounds: list[tuple[int, int]] = []
    pos = len(prefix)
    for msg in msgs:
        bounds.append((pos, pos + len(msg)))
        pos += len(msg)
    new = SM.hits(buf, len(prefix), len(buf))
    old = every_match(SM, buf, len(prefix), len(buf))
    assert SM.prefilter is not None
    search = SM.prefilter.raw_search
    for (s, e), now, before in zip(bounds, touched(new, bounds), touched(old, bounds), strict=True):
        own_match = search(buf[s + 5 : e], 0, e - s - 5)[0][0] >= 0
        if own_match:
            assert now, buf[s:e]
        if now:
            assert before, buf[s:e]
        if not now:
            # nothing in it the engine masks
            body = buf[s + 5 : e]
            assert MASKER.mask_bytes(body)[0] == body


def test_one_span_per_message() -> None:
    cell = b"ann@example.com " * 10_000
    rows = [w.data_row([cell]), w.data_row([b"plain"]), w.data_row([b"x", cell, b"y"])]
    buf = b"".join(rows)
    hits = SM.hits(buf, 0, len(buf))
    assert hits is not None
    assert len(hits.starts) == 2
    assert touched(hits, [(0, len(rows[0])), (len(rows[0]), len(rows[0]) + len(rows[1]))]) == [True, False]
    assert hits.touch(len(buf) - len(rows[2]), len(buf))
