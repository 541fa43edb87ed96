"""Base64, hex and other alphanumeric-dense text: the C++ scan searches the
rules' scan forms (``recognizers.ScanForm``) and side rules (``SideForm``)
instead of the joined pattern, whose DFA explodes on such text. It must find
exactly the candidates the joined pattern finds, and mask exactly as the
Python loop over the joined pattern (the reference)."""

from __future__ import annotations

import base64
import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import masking.engine as engine_mod
from masking import Masker, MaskingConfig, build_masker
from masking._regex import Compiled, decapture
from masking.recognizers import BUILTINS

from .conftest import KEY, masked_at_each_gap, unchecked
from .samples import NEGATIVES, PLANTS

pytestmark = pytest.mark.skipif(
    not engine_mod.accelerated(), reason="masking._re2scan is not built or HOOPD_PURE_PYTHON is set"
)

CONFIGS: list[dict[str, Any]] = [
    {},
    {"recognizers": {"personal": True}},
    {
        "recognizers": {"personal": True},
        "rules": [{"id": "emp", "pattern": "EMP-[0-9]{4}"}],
        "replacements": {"default": "hmac"},
    },
    # only side rules and scan forms with a lookback
    {"recognizers": {"credentials": False, "enable": ["url_password", "email", "ipv6"]}},
    {"recognizers": {"credentials": False, "enable": ["azure_client_secret"]}},
]


def _pair(cfg: dict[str, Any]) -> tuple[Masker, Masker]:
    config = MaskingConfig.model_validate(cfg)
    return build_masker(config, KEY, accelerate=True), build_masker(config, KEY, accelerate=False)


PAIRS = [_pair(c) for c in CONFIGS] if engine_mod.accelerated() else []

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
VALUES = [
    "password=hunter2",
    "db_password: s3cr3t!",
    'AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    "x.token=abc",
    "pwd=1",
    "PASSWORD 'x y'",
    "john.doe@example.com",
    "é@ü.example.org",
    "a@b.co",
    "@example.com",
    "4111 1111 1111 1111",
    "4111111111111111",
    "GB82 WEST 1234 5698 7654 32",
    "GB82WEST12345698765432",
    "+44 20 7946 0958",
    "(415) 555-2671",
    "123-45-6789",
    "10.1.2.3",
    "2001:db8::8a2e:370:7334",
    "fe80::1ff:fe23:4567:890a",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "postgres://app:pw1@db/app",
    "a+b.c://u:p@h",
    "1://u:p@h",
    "abc8Q~" + "A" * 34,
    "Q~Q8Q~" + "b" * 31,
    "ghp_" + "a" * 36,
    "AKIAIOSFODNN7EXAMPLE",
    "Bearer abcdefghijklmnop1234",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig",
    "EMP-1234",
]
SEPARATORS = ["", "", " ", "\n", "=", ":", ", ", '"', "/", "+", "@", "::", "://", "-", ".", "_"]


def _b64(draw: st.DrawFn) -> str:
    return draw(st.text(alphabet=st.sampled_from(list(B64)), max_size=120))


@st.composite
def dense(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.integers(0, 5))
        if kind <= 1:
            parts.append(_b64(draw))
        elif kind == 2:
            parts.append(
                draw(st.text(alphabet=st.sampled_from(list("0123456789abcdef:")), max_size=80))
            )
        elif kind == 3:
            parts.append(
                draw(
                    st.text(
                        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60
                    )
                )
            )
        else:
            parts.append(draw(st.sampled_from(VALUES + [t for _, t, _ in PLANTS])))
        parts.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(parts).encode()


def _joined_candidates(m: Masker, data: bytes) -> list[tuple[int, int]]:
    """Every candidate of the joined pattern (the reference search), in order."""
    assert m._main is not None
    out = []
    pos, n = 0, len(data)
    while pos < n:
        p, e = m._main.raw_search(data, pos, n)[0]
        if p < 0:
            break
        out.append((p, e))
        pos = e if e > p else p + 1
    return out


def _scanned_candidates(m: Masker, data: bytes) -> list[tuple[int, int]]:
    assert m._scan is not None
    n = len(data)
    return [(p, e) for p, e, _ in unchecked(m).scan(data, 0, n, n, 1 << 30) if p >= 0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dense(), which=st.integers(0, len(CONFIGS) - 1))
# a side rule's match right after a match that ended before it (a cached
# verdict once hid it)
@example(data=b"PASSWORD 'x y'postgres://app:pw1@db/app", which=0)
def test_scan_finds_the_joined_patterns_candidates(data: bytes, which: int) -> None:
    fast, _ = PAIRS[which]
    assert _scanned_candidates(fast, data) == _joined_candidates(fast, data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=dense(), which=st.integers(0, len(CONFIGS) - 1))
# a side rule's match right after a match that ended before it (a cached
# verdict once hid it)
@example(data=b"PASSWORD 'x y'postgres://app:pw1@db/app", which=0)
def test_dense_text_masks_as_the_reference(data: bytes, which: int) -> None:
    fast, pure = PAIRS[which]
    assert fast.mask_bytes(data) == pure.mask_bytes(data)
    assert fast.mask_value(data) == pure.mask_value(data)


@pytest.mark.parametrize("which", range(len(CONFIGS)))
def test_samples_and_base64_blobs(which: int) -> None:
    fast, pure = PAIRS[which]
    rng = random.Random(which)
    texts = [t for _, t, _ in PLANTS] + [t for ts in NEGATIVES.values() for t in ts]
    for _ in range(20):
        blob = base64.b64encode(rng.randbytes(3000)).decode()
        cut = rng.randrange(len(blob))
        texts.append(blob[:cut] + rng.choice(VALUES) + rng.choice(SEPARATORS) + blob[cut:])
    for text in texts:
        data = text.encode()
        assert _scanned_candidates(fast, data) == _joined_candidates(fast, data), text
        assert fast.mask_bytes(data) == pure.mask_bytes(data), text


def test_secrets_inside_base64_are_still_masked() -> None:
    fast, pure = PAIRS[1]
    blob = base64.b64encode(random.Random(5).randbytes(6000))
    data = blob[:4000] + b" password=hunter2 bob@example.com " + blob[4000:]
    out, counts = fast.mask_bytes(data)
    assert b"hunter2" not in out and b"bob@example.com" not in out
    assert counts == {"secret_key_value": 1, "email": 1}
    assert (out, counts) == pure.mask_bytes(data)


# ---- the promises the C++ scan relies on, per built-in (see ScanForm / SideForm)

FORMS = [r for r in BUILTINS if r.scan is not None or r.side is not None]


@st.composite
def around(draw: st.DrawFn) -> bytes:
    """Text dense in the bytes these rules' prefixes are made of."""
    alphabet = [
        *B64,
        *"_.-%~:@\x80é",
        "://",
        "Q~",
        "::",
        "password",
        "Token",
        "pwd",
        "=",
        " ",
    ]
    return "".join(draw(st.lists(st.sampled_from(alphabet + VALUES), max_size=40))).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=around())
def test_scan_and_side_forms_keep_their_promises(data: bytes) -> None:
    n = len(data)
    for rec in FORMS:
        full = Compiled(decapture(rec.pattern).encode(), never_nl=True)
        starts = [p for p in range(n + 1) if full.match(data, p, n) is not None]
        if rec.scan is not None:
            form = Compiled(decapture(rec.scan.pattern).encode(), never_nl=True)
            at = [k for k in range(n + 1) if form.match(data, k, n) is not None]
            # the rule matches wherever its scan form does
            assert set(at) <= set(starts), rec.id
            # every match of the rule starts at most lookback bytes of
            # ``left`` before a match of the scan form
            for p in starts:
                assert any(
                    p <= k <= p + rec.scan.lookback and all(b in rec.scan.left for b in data[p:k])
                    for k in at
                ), (rec.id, p)
        else:
            sd = rec.side
            assert sd is not None
            anchors = [m.start() for m in re.finditer(re.escape(sd.anchor), data)]
            last = -1
            for p in starts:
                spans = full.match(data, p, n)
                assert spans is not None
                e = spans[0][1]
                # an anchor at most maxleft bytes in, with no stop byte after it
                ks = [
                    k
                    for k in anchors
                    if p <= k <= p + sd.maxleft
                    and k + len(sd.anchor) <= e
                    and not any(b in sd.stop for b in data[k + len(sd.anchor) : e])
                    and (sd.tail < 0 or e - k - len(sd.anchor) <= sd.tail)
                ]
                assert ks, (rec.id, p)
                # and a later start has a later anchor
                assert min(ks) >= last, (rec.id, p)
                last = min(ks)


# ---- candidates the loop would only reject (``noop_candidate`` in _re2scan.cpp)

# units that make a failing candidate every few bytes when repeated
UNITS = [
    "a::",
    "ab:",
    "abc1Q~",
    "a@b.c",
    "xtoken:",
    "4111 ",
    "1.",
    "1.2.3.4.",
    "ab://",
    "q1Q~-",
    "x_AKIAIOSFODNN7EXAMPL",
    "eyJx.",
    "+1 ",
    "415-",
    "GB82 ",
    "Bearer ",
    "::",
    ":",
]


@st.composite
def adversarial(draw: st.DrawFn) -> bytes:
    """Runs of the units above, real values spliced in between and inside."""
    parts = []
    for _ in range(draw(st.integers(1, 6))):
        unit = draw(st.sampled_from(UNITS))
        run = unit * draw(st.integers(1, 40))
        cut = draw(st.integers(0, len(run)))
        if draw(st.booleans()):
            run = run[:cut] + draw(st.sampled_from(VALUES)) + run[cut:]
        parts.append(run)
        parts.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(parts).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=adversarial(), which=st.integers(0, len(CONFIGS) - 1))
def test_dense_rejections_mask_as_the_reference(data: bytes, which: int) -> None:
    fast, pure = PAIRS[which]
    expected = pure.mask_bytes(data)
    assert masked_at_each_gap(fast, data) == [expected, expected]
    assert fast.mask_value(data) == pure.mask_value(data)
    # a stream: limits cut the scans short, buffers are masked again
    s = fast.stream()
    out = b"".join(s.feed(data[i : i + 97]) for i in range(0, len(data), 97)) + s.flush()
    assert (out, s.counts) == expected


@pytest.mark.parametrize("which", range(len(CONFIGS)))
@pytest.mark.parametrize("unit", UNITS)
def test_long_runs_of_failing_candidates(which: int, unit: str) -> None:
    """Long enough for the rules found absent from the rest of the text to be
    asked about, with a value at the end that must still be masked."""
    fast, pure = PAIRS[which]
    for value in ("", " password=hunter2 bob@example.com 4111 1111 1111 1111"):
        data = (unit * 300 + value).encode()
        assert fast.mask_bytes(data) == pure.mask_bytes(data), (unit, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=around())
def test_loosened_rules_match_wherever_the_rules_do(data: bytes) -> None:
    """engine.loosen (a rule without its assertions, which the C++ scan asks
    whether a rule is absent from the rest of a buffer) matches wherever the
    rule does, in the text and on a candidate span alone (as the Set sees it)."""
    n = len(data)
    for rec in BUILTINS:
        pat = decapture(rec.pattern)
        full = Compiled(pat.encode(), never_nl=True)
        loose = Compiled(engine_mod.loosen(pat).encode(), never_nl=True)
        for p in range(n):
            spans = full.match(data, p, n)
            if spans is None:
                continue
            e = spans[0][1]
            assert loose.search(data, p, n) is not None, (rec.id, p)
            assert loose.fullmatch(data[p:e], 0, e - p) is not None, (rec.id, p)


def test_loosen_takes_out_assertions_only() -> None:
    assert engine_mod.loosen(r"\bab$|^c\B[\b^$]") == r"(?:)ab(?:)|(?:)c(?:)[\b^$]"
    assert engine_mod.loosen(r"[^\s]+\\b") == r"[^\s]+\\b"
    assert engine_mod.loosen(r"\Q^a\E") == ""  # quoted text is not walked: never asked


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.sampled_from(["0", "1", "2", "3", "4", "5", "7", "9", " ", "-", "4111"]), max_size=120
    ).map(lambda xs: "".join(xs).encode())
)
def test_card_candidates_are_judged_as_python_does(data: bytes) -> None:
    """The C++ scan runs validators.card itself (Luhn, IIN, separators,
    trimming back to a separator) to pass over the cards that fail."""
    for which in (1, 2):
        fast, pure = PAIRS[which]
        assert fast.mask_bytes(data) == pure.mask_bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(
        st.sampled_from(["::", ":", ".", "a", "1", "f", "::1", "fe80", " ", "1.2.3.4", "g", "-"]),
        max_size=80,
    ).map(lambda xs: "".join(xs).encode())
)
def test_ipv6_candidates_are_judged_as_python_does(data: bytes) -> None:
    """The C++ scan refuses IPv6 candidates with fewer than four hex digits
    itself (validators.ipv6 would); digit runs long enough for a card are
    judged in C++ whatever bytes surround them."""
    for which in (1, 2):
        fast, pure = PAIRS[which]
        assert fast.mask_bytes(data) == pure.mask_bytes(data)
        digits = data.translate(bytes.maketrans(b"abfg:.", b"123 45"))
        assert fast.mask_bytes(digits) == pure.mask_bytes(digits)
