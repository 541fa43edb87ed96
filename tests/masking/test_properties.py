"""Hypothesis properties: planted secrets never survive, masking is idempotent."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masking import Masker

from .conftest import make
from .samples import PLANTS

FULL: Masker = make({"recognizers": {"personal": True}})
FULL_HMAC: Masker = make({"recognizers": {"personal": True}, "replacements": {"default": "hmac"}})
PARTIAL: Masker = make({"recognizers": {"personal": True}, "replacements": {"personal": "partial"}})

SEP = st.sampled_from([" ", "\n", "\t", ", ", "; ", " | ", "\r\n", "(", ")", "<", ">", '"', "'"])
WORDS = st.text(alphabet=st.sampled_from(list("abcdefghij XYZ.,:;-_/()é€\n")), max_size=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plant=st.sampled_from(PLANTS), before=WORDS, after=WORDS, sep1=SEP, sep2=SEP)
def test_planted_secret_never_survives(
    plant: tuple[str, str, str], before: str, after: str, sep1: str, sep2: str
) -> None:
    rid, text, secret = plant
    doc = before + sep1 + text + sep2 + after
    for m in (FULL, FULL_HMAC):
        out, counts = m.mask_text(doc)
        assert secret not in out, (rid, doc, out)
        assert counts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plants=st.lists(st.sampled_from(PLANTS), min_size=1, max_size=4),
    filler=st.lists(WORDS, min_size=5, max_size=5),
    sep=SEP,
)
def test_idempotent(plants: list[tuple[str, str, str]], filler: list[str], sep: str) -> None:
    doc = filler[0]
    for i, (_, text, _) in enumerate(plants):
        doc += sep + text + sep + filler[i + 1]
    for m in (FULL, FULL_HMAC, PARTIAL):
        once, _ = m.mask_text(doc)
        twice, counts = m.mask_text(once)
        assert twice == once, (doc, once, twice)
        assert counts == {}
