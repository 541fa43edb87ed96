"""How a found value is replaced.

* ``placeholder``: a fixed text per type, ``[EMAIL]`` by default.
* ``partial``: format-keeping; every letter and digit becomes ``*`` except the
  first ``keep_first`` and last ``keep_last`` of them, separators are kept:
  ``4111-1111-1111-1234`` -> ``****-****-****-1234``.
* ``hmac``: a deterministic keyed token ``[EMAIL:1f3a…]`` (HMAC-SHA256 of the
  value under the gateway key, truncated), so equal values can be correlated
  without being seen. The token does not depend on the rule, so the same value
  found by two rules (a column rule and the email recognizer) correlates.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Kind = Literal["placeholder", "partial", "hmac"]

_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

# Anything the replacer can produce by default, so that masking twice is a no-op.
MASK_TOKEN = re.compile(rb"\[[A-Z0-9_]+(?::[0-9a-f]{8,64})?\]")


@dataclass(frozen=True)
class ReplacementSpec:
    kind: Kind = "placeholder"
    placeholder: str | None = None
    keep_first: int | None = None
    keep_last: int | None = None
    mask_char: str = "*"
    hmac_chars: int = 16


def _partial(value: bytes, keep_first: int, keep_last: int, mask: str) -> bytes:
    text = value.decode("utf-8", "surrogateescape")
    idx = [i for i, ch in enumerate(text) if ch.isalnum()]
    keep = set(idx[:keep_first]) | (set(idx[len(idx) - keep_last :]) if keep_last else set())
    # Never reveal the whole value: a short value is masked completely.
    if len(keep) * 2 > len(idx):
        keep = set()
    out = "".join(ch if (i in keep or not ch.isalnum()) else mask for i, ch in enumerate(text))
    return out.encode("utf-8", "surrogateescape")


def constant_replacement(spec: ReplacementSpec, label: str) -> bytes | None:
    """The replacement text when it does not depend on the value (placeholders), else None."""
    if spec.kind == "placeholder":
        return (spec.placeholder if spec.placeholder is not None else f"[{label}]").encode()
    return None


def make_replacer(
    spec: ReplacementSpec,
    label: str,
    hmac_key: bytes,
    default_keep_first: int = 0,
    default_keep_last: int = 0,
) -> Callable[[bytes], bytes]:
    text = constant_replacement(spec, label)
    if text is not None:
        return lambda _value: text
    if spec.kind == "partial":
        kf = spec.keep_first if spec.keep_first is not None else default_keep_first
        kl = spec.keep_last if spec.keep_last is not None else default_keep_last
        mask = spec.mask_char
        return lambda value: _partial(value, kf, kl, mask)
    prefix = f"[{label}:".encode()
    n = spec.hmac_chars
    key = hmac_key

    def _hmac(value: bytes) -> bytes:
        digest = hmac.new(key, value, hashlib.sha256).hexdigest()[:n].encode()
        return prefix + digest + b"]"

    return _hmac


def looks_masked(value: bytes, mask_char: bytes = b"*") -> bool:
    """True for our own outputs (``[EMAIL]``, ``[EMAIL:ab12…]``, ``****``), also when
    something follows the token (``[SECRET](a``, a masked PEM inside a JSON string
    ``[PRIVATE_KEY]\\n``): a value that starts with a mask token was masked already.
    This is what makes masking idempotent for key-value rules, whose value
    patterns would otherwise take the token and what follows as a new value."""
    if value[:1] == b"[" and MASK_TOKEN.match(value) is not None:
        return True
    return mask_char in value and not any(c in _ALNUM for c in value)
