"""The C++ candidate scan (masking._re2scan) gives the same output as the Python
loop over google-re2 (``Masker(..., accelerate=False)``), which is the reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import masking.engine as engine_mod
from masking import Column, Masker, MaskingConfig, build_masker

from .conftest import KEY, masked_at_each_gap, unchecked
from .samples import NEGATIVES, PEM, PLANTS

pytestmark = pytest.mark.skipif(
    not engine_mod.accelerated(),
    reason="masking._re2scan is not built (install g++ and libre2-dev, then pip install -e .) "
    "or HOOPD_PURE_PYTHON is set",
)

ROOT = Path(__file__).resolve().parents[2]

CONFIGS: list[dict[str, Any]] = [
    {"recognizers": {"personal": True}},
    {
        "recognizers": {"personal": True},
        "rules": [
            {"id": "emp", "pattern": "EMP-[0-9]{4}"},
            {
                "id": "order",
                "pattern": "order[ #:]+(?P<value>[a-z0-9]{6,10})",
                "ignore_case": True,
                "max_length": 40,
            },
            # can match empty (at word boundaries): empty candidates in the scan
            {"id": "xes", "pattern": "\\bX*\\b", "max_length": 8},
            {"id": "anchored", "pattern": "^ZZ[0-9]{3}|[0-9]{3}QQ$"},
            {"id": "long", "pattern": "LONG[a-z0-9]+", "max_length": 2000},
        ],
        "allow": [
            {"value": "john.doe@example.com"},
            {"pattern": "4111.*", "rules": ["card"]},
            {"pattern": "10\\.0\\..*"},
        ],
        "replacements": {"default": "hmac", "card": "partial"},
    },
    {"replacements": {"default": "hmac"}},
    {"recognizers": {"credentials": False, "enable": ["ssn", "card", "phone"]}},
    {
        # a match's first byte that depends on the byte before it (the scanner
        # skips bytes no match can start with; "7" starts none here), and a
        # rule that starts with NUL
        "recognizers": {"credentials": False},
        "rules": [
            {"id": "inword", "pattern": "\\Bx9[0-9]+"},
            {"id": "afterword", "pattern": "\\b~w[0-9]+"},
            {"id": "line", "pattern": "(?m)^-q[0-9]+"},
            {"id": "upper", "pattern": "[A-C]z9[0-9]"},
            {"id": "ab", "pattern": "ab[0-9]{3}"},
            {"id": "nul", "pattern": "\\x00\\x01KEY[0-9]{4}"},
        ],
    },
]
ADVERSARIAL = ["7x91", " x91", "7~w5", " ~w5", "\n-q42", " -q7", "Bz90", "ab123", "\x00\x01KEY1234"]


def _pair(cfg: dict[str, Any]) -> tuple[Masker, Masker]:
    config = MaskingConfig.model_validate(cfg)
    fast = build_masker(config, KEY, accelerate=True)
    pure = build_masker(config, KEY, accelerate=False)
    assert fast.accelerated and not pure.accelerated
    return fast, pure


PAIRS = [_pair(c) for c in CONFIGS] if engine_mod.accelerated() else []

NOT_KEYS = [
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN ",
    PEM[:60],
    PEM.replace("-----END RSA PRIVATE KEY-----", ""),
]
NEAR_MISSES = [
    # digit runs that fail Luhn as cards but hold an SSN / phone
    "4111 123-45-6789 1112",
    "41111123456789111",
    "9123-45-67891234",
    "4111 1111 1111 1112 123-45-6789",
    "5555555555554445 415-555-2671",
    "1234 200 123-45-6789",
    "123-45-6789-0000",
    "+1 415-555-2671-1",
    "10.0.0.1 10.1.2.3 10.0.0.300",
    "john.doe@example.com jane@example.com",
    "order #AB12CD34 ORDER:zz9988x",
    "EMP-1234EMP-5678 xEMP-0001",
    "ZZ123 ZZ12345 999QQ",
    "LONG" + "a" * 300,
    "password=**** token=[SECRET] secret: s3cr3t",
    *ADVERSARIAL,
    *[t for texts in NEGATIVES.values() for t in texts],
]
FILLER = st.text(
    alphabet=st.sampled_from(list("abc xyzX 0123456789-.:@/=#\n\t_+é€😀")),
    max_size=40,
)
DIGITS = st.text(alphabet=st.sampled_from(list("0123456789- ")), min_size=9, max_size=30)


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        parts.append(draw(FILLER))
        kind = draw(st.integers(0, 9))
        if kind <= 3:
            parts.append(draw(st.sampled_from(PLANTS))[1])
        elif kind <= 5:
            parts.append(draw(st.sampled_from(NEAR_MISSES)))
        elif kind == 6:
            parts.append(draw(DIGITS))
        elif kind == 7:
            parts.append(draw(st.sampled_from([PEM, *NOT_KEYS])))
        parts.append(draw(st.sampled_from(["", " ", "\n", ", ", "\r\n", '"', "(", "="])))
    return "".join(parts).encode()


def _stream(m: Masker, data: bytes, cuts: list[int]) -> tuple[bytes, dict[str, int]]:
    s = m.stream()
    out = []
    prev = 0
    for c in [*sorted(set(cuts)), len(data)]:
        c = min(c, len(data))
        if c < prev:
            continue
        out.append(s.feed(data[prev:c]))
        prev = c
    out.append(s.flush())
    return b"".join(out), s.counts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, max(len(PAIRS) - 1, 0)),
    data=documents(),
    cuts=st.lists(st.integers(0, 3000), max_size=12),
)
def test_same_output_as_the_python_loop(which: int, data: bytes, cuts: list[int]) -> None:
    fast, pure = PAIRS[which]
    expected = pure.mask_bytes(data)
    assert masked_at_each_gap(fast, data) == [expected, expected]
    assert fast.mask_bytes(data) == expected
    assert _stream(fast, data, cuts) == _stream(pure, data, cuts)
    assert _stream(pure, data, cuts)[0] == expected[0]
    # short fields: the row masker's path (pre-filter, one search, then _find)
    bounds = sorted(cuts)
    fields = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    cols = [Column(f"c{i}") for i in range(len(fields))]
    assert fast.rows(cols).mask(fields) == pure.rows(cols).mask(fields)


BINARY = st.one_of(
    st.binary(max_size=48),
    st.integers(1, 3000).map(bytes),  # a run of NULs (/dev/zero, tar padding)
    st.sampled_from([b"\xff" * 40, bytes(range(256)), b"\x00\x01\x1f " * 20, b"\x00" * 7 + b"A"]),
)


@st.composite
def binary_documents(draw: st.DrawFn) -> bytes:
    """Binary output with values planted between, right after or right before
    runs of bytes no rule starts with (the scanner skips those)."""
    parts = []
    for _ in range(draw(st.integers(1, 8))):
        parts.append(draw(BINARY))
        kind = draw(st.integers(0, 3))
        if kind <= 1:
            parts.append(draw(st.sampled_from(PLANTS))[1].encode())
        elif kind == 2:
            parts.append(draw(st.sampled_from(NEAR_MISSES)).encode())
        else:
            parts.append(draw(st.sampled_from(ADVERSARIAL)).encode())
    return b"".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, max(len(PAIRS) - 1, 0)),
    data=binary_documents(),
    cuts=st.lists(st.integers(0, 6000), max_size=8),
)
def test_binary_output_same_as_the_python_loop(which: int, data: bytes, cuts: list[int]) -> None:
    fast, pure = PAIRS[which]
    expected = pure.mask_bytes(data)
    assert fast.mask_bytes(data) == expected
    assert _stream(fast, data, cuts) == _stream(pure, data, cuts)


def test_values_between_long_nul_runs_are_masked() -> None:
    """What a user sees of a secret inside /dev/zero-like output: masked, at
    any offset from the NUL runs around it (word-aligned or not)."""
    fast, pure = PAIRS[1]
    for rid, text, secret in PLANTS[::5]:
        for before in (0, 1, 7, 8, 9, 100_003):
            data = bytes(before) + text.encode() + bytes(70_001)
            out, counts = fast.mask_bytes(data)
            assert (out, counts) == pure.mask_bytes(data)
            assert secret.encode() not in out, (rid, before)
            assert out.startswith(bytes(before)) and out.endswith(bytes(70_001))


def test_long_inputs_many_batches() -> None:
    """More candidates than one batch holds, rejections between them, PEM headers
    (a new endpos) and a stream whose limit cuts batches short."""
    lines = []
    for i in range(3000):
        _, text, _ = PLANTS[i % len(PLANTS)]
        lines.append(f"{i} {text} {NEAR_MISSES[i % len(NEAR_MISSES)]}")
        if i % 97 == 0:
            lines.append(NOT_KEYS[i % len(NOT_KEYS)])
    data = "\n".join(lines).encode()
    for fast, pure in PAIRS:
        assert fast.mask_bytes(data) == pure.mask_bytes(data)
        cuts = list(range(0, len(data), 4093))
        assert _stream(fast, data, cuts) == _stream(pure, data, cuts)


def test_scanner_matches_the_binding_loop() -> None:
    """Scanner.scan's candidates are the binding's search + Set calls, batch by batch."""
    fast, _ = PAIRS[1]
    main = fast._main
    assert main is not None
    data = (" ".join(t for _, t, _ in PLANTS) + " " + " ".join(NEAR_MISSES)).encode()
    n = len(data)
    expected = _binding_candidates(fast, data)
    assert fast._scan is not None
    got = unchecked(fast).scan(data, 0, n, n, 10**6)
    assert got == [*expected, (-1, -1, -1)]
    assert unchecked(fast).scan(data, 0, n, n, 3) == [*expected[:3], (-2, -2, -2)]
    limit = expected[5][0]
    assert unchecked(fast).scan(data, 0, n, limit, 100) == [*expected[:6], (-2, -2, -2)]
    assert unchecked(fast).scan(data, n, n, n, 5) == [(-1, -1, -1)]
    # first_before: the leftmost candidate from any position, if it starts before stop
    for pos in range(0, n, 7):
        p, e0 = main.raw_search(data, pos, n)[0]
        want = None
        if p >= 0:
            hits = fast._idset.Match(data[p:e0]) if e0 - p < fast.window else None
            want = (p, e0, min(hits) if hits else -1)
        stop = pos + 40
        first = unchecked(fast).first_before(data, pos, stop, n)
        assert first == (want if want is not None and want[0] < stop else None), pos


def _binding_candidates(m: Masker, data: bytes) -> list[tuple[int, int, int]]:
    """The candidates of the Python loop's search + Set calls over all of data."""
    main = m._main
    assert main is not None
    n = len(data)
    found = []
    pos = 0
    while pos < n:
        p, e0 = main.raw_search(data, pos, n)[0]
        if p < 0:
            break
        hits = m._idset.Match(data[p:e0]) if e0 - p < m.window else None
        found.append((p, e0, min(hits) if hits else -1))
        pos = e0 if e0 > p else p + 1
    return found


@pytest.mark.parametrize("which", [2, len(CONFIGS) - 1])
@pytest.mark.parametrize("gap", [b"\x00" * 19, b"\x01\xff", b"\xff"])
def test_scanner_skips_no_candidate_in_binary(which: int, gap: bytes) -> None:
    """After runs of bytes no rule starts with (NULs for the built-ins; \\x01
    and \\xff for both), Scanner.scan returns exactly the binding loop's
    candidates: each search starts after the previous candidate, so the
    gap before each value is skipped before RE2 is asked."""
    fast, _ = PAIRS[which]
    assert fast._scan is not None
    pieces = [t for _, t, _ in PLANTS[::3]] + ADVERSARIAL
    data = b"".join(gap[: 1 + i % len(gap)] + t.encode() for i, t in enumerate(pieces))
    expected = _binding_candidates(fast, data)
    assert len(expected) >= 5
    assert unchecked(fast).scan(data, 0, len(data), len(data), 10**6) == [*expected, (-1, -1, -1)]


def test_accelerate_flag_and_environment() -> None:
    config = MaskingConfig.model_validate({})
    assert build_masker(config, KEY).accelerated
    assert not build_masker(config, KEY, accelerate=False).accelerated
    env = {k: v for k, v in os.environ.items() if k != "HOOPD_PURE_PYTHON"}
    code = (
        "import masking, masking.engine as e; "
        "m = masking.build_masker(masking.MaskingConfig(), b'k' * 16); "
        "print(e.accelerated(), m.accelerated)"
    )

    def run(**extra: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()

    assert run() == "True True"
    assert run(HOOPD_PURE_PYTHON="1") == "False False"
    assert run(HOOPD_PURE_PYTHON="0") == "True True"


def test_accelerate_required_but_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "_re2scan", None)
    with pytest.raises(RuntimeError):
        build_masker(MaskingConfig.model_validate({}), KEY, accelerate=True)
    assert not build_masker(MaskingConfig.model_validate({}), KEY).accelerated


def test_threads_share_a_scanner() -> None:
    """Scans release the GIL on long inputs: maskers of the same rules (one shared
    Scanner) used from several threads give each thread the single-thread output."""
    import threading

    fast, pure = PAIRS[0]
    docs = [
        "\n".join(f"{i} {PLANTS[(i * 7 + j) % len(PLANTS)][1]} filler text" for i in range(800))
        for j in range(4)
    ]
    data = [d.encode() for d in docs]
    expected = [pure.mask_bytes(d) for d in data]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                assert fast.mask_bytes(data[i]) == expected[i]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_each_value_is_scanned_afresh() -> None:
    """Short values (JSON strings, cells) are scanned one after another, each a
    new bytes object, often at the address of the one just freed. Nothing
    learnt of the last value may carry over to the next: the card after a
    value without a match, of the same length, is masked every time."""
    masker = build_masker(MaskingConfig.model_validate(CONFIGS[0]), KEY)
    mask = masker.mask_text
    got = []
    for blank in ["É\x0bòJâ@&\xa0æÿ", "no match here!!!", "ab:cd@ef&gh.ij::"]:
        for _ in range(50):
            # nothing allocated between the two calls (an assert here would)
            got.append((mask(blank), mask("4111111111111111")))
    leaked = [card for _blank, card in got if card != ("[CARD]", {"card": 1})]
    assert leaked == []
    assert all(blank[1] == {} for blank, _card in got)


def _heap_in_use() -> int | None:
    """Bytes malloc has handed out and not got back (glibc's mallinfo2), None
    where there is no mallinfo2."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                         "uordblks", "fordblks", "keepcost")
        ]  # fmt: skip

    mallinfo2 = getattr(ctypes.CDLL(None), "mallinfo2", None)
    if mallinfo2 is None:
        return None
    mallinfo2.restype = Mallinfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def test_a_dropped_scanner_frees_every_rule_program() -> None:
    """A Scanner dropped (from _make_scanner's cache of 64, as maskers with
    other rules or injected secrets come and go) gives back all its RE2
    programs, the loosened form of each rule's pattern too (once ~170 KB a
    scanner with every built-in on, more after scans warmed their DFAs)."""
    import gc

    m = build_masker(MaskingConfig.model_validate(CONFIGS[1]), KEY)
    assert m._main is not None
    checks = tuple(m._check(r, p[3:-1]) for r, p in zip(m._rules, m._parts, strict=True))
    assert all(c[-1] for c in checks)  # every rule has a loosened form
    args = (m._main.pattern, m._parts, m.window, *m._plan, checks)
    data = b"a::" * 1000 + b" bob@example.com"  # asks rules whether they are absent
    for _ in range(3):  # warm up: whatever is allocated once
        engine_mod._make_scanner.__wrapped__(*args)
    gc.collect()
    before = _heap_in_use()
    if before is None:
        pytest.skip("needs glibc's mallinfo2")
    rounds = 10
    for _ in range(rounds):
        scanner = engine_mod._make_scanner.__wrapped__(*args)
        scanner.scan(data, 0, len(data), len(data), 1 << 20, bytearray(engine_mod._MEMO_SIZE))
        del scanner
    gc.collect()
    after = _heap_in_use()
    assert after is not None
    assert (after - before) // rounds < 16 * 1024


_AT_PAGE_END = """
import ctypes, mmap, sys
from masking import MaskingConfig, build_masker
from tests.masking.test_re2scan import CONFIGS, KEY

page = mmap.PAGESIZE
mem = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(mem))
# the page after the data unreadable: a read past its end faults
assert ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + page), page, 0) == 0
scan = build_masker(MaskingConfig.model_validate(CONFIGS[1]), KEY)._scan
for text in (b"abc", b"a 4111 1111 1111 1111", b"EMP-1234"):
    mem[page - len(text) : page] = text
    data = memoryview(mem)[page - len(text) : page]
    n = len(text)
    for limit in (n, n + 1, n + 100):
        print(scan(data, 0, n, limit, 100) == scan(text, 0, n, limit, 100), flush=True)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes")
def test_no_read_past_the_end_of_the_data() -> None:
    """A scan whose limit is past the data's end could meet an empty
    candidate at the very end (the ``\\bX*\\b`` rule after a word byte) and
    look up the byte after the data for its boundary checks: for a bytes
    object that is the NUL after it, for a buffer ending at an unmapped page
    a crash. Same candidates as on bytes, no read past the end."""
    done = subprocess.run(
        [sys.executable, "-c", _AT_PAGE_END], cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True"] * 9
