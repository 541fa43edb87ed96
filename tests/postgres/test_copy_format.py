"""COPY text/CSV rows (``_copy_format``) and their column masking
(``_copy_mask``), sans-IO: any value survives encode/decode; rows come out
the same however the stream is split; garbage never crashes and is never
lost; only the fields of masked columns change."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from protocols.postgres._copy_format import (
    CopyFormat,
    RowSplitter,
    decode_field,
    encode_field,
    field_spans,
    split_terminator,
)
from protocols.postgres._copy_mask import CopyColumns
from protocols.postgres._copy_stmt import PROBE_CATALOG, PROBE_DESCRIBE, copy_target
from protocols.postgres._masking import NULL, PASS, REPLACE, RowPlan
from protocols.postgres._messages import Column
from tests.support.chunks import split

_SPECIAL = b"\t\\\n\r,;|\"'xN \x01"
value = st.one_of(
    st.none(),
    st.binary(max_size=12),
    st.lists(st.sampled_from(list(_SPECIAL)), max_size=8).map(bytes),
)
_TEXT_DELIMS = [b"\t", b",", b"|", b";", b"\x01", b"X"]


@st.composite
def formats(draw: st.DrawFn) -> CopyFormat:
    if draw(st.booleans()):
        delim = draw(st.sampled_from([b",", b";", b"\t", b"|"]))
        quote = draw(st.sampled_from([q for q in (b'"', b"'", b"%") if q != delim]))
        escape = draw(st.sampled_from([quote, b"\\", b"!"]))
        null = draw(st.sampled_from([b"", b"NULL", b"\\N"]))
        return CopyFormat.make_csv(delim, null, quote, escape, draw(st.booleans()))
    delim = draw(st.sampled_from(_TEXT_DELIMS))
    null = draw(st.sampled_from([b"\\N", b"NUL", b""]))
    return CopyFormat.text(delim, null, draw(st.booleans()))


def _storable(v: bytes | None, fmt: CopyFormat) -> bool:
    # PostgreSQL's own ambiguity: in text format a value equal to the NULL
    # string (NULL 'NUL' and the value 'NUL') is written as it is
    return v is None or fmt.csv or encode_field(v, fmt) != fmt.null


def _row(values: list[bytes | None], fmt: CopyFormat) -> bytes:
    return bytes((fmt.delimiter,)).join(encode_field(v, fmt) for v in values) + b"\n"


@given(formats(), value)
def test_field_round_trip(fmt: CopyFormat, v: bytes | None) -> None:
    assume(_storable(v, fmt))
    assert decode_field(encode_field(v, fmt), fmt) == v


@given(
    formats(),
    st.lists(st.lists(value, min_size=1, max_size=5), max_size=6),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_rows_split_anywhere(
    fmt: CopyFormat, rows: list[list[bytes | None]], cuts: list[int]
) -> None:
    assume(all(_storable(v, fmt) for r in rows for v in r))
    data = b"".join(_row(r, fmt) for r in rows)
    splitter = RowSplitter(fmt)
    got: list[bytes] = []
    for chunk in split(data, cuts):
        got += splitter.feed(chunk)
    assert splitter.tail == b""
    decoded = []
    for line in got:
        content, term = split_terminator(line, fmt)
        assert term == b"\n"
        decoded.append([decode_field(content[s:e], fmt) for s, e in field_spans(content, fmt)])
    assert decoded == rows


@given(formats(), st.binary(max_size=200), st.lists(st.integers(0, 300), max_size=8))
def test_garbage_never_crashes_nor_is_lost(fmt: CopyFormat, data: bytes, cuts: list[int]) -> None:
    splitter = RowSplitter(fmt)
    out = b""
    for chunk in split(data, cuts):
        for line in splitter.feed(chunk):
            content, _ = split_terminator(line, fmt)
            for s, e in field_spans(content, fmt):
                decode_field(content[s:e], fmt)
            out += line
    assert out + splitter.take_tail() == data


class _Masking:
    """The one StreamMasking method CopyColumns calls, with a fixed replacement."""

    def mask_value(
        self, value: bytes, kind: int, type_oid: int, rid: str
    ) -> tuple[bytes | None, dict[str, int]]:
        return (None if kind == NULL else b'[MASKED\t,"x\\]'), {rid: 1}


@given(
    formats(),
    st.lists(st.lists(value, min_size=3, max_size=3), max_size=6),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_only_masked_columns_change(
    fmt: CopyFormat, rows: list[list[bytes | None]], cuts: list[int]
) -> None:
    assume(all(_storable(v, fmt) for r in rows for v in r))
    fmt_rows = [_row(r, fmt) for r in rows]
    plan = RowPlan([PASS, REPLACE, NULL], ["", "col", "num"], True, False)
    cols = [Column(n, 0, i, 25, -1, -1, 0) for i, n in enumerate(("a", "b", "c"))]
    masker = CopyColumns(_Masking(), plan, cols, fmt)
    out = b""
    for chunk in split(b"".join(fmt_rows), cuts):
        new, _ = masker.feed(chunk)
        out += chunk if new is None else new
    out += masker.finish()[0]
    lines = RowSplitter(fmt).feed(out)
    body = lines[1:] if fmt.header and lines else lines
    want = rows[1:] if fmt.header and rows else rows
    got = []
    for line in body:
        content, _ = split_terminator(line, fmt)
        got.append([decode_field(content[s:e], fmt) for s, e in field_spans(content, fmt)])
    assert got == [[r[0], None if r[1] is None else b'[MASKED\t,"x\\]', None] for r in want]
    if fmt.header and rows:
        assert lines[0] == fmt_rows[0]  # the header row is names: left alone


def test_copy_target() -> None:
    t = copy_target(
        'COPY public."My T" (a, "B c") TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER \';\')'
    )
    assert t.probe == PROBE_DESCRIBE and t.sql == 'SELECT "a", "B c" FROM public."My T"'
    assert t.fmt.csv and t.fmt.header and t.fmt.delimiter == ord(";") and not t.binary
    t = copy_target("copy people to stdout with binary")
    assert t.probe == PROBE_CATALOG and t.sql == "people" and t.binary
    t = copy_target("copy (select ssn from people) to stdout with null 'x'")
    assert t.sql == "SELECT ssn FROM people" and t.fmt.null == b"x" and not t.fmt.csv
