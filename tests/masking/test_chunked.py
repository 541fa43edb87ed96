"""Searches for candidates end a chunk ahead of where they start (engine._CHUNK),
so that matches running to the end of a long line are not searched to that end
again for every candidate. The output is the same as with searches that run to
the end of the buffer: long lines with long runs, planted values and
near-misses, masked whole and as a stream, by the C++ scan and the Python
loop, with the smallest chunk (two windows) against none."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import masking.engine as engine_mod
from masking import Masker, MaskingConfig, build_masker

from .conftest import KEY
from .samples import PLANTS
from .test_re2scan import CONFIGS, NEAR_MISSES, _stream

MASKERS: list[Masker] = [
    build_masker(MaskingConfig.model_validate(cfg), KEY, accelerate=fast)
    for cfg in [{}, *CONFIGS]
    for fast in ([False, True] if engine_mod.accelerated() else [False])
]
RUNS = st.sampled_from(["token:", "password=", "api_key: ", "LONG", "a@", "4111 ", "x", "ab:"])


@st.composite
def long_lines(draw: st.DrawFn) -> bytes:
    """Lines of tens of KB: runs that make matches longer than a window (a key
    word and thousands of value bytes), between planted values."""
    parts = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.integers(0, 4))
        if kind <= 1:
            run = draw(RUNS)
            parts.append(run + draw(st.sampled_from("xyz07")) * draw(st.integers(0, 12_000)))
        elif kind == 2:
            parts.append(draw(RUNS) * draw(st.integers(1, 3000)))
        elif kind == 3:
            parts.append(draw(st.sampled_from(PLANTS))[1])
        else:
            parts.append(draw(st.sampled_from(NEAR_MISSES)))
        parts.append(draw(st.sampled_from(["", " ", ",", "\n", '"'])))
    return "".join(parts).encode()


def _masked(m: Masker, data: bytes, chunk: int, cuts: list[int]) -> Any:
    saved = engine_mod._CHUNK
    engine_mod._CHUNK = chunk
    try:
        return m.mask_bytes(data), _stream(m, data, cuts), m.mask_value(data)
    finally:
        engine_mod._CHUNK = saved


@pytest.mark.parametrize("which", range(len(MASKERS)))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=long_lines(), cuts=st.lists(st.integers(0, 80_000), max_size=6))
def test_chunked_searches_mask_as_whole_ones(which: int, data: bytes, cuts: list[int]) -> None:
    m = MASKERS[which]
    assert _masked(m, data, 0, cuts) == _masked(m, data, 1 << 40, cuts)


def test_a_long_value_is_masked_at_every_chunk_size() -> None:
    """A key word with a megabyte value, then more key-values on the line:
    each masked as before (the value up to the rule's longest match)."""
    m = build_masker(MaskingConfig.model_validate({}), KEY)
    data = b"token: " + b"v" * 1_000_000 + b" password=hunter2 " + b"secret:" * 50_000 + b"\n"
    whole = _masked(m, data, 1 << 40, [])
    assert whole == _masked(m, data, 0, []) == _masked(m, data, engine_mod._CHUNK, [])
    out, counts = whole[0]
    assert b"hunter2" not in out and out.startswith(b"token: [SECRET]")
    assert counts["secret_key_value"] >= 3


@pytest.mark.parametrize("m", MASKERS[:2])
def test_values_across_a_chunks_end(m: Masker) -> None:
    """A value that starts less than a window before a chunk's end and runs
    past it: searched again with a longer chunk, not cut at the chunk's end
    (which would mask its first part only); a chunk that ends at a newline
    needs no such margin."""
    chunk = 2 * m.window  # with _CHUNK 0
    for t in sorted(
        {chunk - m.window - 5, chunk - m.window + 1, chunk - 100, chunk - 7, chunk - 1, chunk}
    ):
        for value in (b"token:" + b"x" * 20_000, b"password=" + b"y" * 3000):
            for end in (b"\n", b" x" * 20_000):  # the chunk ends at that newline, or not
                data = b" " * t + value + b" password=hunter2" + end
                assert _masked(m, data, 0, []) == _masked(m, data, 1 << 40, []), (t, value[:9])
