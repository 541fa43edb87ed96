"""RE2's DFA memory budget (``max_mem``, 64 MiB per program here) in a
long-lived gateway: when a program's DFA cache cannot hold the states a search
needs, RE2 answers the search with its NFA (slower, the same match), and an
``RE2::Set`` answers "no pattern" (``Set::Match`` returns false, with no error
through google-re2's binding or our scanner). The engine never takes a Set's
silence as final: a candidate of the joined pattern that the Set names no rule
for is matched again by each rule's own anchored regex. So an exhausted
budget costs time, never a match."""

from __future__ import annotations

import random

import pytest
import re2

from masking import MaskingConfig, build_masker
from masking._regex import Compiled
from tests.masking.samples import NEGATIVES, POSITIVES

KEY = b"k" * 32
ALL = MaskingConfig.model_validate({"recognizers": {"personal": True}})


def corpus() -> bytes:
    """Varied text (random printable runs, which keep the DFA building new
    states) around every planted value and near miss."""
    rnd = random.Random(11)
    texts = [t for cases in POSITIVES.values() for t, _ in cases]
    texts += [t for cases in NEGATIVES.values() for t in cases]
    out = []
    for text in texts:
        out.append(bytes(rnd.randrange(32, 127) for _ in range(rnd.randrange(200, 2000))))
        out.append(b" " + text.encode() + b"\n")
    return b"".join(out)


def candidates(search: object, data: bytes) -> list[tuple[int, int]]:
    spans = []
    pos = 0
    while pos < len(data):
        p, e = search(data, pos, len(data))[0]  # type: ignore[operator]
        if p < 0:
            break
        spans.append((p, e))
        pos = e if e > p else p + 1
    return spans


def test_a_search_out_of_dfa_memory_finds_the_same_candidates(capfd: pytest.CaptureFixture[str]) -> None:
    masker = build_masker(ALL, KEY, accelerate=False)
    pattern = "|".join(masker._parts).encode()
    data = corpus()
    small = 1 << 20
    # the same budget with RE2's logging on: the DFA does run out of memory here
    opts = re2.Options()
    opts.max_mem = small
    opts.log_errors = True
    opts.never_nl = True
    noisy = re2.compile(pattern, opts)._regexp
    candidates(lambda d, s, e: noisy.Match(re2._Anchor.UNANCHORED, d, s, e), data[:50_000])
    assert "DFA out of memory" in capfd.readouterr().err
    want = candidates(Compiled(pattern, never_nl=True).raw_search, data)
    assert want
    assert candidates(Compiled(pattern, max_mem=small, never_nl=True).raw_search, data) == want


@pytest.mark.parametrize("personal", [False, True])
def test_a_set_that_names_no_rule_loses_no_match(personal: bool) -> None:
    """What ``Set::Match`` answers when its DFA is out of memory (no pattern)
    for every candidate: the output is still byte for byte the normal one."""
    config = ALL if personal else MaskingConfig()
    normal = build_masker(config, KEY, accelerate=False, literals=["Hdr/Key+v=1 &z"])
    starved = build_masker(config, KEY, accelerate=False, literals=["Hdr/Key+v=1 &z"])
    starved._idset = _OutOfMemorySet()
    data = corpus() + b" key Hdr/Key+v=1 &z\n"
    want = normal.mask_bytes(data)
    assert want[1]
    assert starved.mask_bytes(data) == want


class _OutOfMemorySet:
    """RE2::Set::Match after "DFA out of memory": false, no hits."""

    def Match(self, _text: bytes) -> list[int]:
        return []
