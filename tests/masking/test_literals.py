"""Injected secrets (``build_masker(..., literals=...)``): masked literally in
every form an echo uses, whatever the masking configuration says."""

from __future__ import annotations

import base64
import json
import random
import re
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masking import MaskingConfig, build_masker
from masking.engine import Masker

KEY = b"k" * 32
TOKEN = "tok/EN+x=9 z"
SHORT = "pw1"
LOWER_HEX = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), quote(TOKEN, safe=""))


def masker(config: MaskingConfig | None = None, accelerate: bool | None = None) -> Masker:
    return build_masker(
        config or MaskingConfig(), KEY, literals=[TOKEN, SHORT], accelerate=accelerate
    )


CONFIGS = {
    "default": MaskingConfig(),
    "off": MaskingConfig(enabled=False),
    # a rule whose matches stop inside the token ("ref-tok/EN" before "+")
    "ref": MaskingConfig.model_validate({"rules": [{"id": "ref", "pattern": "ref-[a-zA-Z/]+"}]}),
    "allowed": MaskingConfig.model_validate(
        {"allow": [TOKEN, SHORT], "replacements": {"default": "hmac", "credential": "hmac"}}
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("accelerate", [None, False])
@pytest.mark.parametrize(
    ("text", "want"),
    [
        (f"X-Key: {TOKEN}\n", b"X-Key: [REDACTED]\n"),
        (f"GET /a?sig={quote(TOKEN, safe='')}&b=1", b"GET /a?sig=[REDACTED]&b=1"),
        (f"GET /a?sig={LOWER_HEX}", b"GET /a?sig=[REDACTED]"),
        (f"url /a?sig={quote(TOKEN)}", b"url /a?sig=[REDACTED]"),
        ('{"k": ' + json.dumps(TOKEN).replace("/", "\\/") + "}", b'{"k": "[REDACTED]"}'),
        (f"pin {SHORT}, again {SHORT}", b"pin [REDACTED], again [REDACTED]"),
    ],
)
def test_every_form_masked_whatever_the_config(
    name: str, accelerate: bool | None, text: str, want: bytes
) -> None:
    m = masker(CONFIGS[name], accelerate=accelerate)
    out, counts = m.mask_bytes(text.encode())
    assert out == want
    assert counts == {"injected_credential": want.count(b"[REDACTED]")}
    assert m.mask_value(text.encode())[0] == want


def test_off_masks_only_the_secrets() -> None:
    m = masker(CONFIGS["off"])
    assert m.active and m.injects
    text = b"alice@example.com password=hunter2 AKIAIOSFODNN7EXAMPLE " + TOKEN.encode()
    assert m.mask_bytes(text)[0] == text[: -len(TOKEN)] + b"[REDACTED]"
    assert m.rule_ids() == ["injected_credential"]


def test_no_literals_no_rule() -> None:
    m = build_masker(MaskingConfig(enabled=False), KEY)
    assert not m.active and not m.injects
    assert m.mask_injected(b"anything") == (b"anything", {})


def test_a_recognizer_stopping_inside_a_secret_does_not_leave_its_tail() -> None:
    """A rule whose match starts before the secret and ends inside it: the
    secret is masked with it in one edit."""
    config = MaskingConfig.model_validate({"rules": [{"id": "ref", "pattern": "ref-[a-z]+"}]})
    m = build_masker(config, KEY, literals=["abcDEF123"])
    out, counts = m.mask_bytes(b"see ref-abcDEF123 now")
    assert out == b"see [REDACTED] now"
    assert counts == {"injected_credential": 1}
    # a secret past the match's value but inside the match, and one after it
    out, _ = m.mask_bytes(b"ref-xyzabcDEF123 abcDEF123")
    assert b"abcDEF123" not in out and b"DEF123" not in out


def test_basic_blob_and_header_only_value() -> None:
    blob = base64.b64encode(b"svc:" + SHORT.encode()).decode()
    m = build_masker(MaskingConfig(enabled=False), KEY, literals=[SHORT, blob])
    out, _ = m.mask_bytes(f"Authorization: Basic {blob}".encode())
    assert out == b"Authorization: Basic [REDACTED]"


def test_mask_injected_alone() -> None:
    m = masker()
    got = m.mask_injected(f"c={TOKEN}; user=alice@example.com".encode())
    assert got == (b"c=[REDACTED]; user=alice@example.com", {"injected_credential": 1})


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", " ", "\n", TOKEN, SHORT, quote(TOKEN, safe=""), "ref-", "x@y.io "]),
        max_size=30,
    ),
    st.integers(1, 40),
    st.sampled_from(sorted(CONFIGS)),
)
def test_stream_equals_whole_buffer(parts: list[str], step: int, name: str) -> None:
    m = masker(CONFIGS[name])
    data = "".join(parts).encode()
    sm = m.stream()
    out = b"".join(sm.feed(data[i : i + step]) for i in range(0, len(data), step)) + sm.flush()
    whole, counts = m.mask_bytes(data)
    assert out == whole
    assert sm.counts == counts
    assert TOKEN.encode() not in out and SHORT.encode() not in out


def test_prefilter_kept_for_mixed_tokens_only() -> None:
    assert build_masker(MaskingConfig(), KEY, literals=["Ab3xYz9Qk"])._prefilter
    # a lower-case word could hide in a value the byte-class pre-filter skips
    m = build_masker(MaskingConfig(), KEY, literals=["bxsecret"])
    assert not m._prefilter
    assert m.mask_value(b"Xbxsecret")[0] == b"X[REDACTED]"


def _decodings(text: bytes) -> list[bytes]:
    """What a client decoding ``text`` as base64 (either alphabet) can read,
    at each of the four character offsets (a blob cut anywhere)."""
    chars = bytes(c for c in text if c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")
    std = chars.replace(b"-", b"+").replace(b"_", b"/")
    out = []
    for off in range(4):
        part = std[off:]
        out.append(base64.b64decode(part[: len(part) - len(part) % 4]))
    return out


@pytest.mark.parametrize("accelerate", [None, False])
@pytest.mark.parametrize("name", ["default", "off"])
@pytest.mark.parametrize("urlsafe", [False, True])
@pytest.mark.parametrize("before", [0, 1, 2, 3, 7])
def test_a_secret_inside_a_base64_blob_is_masked_at_every_alignment(
    accelerate: bool | None, name: str, urlsafe: bool, before: int
) -> None:
    """An upstream that returns the request's credential base64-encoded inside
    a larger blob (a Secret's data, a JSON field, a JWT claim): whatever bytes
    come before and after it, no decoding of the output holds it."""
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    plain = b"x" * before + b"token: " + TOKEN.encode() + b"\nuser: alice\n"
    blob = encode(plain)
    assert any(TOKEN.encode() in d for d in _decodings(blob))  # readable unmasked
    m = masker(CONFIGS[name], accelerate=accelerate)
    out, counts = m.mask_bytes(b'{"data": {"config": "' + blob + b'"}}')
    assert b"[REDACTED]" in out and counts.get("injected_credential") == 1, out
    assert not any(TOKEN.encode() in d for d in _decodings(out)), out


def test_base64_of_short_secrets_and_unrelated_base64_is_left_alone() -> None:
    """Only secrets of 12 bytes or more: the base64 of a short password is a
    few characters common in any blob. Random base64 is not over-masked."""
    m = masker(CONFIGS["off"])
    short = base64.b64encode(b"ab" + SHORT.encode() + b"cd")
    assert m.mask_bytes(short) == (short, {})
    noise = base64.b64encode(bytes(random.Random(7).getrandbits(8) for _ in range(300_000)))
    assert m.mask_bytes(noise) == (noise, {})


# -- bytes relayed as they are (InjectedScrubber) -----------------------------------


def _scrubbed(m: Masker, chunks: list[bytes]) -> bytes:
    from masking.stream import InjectedScrubber

    scrub = InjectedScrubber(m)
    return b"".join(scrub.feed(c) for c in chunks) + scrub.feed(b"", final=True)


def _forms() -> list[bytes]:
    return [TOKEN.encode(), SHORT.encode(), quote(TOKEN, safe="").encode(), LOWER_HEX.encode(),
            base64.b64encode(TOKEN.encode())]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"\x00\xff", b"pw", b"1", b"tok/EN", b"+x=9 z", *_forms()]), max_size=12),
    st.lists(st.integers(0, 200), max_size=6),
)
def test_scrubber_blanks_every_form_at_any_split_keeping_the_length(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    m = masker()
    whole = _scrubbed(m, [data])
    pieces, prev = [], 0
    for c in sorted(set(cuts)):
        pieces.append(data[prev:c])
        prev = max(prev, c)
    pieces.append(data[prev:])
    assert _scrubbed(m, pieces) == whole  # split anywhere: the same bytes
    assert len(whole) == len(data)
    for form in _forms():
        assert form not in whole
    # only matches changed: what is left is the input where it is not '*'
    assert all(a == b for a, b in zip(whole, data, strict=True) if a != ord("*"))
