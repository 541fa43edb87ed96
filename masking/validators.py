"""Validators that confirm (or trim) a candidate found by a recognizer's regex.

A validator receives the matched bytes and returns the length of the accepted
prefix: ``len(value)`` to accept the whole candidate, a smaller positive number
to accept only a prefix (used when a greedy pattern ran into an adjacent group
of digits), or ``0`` to reject it. A rejected candidate is re-scanned by the
engine, so a shorter value inside it can still be found.

Only the validators in ``TRIMMING`` ever return a smaller positive number; the
engine checks the byte after a candidate before running any other validator.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Callable

Validator = Callable[[bytes], int]

_SEPARATORS = b" -"


# every second digit from the right is doubled (digit sum of 2d): as ASCII digits
_LUHN_DOUBLE = bytes.maketrans(b"0123456789", b"0246813579")


def luhn_ok(digits: bytes) -> bool:
    """Luhn check of ASCII digits."""
    rev = digits[::-1]
    total = sum(rev[0::2]) + sum(rev[1::2].translate(_LUHN_DOUBLE)) - 48 * len(rev)
    return total % 10 == 0


def _card_digits_ok(value: bytes) -> bool:
    digits = value.translate(None, b" -")
    if not 13 <= len(digits) <= 19 or digits[0] not in b"23456":
        return False
    if 32 in value and 45 in value:  # mixed separators: "1234 200 123-45-6789" is not a card
        return False
    rev = digits[::-1]
    total = sum(rev[0::2]) + sum(rev[1::2].translate(_LUHN_DOUBLE)) - 48 * len(rev)
    return total % 10 == 0


def card(value: bytes) -> int:
    """Payment card: 13-19 digits, optional uniform spaces or dashes, IIN 2-6, Luhn.

    A candidate that fails whole is trimmed back to a separator (the greedy
    pattern may have swallowed a following group such as an expiry year)."""
    if _card_digits_ok(value):
        return len(value)
    for i in range(len(value) - 1, 12, -1):
        if value[i] in _SEPARATORS and _card_digits_ok(value[:i]):
            return i
    return 0


def ssn(value: bytes) -> int:
    digits = value.translate(None, b" -")
    if len(digits) != 9:
        return 0
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in (b"000", b"666") or area[0] == 57:  # 9xx is never issued
        return 0
    if group == b"00" or serial == b"0000":
        return 0
    if value[3:4] != value[6:7]:  # "123-45 6789": inconsistent separators
        return 0
    return len(value)


def _iban_ok(compact: bytes) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    num = "".join(str(int(chr(c), 36)) for c in rearranged)
    return int(num) % 97 == 1


def iban(value: bytes) -> int:
    """IBAN with ISO 13616 mod-97 check; trimmed back to a space if needed."""
    if _iban_ok(value.replace(b" ", b"")):
        return len(value)
    for i in range(len(value) - 1, 14, -1):
        if value[i] == 32 and _iban_ok(value[:i].replace(b" ", b"")):
            return i
    return 0


def phone(value: bytes) -> int:
    digits = value.translate(None, b" .-+()")
    if value.startswith(b"+"):
        if not 8 <= len(digits) <= 15:
            return 0
        if digits[0] == 49 and len(digits) != 11:  # +1 must be NANP: 1 + 10 digits
            return 0
        if digits[0] != 49 or len(digits) != 11:
            return len(value)
        nanp = digits[1:]
    else:
        if len(digits) == 11 and digits[0] == 49:
            nanp = digits[1:]
        elif len(digits) == 10:
            nanp = digits
        else:
            return 0
    # NANP: NXX-NXX-XXXX, N = 2..9
    if nanp[0] < 50 or nanp[3] < 50:
        return 0
    return len(value)


def ipv4(value: bytes) -> int:
    parts = value.split(b".")
    if len(parts) != 4:
        return 0
    for p in parts:
        k = len(p)
        if k != 1 and (k == 0 or k > 3 or p[0] == 48 or (k == 3 and int(p) > 255)):
            return 0
    return len(value)


def ipv6(value: bytes) -> int:
    try:
        ipaddress.IPv6Address(value.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return 0
    hexdigits = sum(1 for c in value if c != 58 and c != 46)
    if hexdigits < 4:  # "a::b", "::1" -- too weak to be worth masking
        return 0
    return len(value)


def _b64url_json(part: bytes) -> object:
    pad = b"=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(part + pad))


def jwt(value: bytes) -> int:
    parts = value.split(b".")
    if len(parts) < 3:
        return 0
    try:
        header = _b64url_json(parts[0])
    except (ValueError, binascii.Error):
        return 0
    if not isinstance(header, dict) or not ("alg" in header or "typ" in header or "enc" in header):
        return 0
    return len(value)


def basic_credentials(value: bytes) -> int:
    """``Basic <base64(user:password)>``: the decoded value must hold a colon."""
    token = value.split()[-1] if value.split() else b""
    try:
        decoded = base64.b64decode(token + b"=" * (-len(token) % 4), validate=True)
    except (ValueError, binascii.Error):
        return 0
    if b":" not in decoded:
        return 0
    return len(value)


def bearer(value: bytes) -> int:
    token = value.split()[-1] if value.split() else b""
    if len(token) < 16:
        return 0
    if token.isalpha():  # prose: "bearer documentation..." never has digits or symbols
        return 0
    return len(value)


_NOT_SECRET_KEY_SUFFIXES = (
    b"name",
    b"names",
    b"ref",
    b"keyref",
    b"type",
    b"types",
    b"file",
    b"path",
    b"seconds",
    b"length",
    b"policy",
    b"url",
    b"endpoint",
    b"expiration",
    b"expires",
    b"expiry",
    b"count",
)


def key_value(value: bytes) -> int:
    """Generic ``password=…`` / ``secret: …``: skip keys that only name a secret."""
    i = value.find(b"=")
    j = value.find(b":")
    if j >= 0 and (i < 0 or j < i):
        i = j
    key = value[:i] if i > 0 else value
    key = key.lower().translate(None, b"-_.\"' \t")
    if key.endswith(_NOT_SECRET_KEY_SUFFIXES):
        return 0
    return len(value)


def email(value: bytes) -> int:
    at = value.rfind(b"@")
    # local part: not empty, no leading/trailing dot; no ".." anywhere
    if at <= 0 or value[0] == 46 or value[at - 1] == 46 or value.find(b"..") >= 0:
        return 0
    # domain: does not start with "-" or "."; no "-." or ".-"
    d = at + 1
    if d < len(value) and value[d] in b"-.":
        return 0
    if value.find(b"-.", d) >= 0 or value.find(b".-", d) >= 0:
        return 0
    return len(value)


TRIMMING: frozenset[Validator] = frozenset({card, iban})
"""Validators that may accept a shorter prefix of a candidate than the whole."""
