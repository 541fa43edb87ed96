"""Masked output streams: secrets split across chunks are masked, typed
echo is released at once, and held output is released after a quiet spell."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.ssh.output import MaskedStream

SECRET = b"hoopd-secret-0123456789abcdef"
MASKER = build_masker(
    MaskingConfig.model_validate({"rules": [{"id": "t", "pattern": "hoopd-secret-[0-9a-f]{16}"}]}),
    b"k" * 32,
)


def collect(flush_after: float | None = 10.0) -> tuple[MaskedStream, list[bytes]]:
    out: list[bytes] = []
    return MaskedStream(MASKER, lambda data, counts: out.append(data), flush_after), out


@given(st.lists(st.integers(min_value=1, max_value=60), max_size=12))
def test_secret_masked_for_any_chunking(cuts: list[int]) -> None:
    async def go() -> bytes:
        stream, out = collect()
        data = b"a line\nprefix " + SECRET + b" suffix\nprompt$ "
        pos = 0
        for c in cuts:
            stream.feed(data[pos : pos + c])
            pos += c
        stream.feed(data[pos:])
        stream.flush()
        return b"".join(out)

    result = asyncio.run(go())
    assert SECRET not in result
    assert result.startswith(b"a line\nprefix ") and result.endswith(b" suffix\nprompt$ ")


def test_echo_is_released_at_once_and_the_rest_after_quiet() -> None:
    async def go() -> None:
        stream, out = collect(0.25)
        stream.feed(b"prompt$ ")
        assert out == []  # held: could be the start of a secret
        stream.typed(b"l")
        stream.feed(b"l")
        assert b"".join(out) == b"prompt$ l"
        out.clear()
        stream.typed(b"s -la")  # typed fast: echoed in pieces
        for piece in (b"s", b" -", b"la"):
            stream.feed(piece)
            assert b"".join(out).endswith(piece)
        out.clear()
        for ch in SECRET:  # the target dribbles a secret: never released early
            stream.feed(bytes([ch]))
            await asyncio.sleep(0.002)
        assert b"".join(out) == b""
        await asyncio.sleep(0.5)
        assert SECRET not in b"".join(out) and b"".join(out)

    asyncio.run(go())


def test_typed_characters_do_not_release_a_dribbled_secret() -> None:
    async def go() -> bytes:
        stream, out = collect(0.25)
        line = b"for c in " + b" ".join(bytes([c]) for c in SECRET) + b"; do printf $c; done\r"
        stream.typed(line)
        stream.feed(line[:-1])  # the shell echoes the line
        stream.feed(b"\r\n")
        for ch in SECRET:
            stream.feed(bytes([ch]))
            await asyncio.sleep(0.002)
        stream.feed(b"\r\n$ ")
        await asyncio.sleep(0.5)
        return b"".join(out)

    result = asyncio.run(go())
    assert SECRET not in result and result.endswith(b"\r\n$ ")


def test_without_flush_interval_held_output_waits_for_more_or_the_end() -> None:
    """flush_after=None (exec without a terminal): a pause, however long, does
    not release a held partial secret; the rest of it or the end of the
    stream does."""
    async def go() -> None:
        stream, out = collect(None)
        half = len(SECRET) // 2
        stream.feed(b"token " + SECRET[:half])
        await asyncio.sleep(0.3)
        assert SECRET[:half] not in b"".join(out)
        stream.feed(SECRET[half:] + b" tail")
        stream.flush()  # end of stream
        got = b"".join(out)
        assert SECRET[:half] not in got and SECRET[half:] not in got and got.endswith(b" tail")

    asyncio.run(go())


def test_colour_inside_a_secret_does_not_hide_it() -> None:
    """grep --color highlighting part of a secret splits it with escape
    sequences the terminal does not show; colour elsewhere is left alone."""

    async def go() -> bytes:
        stream, out = collect()
        stream.feed(b"hoopd-secret-\x1b[01;31m\x1b[K012345\x1b[m\x1b[K6789abcdef\n")
        stream.feed(b"\x1b[01;32mroot@web\x1b[00m:\x1b[01;34m~\x1b[00m# ")
        stream.flush()
        return b"".join(out)

    result = asyncio.run(go())
    assert b"012345" not in result and b"6789abcdef" not in result
    assert result.endswith(b"\x1b[01;32mroot@web\x1b[00m:\x1b[01;34m~\x1b[00m# ")
