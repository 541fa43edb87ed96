from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import Masker

from .conftest import make
from .samples import PEM, PLANTS

FULL: Masker = make(
    {"recognizers": {"personal": True}, "rules": [{"id": "emp", "pattern": "EMP-[0-9]{4}"}]}
)

FILLER = st.text(
    alphabet=st.sampled_from(list("abc xyz 0123456789-.:@/=\n\t_+é€😀")),
    max_size=60,
)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        parts.append(draw(FILLER))
        if draw(st.booleans()):
            _, text, _ = draw(st.sampled_from(PLANTS))
            parts.append(text)
        if draw(st.integers(0, 9)) == 0:
            # PEM headers that are not private keys (single-line rules stop at them)
            parts.append(draw(st.sampled_from(NOT_KEYS)))
    return "".join(parts).encode()


NOT_KEYS = [
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN ",
]


def run_stream(m: Masker, data: bytes, cuts: list[int]) -> tuple[bytes, list[bytes]]:
    s = m.stream()
    chunks = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        c = min(c, len(data))
        if c < prev:
            continue
        chunks.append(s.feed(data[prev:c]))
        assert s.held <= s.max_hold
        prev = c
    chunks.append(s.flush())
    return b"".join(chunks), chunks


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents(), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_any_chunking_equals_whole(data: bytes, cuts: list[int]) -> None:
    whole, counts = FULL.mask_bytes(data)
    streamed, _ = run_stream(FULL, data, cuts)
    assert streamed == whole
    s = FULL.stream()
    out = b"".join(s.feed(data[i : i + 1]) for i in range(len(data))) + s.flush()
    assert out == whole
    assert s.counts == counts


@settings(max_examples=200, deadline=None)
@given(data=documents(), cuts=st.lists(st.integers(0, 2000), max_size=20))
def test_emitted_chunks_never_split_utf8(data: bytes, cuts: list[int]) -> None:
    _, chunks = run_stream(FULL, data, cuts)
    for chunk in chunks:
        chunk.decode("utf-8")  # every chunk is whole characters


def test_split_inside_multibyte_character() -> None:
    text = "é€😀 john@example.com 😀".encode()
    m = make({"recognizers": ["email"]})
    whole, _ = m.mask_bytes(text)
    for cut in range(1, len(text)):
        s = m.stream()
        a = s.feed(text[:cut])
        a.decode("utf-8")
        b = s.feed(text[cut:])
        assert a + b + s.flush() == whole


def test_secret_split_across_chunks_never_leaks() -> None:
    m = make()
    data = b"log line\nAKIAIOSFODNN7EXAMPLE and password=hunter2\n"
    for cut in range(len(data) + 1):
        s = m.stream()
        first = s.feed(data[:cut])
        assert b"AKIA" not in first or b"[AWS" in first
        out = first + s.feed(data[cut:]) + s.flush()
        assert b"hunter2" not in out and b"AKIAIOSFODNN7EXAMPLE" not in out


def test_newline_releases_output() -> None:
    m = make({"recognizers": {"personal": True}})
    s = m.stream()
    assert s.feed(b"hello world\n") == b"hello world\n"
    assert s.feed(b"partial line without newline") == b""
    assert s.flush() == b"partial line without newline"


def test_holdback_bounded_without_newlines() -> None:
    m = make({"recognizers": {"personal": True}})
    s = m.stream()
    emitted = 0
    for _ in range(200):
        emitted += len(s.feed(b"x" * 1000))
        assert s.held <= s.max_hold
    assert emitted >= 200_000 - s.max_hold
    assert s.max_hold <= 20_000


def test_pem_across_chunks() -> None:
    m = make()
    data = ("before\n" + PEM + "\nafter\n").encode()
    whole, counts = m.mask_bytes(data)
    assert counts == {"pem_private_key": 1}
    for size in (1, 3, 7, 64):
        s = m.stream()
        out = b"".join(s.feed(data[i : i + size]) for i in range(0, len(data), size))
        # the END line arrived, so nothing is held back waiting for the key
        assert out.endswith(b"after\n")
        assert out + s.flush() == whole


def test_pem_held_until_end_line() -> None:
    m = make()
    s = m.stream()
    out = s.feed(b"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n")
    assert b"MIIE" not in out
    out += s.feed(b"-----END PRIVATE KEY-----\nnext\n")
    assert out == b"[PRIVATE_KEY]\nnext\n"


def test_flush_then_reuse() -> None:
    m = make()
    s = m.stream()
    assert s.feed(b"token=abc") == b""
    assert s.flush() == b"token=[SECRET]"
    assert s.feed(b"password=x\n") == b"password=[SECRET]\n"
    assert s.counts == {"secret_key_value": 2}


def test_inactive_stream_passthrough() -> None:
    m = make({"recognizers": {"credentials": False}})
    s = m.stream()
    assert s.feed(b"password=x") == b"password=x"
    assert s.flush() == b""


def test_not_a_key_header_stops_single_line_matches() -> None:
    """A bearer value running into a certificate header: the stream released
    the bytes before the header while it was undecided, so the whole-buffer
    result (which let the value run on once the header proved not to be a
    key) could not be matched. No single-line match crosses a header now."""
    data = b"bearer abc-01.2.3.4-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----,"
    whole, _ = FULL.mask_bytes(data)
    assert whole == data
    for cut in range(len(data) + 1):
        assert run_stream(FULL, data, [cut])[0] == whole, cut
    assert FULL.mask_bytes(b"password=abc-----BEGIN CERTIFICATE-----")[0] == (
        b"password=[SECRET]-----BEGIN CERTIFICATE-----"
    )
