"""Literal rules: secret values the gateway itself injects upstream.

A connection's upstream credential (a bearer token, a basic-auth password, an
API key header, a signed query parameter...) is added by the gateway and never
seen by the client. An upstream that echoes a request back (an httpbin-like
``/anything``, an error page quoting the URL, a header mirrored into the
response) would hand it to the client; the recognizers find it only when its
shape happens to match one (``Bearer ...``). Every such value is therefore a
literal rule of the connection's masker (``INJECTED_ID``), on whatever the
masking configuration says, in the forms an echo plausibly takes: as sent,
percent-encoded (either hex case), JSON-escaped and HTML-escaped, and each of
those inside base64 (``base64_cores``), the base64 encoded the same ways.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

INJECTED_ID = "injected_credential"
INJECTED_LABEL = "REDACTED"
"""The placeholder is ``[REDACTED]``, as credential headers are recorded."""

_PCT = re.compile(r"%[0-9A-Fa-f]{2}")
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


BASE64_MIN = 12
"""Shortest secret (bytes) whose base64 cores are masked: its shortest core is
15 characters of the secret's own bits, which no unrelated base64 matches."""


def base64_cores(secret: str) -> list[str]:
    """The base64 characters that encode ``secret`` wherever it sits in a
    larger base64 blob (an upstream returning a Kubernetes Secret, a JSON
    field or a JWT claim that holds the request's credential).

    Base64 turns each 3 bytes into 4 characters, so the secret starts at one of
    three alignments. For each, the characters that mix in a neighbour's bits
    are dropped -- the first two (one neighbour byte before) or three (two
    before), and the last one or none after the secret's final byte -- and
    what stays depends on the secret alone. Standard and URL-safe alphabets;
    no padding (it only ends a blob). Empty under ``BASE64_MIN`` bytes."""
    raw = secret.encode("utf-8", "surrogatepass")
    if len(raw) < BASE64_MIN:
        return []
    cores = []
    for shift, start in ((0, 0), (1, 2), (2, 3)):
        total = shift + len(raw)
        # whole groups, then the characters of a last partial group whose six
        # bits all come from the secret (one for one byte left, two for two)
        end = 4 * (total // 3) + total % 3
        core = base64.b64encode(b"\0" * shift + raw)[start:end].decode("ascii")
        cores.append(core)
        cores.append(core.replace("+", "-").replace("/", "_"))
    return list(dict.fromkeys(cores))


def literal_forms(secrets: Iterable[str]) -> list[str]:
    """Every form of every secret to mask, longest first (at one position the
    longest form is the one taken: a form can be a prefix of another).

    Forms with a line break are left out: no single-line rule matches across
    one (a value with a line break cannot be sent in a header either)."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        texts = set(_encodings(secret))
        # base64 of any of those (a return URL kept in a base64 "state"
        # parameter holds the percent-encoded secret), and each base64 core
        # echoed as text is: percent-encoded in a URL, escaped in JSON...
        cores = {core for text in texts for core in base64_cores(text)}
        forms.update(texts)
        for core in cores:
            forms.update(_encodings(core))
    return sorted(
        (f for f in forms if f and "\n" not in f and "\r" not in f), key=lambda f: (-len(f), f)
    )


def _encodings(text: str) -> tuple[str, ...]:
    """``text`` as sent, percent-encoded, JSON- and HTML-escaped."""
    return (
        text,
        quote(text, safe=""),
        quote(text),  # urllib's default keeps "/"
        quote_plus(text, safe=""),
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        json.dumps(text)[1:-1].replace("/", "\\/"),  # PHP's json_encode
        html.escape(text),
    )


def _escape(text: str) -> str:
    """An RE2 (and Python ``re``) pattern matching ``text`` literally."""
    out = []
    for ch in text:
        if ch in _PLAIN or ord(ch) > 127:
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}")
    return "".join(out)


def form_pattern(form: str) -> str:
    """The pattern of one form; percent escapes match in either hex case
    (``%2f`` and ``%2F``: encoders differ)."""
    out = []
    pos = 0
    for m in _PCT.finditer(form):
        out.append(_escape(form[pos : m.start()]))
        out.append("\\x25(?i:" + m.group()[1:] + ")")
        pos = m.end()
    out.append(_escape(form[pos:]))
    return "".join(out)


def literal_pattern(forms: Iterable[str]) -> str:
    """One alternation of every form (empty when there is none)."""
    return "|".join(form_pattern(f) for f in forms)


def max_form_bytes(forms: Iterable[str]) -> int:
    return max((len(f.encode("utf-8", "surrogatepass")) for f in forms), default=0)


_DIGITS = frozenset("0123456789")
_LOWER_CLASS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789 -")
_LETTERS_SPACE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ")


def prefilter_safe(forms: Iterable[str]) -> bool:
    """True when no value that the engine's byte-class pre-filter
    (``engine._cannot_match``) lets through can contain any of ``forms``.

    That pre-filter passes only values made of digits, of ``[a-z0-9 -]`` or of
    ``[A-Za-z ]``; a value containing a form contains its characters, so a
    form with a character outside each of those three classes can never be
    inside a value it passes (a typical token mixes cases and digits)."""
    for form in forms:
        chars = set(form)
        if chars <= _DIGITS or chars <= _LOWER_CLASS or chars <= _LETTERS_SPACE:
            return False
    return True
