"""Sans-IO codec properties: any split of a byte stream frames to the same
messages; garbage never crashes the framer (it raises ProtocolViolation or
waits for more bytes); encoders and decoders agree."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from protocols.postgres import _messages as m
from protocols.postgres import _wire as w
from protocols.postgres._masking import Hits, min_match_width, strip_assertions
from protocols.postgres._tracker import EXEC, QUERY, SYNC, Running, Tracker
from tests.support.chunks import split

text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]), max_size=40)

frontend_msg = st.one_of(
    text.map(w.query),
    st.tuples(text, text).map(lambda a: w.parse(a[0], a[1])),
    st.tuples(text, text).map(lambda a: w.bind(a[0], a[1])),
    st.tuples(text, st.integers(0, 1000)).map(lambda a: w.execute(*a)),
    st.just(w.sync()),
    st.just(w.message(w.H)),
    st.binary(max_size=64).map(lambda b: w.message(w.COPY_DATA, b)),
)
backend_msg = st.one_of(
    st.lists(st.one_of(st.none(), st.binary(max_size=30)), max_size=6).map(w.data_row),
    text.map(w.command_complete),
    st.just(w.ready_for_query(b"T")),
    st.tuples(text, text).map(lambda a: w.parameter_status(*a)),
    st.tuples(st.sampled_from(["42501", "08P01"]), text).map(lambda a: w.error_response(*a)),
    st.tuples(st.sampled_from(["00000"]), text).map(lambda a: w.notice_response(*a)),
)


def frame_all(framer: w.Framer, chunks: list[bytes]) -> list[bytes]:
    out = []
    for chunk in chunks:
        buf, frames = framer.feed(chunk)
        out += [bytes(buf[s:e]) for _, s, e in frames]
    return out


@given(st.lists(frontend_msg, max_size=12), st.lists(st.integers(0, 10_000), max_size=10))
def test_frontend_split_anywhere(msgs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(msgs)
    assert frame_all(w.Framer(frontend=True), split(data, cuts)) == msgs


@given(st.lists(backend_msg, max_size=12), st.lists(st.integers(0, 10_000), max_size=10))
def test_backend_split_anywhere(msgs: list[bytes], cuts: list[int]) -> None:
    data = b"".join(msgs)
    assert frame_all(w.Framer(frontend=False), split(data, cuts)) == msgs


@given(st.lists(backend_msg, max_size=12), st.lists(st.integers(0, 10_000), max_size=10))
def test_backend_feed_rows_matches_feed(msgs: list[bytes], cuts: list[int]) -> None:
    """The hot-path framer lists the same non-DataRow messages, counts the
    DataRows between them, and leaves the same tail."""
    data = b"".join(msgs)
    framer = w.Framer(frontend=False)
    others: list[bytes] = []
    layout: list[object] = []
    for chunk in split(data, cuts):
        buf, start, _end, found, rows = framer.feed_rows(chunk)
        before = 0
        pos = start
        for t, s, e, nrows in found:
            layout += ["D"] * (nrows - before)
            # only DataRows between two listed messages
            rest = w.Framer(frontend=False).feed(bytes(buf[pos:s]))[1]
            assert [f[0] for f in rest] == [w.DATA_ROW] * (nrows - before)
            before = nrows
            others.append(bytes(buf[s:e]))
            layout.append(t)
            pos = e
        layout += ["D"] * (rows - before)
    expected = [x for x in msgs if x[0] != w.DATA_ROW]
    assert others == expected
    assert layout == ["D" if x[0] == w.DATA_ROW else x[0] for x in msgs]
    assert framer.pending() == 0


@contextlib.contextmanager
def long_message(size: int) -> Iterator[None]:
    """Messages longer than ``size`` bytes are gathered as lists of chunks."""
    saved, w.LONG_MESSAGE = w.LONG_MESSAGE, size
    try:
        yield
    finally:
        w.LONG_MESSAGE = saved


@given(
    st.lists(frontend_msg, max_size=12),
    st.lists(backend_msg, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=10),
    st.integers(0, 40),
)
def test_long_messages_gathered_split_anywhere(
    front: list[bytes], back: list[bytes], cuts: list[int], size: int
) -> None:
    """The chunk lists of long messages frame like one buffer, in ``feed``
    and ``feed_rows``; ``pending``/``take_tail`` hand over what is held."""
    with long_message(size):
        fdata = b"".join(front)
        assert frame_all(w.Framer(frontend=True), split(fdata, cuts)) == front
        framer = w.Framer(frontend=False)
        got: list[bytes] = []
        rows = 0
        for chunk in split(b"".join(back), cuts):
            buf, _start, _end, found, n = framer.feed_rows(chunk)
            got += [bytes(buf[s:e]) for _, s, e, _ in found]
            rows += n
        assert got == [x for x in back if x[0] != w.DATA_ROW]
        assert rows == sum(x[0] == w.DATA_ROW for x in back)
        assert framer.pending() == 0
        if fdata:
            held = w.Framer(frontend=True)
            cut = len(fdata) - 1  # the last message stays incomplete
            for chunk in split(fdata[:cut], cuts):
                held.feed(chunk)
            last = len(front[-1]) - 1
            assert held.pending() == last
            assert held.take_tail() == fdata[cut - last : cut]
            assert held.pending() == 0


def test_a_long_message_in_small_chunks_is_joined_once() -> None:
    """A 32 MiB Query arriving in 4 KiB reads: appending each read to one
    buffer copies 128 GiB in all (minutes of CPU); gathered, it is joined
    once."""
    body = b"x" * (32 * 1024 * 1024)
    msg = w.query(body.decode())
    framer = w.Framer(frontend=True)
    started = time.process_time()
    frames: list[w.Frame] = []
    for i in range(0, len(msg), 4096):
        _buf, frames = framer.feed(msg[i : i + 4096])
    spent = time.process_time() - started
    complete = len(frames) == 1 and frames[0][2] - frames[0][1] == len(msg)
    assert complete
    assert spent < 3.0, f"{spent:.1f} s of CPU to frame one 32 MiB message"


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), max_size=10), st.integers(0, 250), st.integers(0, 30))
def test_hits_touch(spans: list[tuple[int, int]], start: int, size: int) -> None:
    # non-overlapping sorted spans
    starts, ends, pos = [], [], 0
    for gap, length in spans:
        pos += gap
        starts.append(pos)
        ends.append(pos + length)
        pos += length
    hits = Hits(starts, ends)
    expected = any(s < start + size and e > start for s, e in zip(starts, ends, strict=True)) and size > 0
    assert hits.touch(start, start + size) == expected


def test_min_match_width() -> None:
    assert min_match_width([r"s3cr3t-[0-9]+", r"[a-z]{3,}@x"]) == 5
    assert min_match_width([r"\pL+"]) == 0  # not readable by Python's parser: shortcut off


@given(st.dictionaries(text.filter(bool), text, max_size=5), st.lists(st.integers(0, 500), max_size=5))
def test_startup_split_anywhere(params: dict[str, str], cuts: list[int]) -> None:
    pkt = w.startup_message(params)
    framer = w.Framer(frontend=True, startup=True)
    got = frame_all(framer, split(pkt, cuts))
    assert got == [pkt]
    assert m.startup_params(pkt, 0, len(pkt)) == params


@given(st.binary(max_size=300), st.booleans())
def test_garbage_never_crashes(data: bytes, frontend: bool) -> None:
    framer = w.Framer(frontend=frontend, startup=frontend and data[:1] == b"\x00")
    try:
        buf, frames = framer.feed(data)
        for t, s, e in frames:
            # decoders either work or raise ProtocolViolation
            try:
                if t == w.DATA_ROW and not frontend:
                    m.data_row_values(buf, s, e)
                elif t == w.B and frontend:
                    m.bind_msg(buf, s, e)
                elif t == w.P and frontend:
                    m.parse_msg(buf, s, e)
                elif t == w.ROW_DESCRIPTION and not frontend:
                    m.row_description(buf, s, e)
            except w.ProtocolViolation:
                pass
    except w.ProtocolViolation:
        pass


@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=8))
def test_data_row_roundtrip(values: list[bytes | None]) -> None:
    msg = w.data_row(values)
    assert m.data_row_values(msg, 0, len(msg)) == values


def test_error_fields_roundtrip() -> None:
    msg = w.error_response("42501", "nope", detail="d", hint="h")
    f = m.error_fields(msg, 0, len(msg))
    assert f["C"] == "42501" and f["M"] == "nope" and f["D"] == "d" and f["H"] == "h"


def test_strip_assertions_keeps_classes() -> None:
    assert strip_assertions(r"\bab[^$]c$") == "ab[^$]c"
    assert strip_assertions(r"^x\\b") == r"x\\b"


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def complete(self, run: Running, tag: str) -> None:
        self.events.append(("complete", tag))

    def failed(self, run: Running, fields: dict[str, str]) -> None:
        self.events.append(("failed", fields.get("C")))

    def skipped(self, run: Running, why: str) -> None:
        self.events.append(("skipped", run.cmd))


def test_tracker_pipeline_error_skips_to_sync() -> None:
    sink = _Sink()
    tr = Tracker(sink)
    tr.expect(EXEC, "", [Running("a")])
    tr.expect(EXEC, "", [Running("b")])
    tr.expect(EXEC, "", [Running("c")])
    tr.expect(SYNC)
    tr.command_complete("SELECT 1")
    tr.error({"C": "22012"})
    tr.ready(b"I")
    assert sink.events == [("complete", "SELECT 1"), ("failed", "22012"), ("skipped", "c")]
    assert tr.outstanding() == 0


def test_tracker_simple_query_statements() -> None:
    sink = _Sink()
    tr = Tracker(sink)
    tr.expect(QUERY, "", [Running("a"), Running("b"), Running("c")])
    tr.command_complete("INSERT 0 1")
    tr.error({"C": "23505"})
    tr.ready(b"I")
    assert sink.events == [("complete", "INSERT 0 1"), ("failed", "23505"), ("skipped", "c")]
