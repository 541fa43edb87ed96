"""JSON document masking: the prefilter and the cache give exactly what the
reference walk (``masker.json().mask_document``) gives, bytes and counts."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.http.bodies import JsonDocuments

KEY = b"0123456789abcdef0123456789abcdef"

CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "personal": {"recognizers": {"personal": True}},
    "custom": {
        "recognizers": {"personal": True},
        "rules": [{"id": "employee-id", "pattern": "EMP-[0-9]{6}"}, {"id": "ab", "pattern": "\\bab\\b"}],
    },
    "anchored": {"rules": [{"id": "start", "pattern": "^start"}]},
    "fields": {"rules": [{"id": "f", "fields": ["password", "*_ssn"]}]},
}
MASKERS = {name: build_masker(MaskingConfig.model_validate(cfg), KEY) for name, cfg in CONFIGS.items()}

VALUES = [
    "plain", "", "ab", "x ab y", "alice@example.com", "mail: bob@corp.example.org!",
    "4111 1111 1111 1111", "4111111111111111", "AKIAIOSFODNN7EXAMPLE", 'a"b', "é", "日本",
    "password=hunter2", "token: abcdef123456", "123-45-6789", "x\\u0040y", "EMP-123456",
    "start here", "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
    "postgres://u:pw123456@db/x", "[EMAIL]", "Secret", "+1 415 555 0100", "10.0.0.1",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]
KEYS = ["id", "name", "email", "password", "db_password", "x_ssn", "Token", "kind", "notes", "start", "ab"]
SCALARS = st.one_of(
    st.sampled_from(VALUES),
    st.integers(min_value=-(10**17), max_value=10**17),
    st.sampled_from([4111111111111111, 1.5, True, None, 12345678]),
    st.text(max_size=12),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.sampled_from(VALUES)), inner, max_size=4),
    ),
    max_leaves=12,
)
STYLES = [
    {"separators": (",", ":")},
    {},
    {"indent": 2, "ensure_ascii": False},
    {"ensure_ascii": True},
]


def reference(masker: Any, data: bytes) -> tuple[bytes, dict[str, int]]:
    """``mask_document``; for a body that is not one document but has several
    lines: line by line, each JSON line as a document and each run of other
    lines by content."""
    jm = masker.json()
    try:
        json.loads(data)
        several = False
    except (ValueError, UnicodeDecodeError):
        several = b"\n" in data.strip()
    if not several:
        out, counts = jm.mask_document(data)
        return bytes(out), dict(counts)
    pieces: list[bytes] = []
    total: dict[str, int] = {}
    run = b""
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        end = b"\n" if i < len(lines) - 1 else b""
        try:
            if not line.strip():
                raise ValueError
            json.loads(line)
        except (ValueError, UnicodeDecodeError):
            run += line + end
            continue
        for part, masked in ((run, masker.mask_bytes), (line, jm.mask_document)):
            if part:
                got, c = masked(part)
                pieces.append(bytes(got) + (end if part is line else b""))
                for k, n in c.items():
                    total[k] = total.get(k, 0) + n
        run = b""
    if run:
        got, c = masker.mask_bytes(run)
        pieces.append(bytes(got))
        for k, n in c.items():
            total[k] = total.get(k, 0) + n
    return b"".join(pieces), total


def check(masker: Any, data: bytes) -> None:
    want, want_counts = reference(masker, data)
    docs = JsonDocuments(masker)
    for _ in range(2):  # computed, then from the cache
        got, counts = docs.mask(data)
        assert got == bytes(want)
        assert counts == dict(want_counts)
    if docs.unchanged(data):
        assert want == data and not want_counts


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(MASKERS)), DOCS, st.sampled_from(range(len(STYLES))))
def test_json_fast_path_identical_to_walk(name: str, doc: Any, style: int) -> None:
    data = json.dumps(doc, **STYLES[style]).encode()  # type: ignore[arg-type]
    check(MASKERS[name], data)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(MASKERS)), st.binary(max_size=120))
def test_json_fast_path_garbage_identical(name: str, data: bytes) -> None:
    check(MASKERS[name], data)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(MASKERS)),
    st.lists(DOCS, min_size=2, max_size=4),
    st.sampled_from([b"\n", b"\r\n"]),
    st.booleans(),
)
def test_several_documents_are_masked_line_by_line(
    name: str, docs: list[Any], newline: bytes, trailing: bool
) -> None:
    """NDJSON labelled application/json: each line exactly as its own document."""
    masker = MASKERS[name]
    lines = [json.dumps(d).encode() + newline[:-1] for d in docs]
    data = b"\n".join(lines) + (b"\n" if trailing else b"")
    try:
        json.loads(data)
        return  # e.g. "1\n" alone: one document
    except ValueError:
        pass
    got, counts = JsonDocuments(masker).mask(data)
    want_counts: dict[str, int] = {}
    want = []
    for line in lines:
        masked, c = masker.json().mask_document(line)
        want.append(bytes(masked))
        for k, n in c.items():
            want_counts[k] = want_counts.get(k, 0) + n
    assert got == b"\n".join(want) + (b"\n" if trailing else b"")
    assert counts == want_counts


def test_several_documents_key_rules_and_pem_between_them() -> None:
    masker = MASKERS["fields"]
    pem = b"-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n-----END RSA PRIVATE KEY-----"
    data = b'{"password": "opaque-1", "n": 1}\nnot json\n' + pem + b'\n{"x_ssn": "opaque-2"}\n'
    out, counts = JsonDocuments(masker).mask(data)
    assert b"opaque-1" not in out and b"opaque-2" not in out and b"MIIBOgIBAAJB" not in out, out
    assert counts == {"f": 2, "pem_private_key": 1}, counts
    assert out.startswith(b'{"password":') and b"\nnot json\n" in out


def test_prefilter_taken_and_refused() -> None:
    docs = JsonDocuments(MASKERS["personal"])
    assert docs.unchanged(b'{"id": 1, "name": "widget", "tags": ["a", "b"]}')
    assert not docs.unchanged(b'{"owner": "ops@example.com"}')
    assert not docs.unchanged(b'{"owner": "ops\\u0040example.com"}')  # escapes: walk
    assert not docs.unchanged(b'{"api_key": ""}')  # secret key name: walk
    # key/path rules or anchored patterns: never skipped
    assert not JsonDocuments(MASKERS["fields"]).unchanged(b'{"id": 1}')
    assert not JsonDocuments(MASKERS["anchored"]).unchanged(b'{"id": 1}')
    out, counts = docs.mask(b'{"owner": "ops@example.com", "n": 1}')
    assert b"ops@example.com" not in out and counts


# -- bodies in charsets where ASCII text is not ASCII bytes ------------------------

TEXT = "note for bob@example.com: card 4111 1111 1111 1111, café ☕\n" * 3


@settings(max_examples=60, deadline=None)
@given(
    codec=st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp037"]),
    kind=st.sampled_from(["text", "json"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_foreign_charset_bodies_are_masked_and_sent_in_their_charset(
    codec: str, kind: str, cuts: list[int]
) -> None:
    """A UTF-16 (or UTF-32, EBCDIC) body hides every secret from byte
    patterns; it is masked as UTF-8 and sent back in its own charset, the
    same text as masking the UTF-8 body, however the body is chunked."""
    from protocols.http.bodies import BodyMasker, foreign_charset, plan_response
    from protocols.http.h1 import Headers

    masker = MASKERS["personal"]
    ctype = "text/plain" if kind == "text" else "application/json"
    note = TEXT if codec != "cp037" else TEXT.replace(" ☕", "")  # not in EBCDIC
    text = note if kind == "text" else json.dumps({"note": note, "n": 1}, ensure_ascii=False)
    reference = BodyMasker(plan_response(Headers([("content-type", "Content-Type", ctype)]), masker, "pass"), masker, 1 << 20, "pass")
    expected = (reference.feed(text.encode()) + reference.finish()).decode()
    headers = Headers([("content-type", "Content-Type", f'{ctype}; charset="{codec.upper()}"')])
    plan = plan_response(headers, masker, "pass")
    assert plan.charset == foreign_charset(codec) != ""
    body = BodyMasker(plan, masker, 1 << 20, "pass")
    raw = text.encode(codec)
    out = []
    start = 0
    for cut in sorted(set(cuts)):
        out.append(body.feed(raw[start:cut]))
        start = max(start, cut)
    out.append(body.feed(raw[start:]))
    out.append(body.finish())
    got = b"".join(out).decode(codec)
    assert got == expected
    assert "bob@example.com" not in got and "4111 1111" not in got


def test_ascii_compatible_and_unknown_charsets_are_read_as_bytes() -> None:
    from protocols.http.bodies import foreign_charset

    for name in ("", "utf-8", "UTF8", "iso-8859-1", "windows-1252", "shift_jis", "no-such-charset"):
        assert foreign_charset(name.lower()) == "", name
    for name in ("utf-16", "utf-32-be", "cp500"):
        assert foreign_charset(name) != "", name


def test_corrupt_compressed_request_body_is_recorded_as_a_placeholder() -> None:
    """A client's corrupt gzip or br request body: the recording says so
    (brotli's error once escaped and failed the request)."""
    from protocols.http.bodies import mask_request_body

    masker = next(iter(MASKERS.values()))
    for coding in ("gzip", "br"):
        out, counts = mask_request_body(masker, b"\xff" * 40, "application/json", coding)
        assert out == b"[undecodable compressed body not recorded]" and counts == {}
