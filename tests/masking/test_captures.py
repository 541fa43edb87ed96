"""The engine takes value groups of ASCII candidates from Python ``re`` instead of
RE2's submatch engines (much cheaper on these programs): both must give the same
match and the same group spans, for any span of any text, in context."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking._regex import HAVE_RE2, compile_cached, python_equivalent, python_fullmatch
from masking.recognizers import BUILTINS

from .samples import NEGATIVES, PLANTS, POSITIVES

VALUE_RULES = [r for r in BUILTINS if "(?P<v" in r.pattern]

PIECES = (
    [t for lst in POSITIVES.values() for t, _ in lst]
    + [t for lst in NEGATIVES.values() for t in lst]
    + [t for _, t, _ in PLANTS]
)
ASCII_PIECES = [p for p in PIECES if p.isascii()]
NOISE = st.text(
    alphabet=st.sampled_from(list("aZ09 \t\x0b\x0c\r:=@/'\"_-.,;&<>#?+%~")), max_size=12
)


@st.composite
def texts(draw: st.DrawFn) -> bytes:
    parts = [draw(st.sampled_from(ASCII_PIECES) | NOISE) for _ in range(draw(st.integers(1, 4)))]
    return "".join(parts).encode()


def test_every_value_rule_has_a_python_equivalent() -> None:
    assert {r.id for r in VALUE_RULES} >= {"secret_key_value", "url_password", "bearer_token"}
    for r in VALUE_RULES:
        assert python_equivalent(r.pattern) is not None, r.id


def test_refused_constructs() -> None:
    assert python_equivalent(r"^abc") is None
    assert python_equivalent(r"\pL+") is None
    assert python_equivalent(r"a\s[^\s]") == "a[\\t\\n\\f\\r ][^\\t\\n\\f\\r ]"
    assert python_equivalent(r"[$^]x") == "[$^]x"


@pytest.mark.skipif(not HAVE_RE2, reason="only meaningful against RE2")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=texts(), cut=st.integers(0, 400), rule=st.sampled_from(VALUE_RULES))
def test_python_captures_equal_re2(data: bytes, cut: int, rule: object) -> None:
    pattern = rule.pattern  # type: ignore[attr-defined]
    rx = compile_cached(pattern, True)
    py = python_fullmatch(pattern)
    assert py is not None
    n = len(data)
    # every RE2 candidate of the rule, and spans that end elsewhere (cut)
    pos = 0
    spans = []
    while pos <= n:
        s = rx.search(data, pos, n)
        if s is None:
            break
        spans.append((s[0][0], s[0][1]))
        spans.append((s[0][0], min(n, s[0][0] + cut % (n - s[0][0] + 1))))
        pos = s[0][0] + 1
    spans.append((cut % (n + 1), n))
    for p, e in spans:
        if p > e:
            continue
        r2 = rx.raw_full(data, p, e)
        m = py(data, p, e)
        if r2[0][0] < 0:
            assert m is None, (data, p, e)
        else:
            assert m is not None and list(m.regs) == [tuple(x) for x in r2], (data, p, e)
