from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from masking.jsonmask import SECRET_RULE

from .conftest import make
from .samples import PEM


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {
        "name": "db",
        "namespace": "prod",
        "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "data": {"password": b64("hunter2")},
                    "metadata": {"name": "db"},
                }
            )
        },
    },
    "type": "Opaque",
    "data": {"password": b64("hunter2"), "url": b64("postgres://app:s3cret@db/app")},
    "stringData": {"token": "plain-token-value"},
}


def test_secret_replace_default() -> None:
    jm = make().json()
    out, counts = jm.mask_obj(SECRET)
    assert base64.b64decode(out["data"]["password"]) == b"[SECRET]"
    assert out["stringData"]["token"] == "[SECRET]"
    assert out["metadata"]["name"] == "db"
    assert "hunter2" not in json.dumps(out)
    assert b64("hunter2") not in json.dumps(out)
    assert counts[SECRET_RULE] == 4  # 2 data + 1 stringData + 1 in last-applied


def test_secret_mask_mode_decodes_and_masks_content() -> None:
    jm = make({"kubernetes_secrets": "mask"}).json()
    out, counts = jm.mask_obj(SECRET)
    assert base64.b64decode(out["data"]["url"]) == b"postgres://app:[PASSWORD]@db/app"
    assert out["data"]["password"] == SECRET["data"]["password"]  # type: ignore[index]  # nothing recognizable
    assert counts == {"url_password": 1}


def test_secret_hmac_replacement_is_valid_base64_and_correlates() -> None:
    jm = make({"replacements": {"credential": "hmac"}}).json()
    out, _ = jm.mask_obj(SECRET)
    a = base64.b64decode(out["data"]["password"])
    assert a.startswith(b"[SECRET:")
    out2, _ = jm.mask_obj({"kind": "Secret", "data": {"other": b64("hunter2")}})
    assert base64.b64decode(out2["data"]["other"]) == a


def test_secret_in_list_and_watch_event_and_table() -> None:
    jm = make().json()
    lst = {"kind": "SecretList", "items": [SECRET, SECRET]}
    out, counts = jm.mask_obj(lst)
    assert counts[SECRET_RULE] == 8
    event = {"type": "ADDED", "object": SECRET}
    out, counts = jm.mask_obj(event)
    assert counts[SECRET_RULE] == 4
    table = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": [{"name": "Name"}, {"name": "Env"}],
        "rows": [
            {"cells": ["web", "DB_PASSWORD=hunter2"], "object": {"kind": "PartialObjectMetadata"}}
        ],
    }
    out, counts = jm.mask_obj(table)
    assert out["rows"][0]["cells"] == ["web", "DB_PASSWORD=[SECRET]"]
    assert counts == {"secret_key_value": 1}


def test_secrets_off() -> None:
    jm = make({"kubernetes_secrets": "off"}).json()
    out, counts = jm.mask_obj({"kind": "Secret", "data": {"a": b64("x")}})
    assert out["data"]["a"] == b64("x") and counts == {}


def test_field_and_path_rules() -> None:
    jm = make(
        {
            "recognizers": ["email"],
            "rules": [
                {"id": "ssn-fields", "fields": ["*_ssn", "ssn"], "replace": "hmac"},
                {
                    "id": "paths",
                    "json_paths": [
                        "$.spec.credentials",
                        "$..apiToken",
                        "$.items[*].secret",
                        "$.list[1]",
                    ],
                },
            ],
        }
    ).json()
    doc = {
        "user_ssn": "123-45-6789",
        "spec": {"credentials": {"user": "u", "n": 5}, "other": "x"},
        "deep": {"x": [{"apiToken": "t0k"}]},
        "items": [{"secret": "a", "public": "b"}, {"secret": None}],
        "list": ["keep", "drop"],
        "contact": "mail bob@example.com",
    }
    out, counts = jm.mask_obj(doc)
    assert out["user_ssn"].startswith("[SSN_FIELDS:")
    assert out["spec"]["credentials"] == {"user": "[PATHS]", "n": "[PATHS]"}
    assert out["spec"]["other"] == "x"
    assert out["deep"]["x"][0]["apiToken"] == "[PATHS]"
    assert out["items"][0] == {"secret": "[PATHS]", "public": "b"}
    assert out["items"][1] == {"secret": None}
    assert out["list"] == ["keep", "[PATHS]"]
    assert out["contact"] == "mail [EMAIL]"
    assert counts == {"ssn-fields": 1, "paths": 5, "email": 1}


def test_numbers_are_scanned() -> None:
    jm = make({"recognizers": ["card"]}).json()
    out, counts = jm.mask_obj({"pan": 4111111111111111, "n": 42})
    assert out == {"pan": "[CARD]", "n": 42} and counts == {"card": 1}


def test_mask_document_unchanged_is_byte_identical() -> None:
    jm = make().json()
    raw = b'{ "a" : 1,\n  "b": "x" }'
    assert jm.mask_document(raw) == (raw, {})
    out, counts = jm.mask_document(b'{"password": "hunter2"}')
    assert json.loads(out) == {"password": "[SECRET]"} or json.loads(out) == {"password": "hunter2"}
    assert b"hunter2" not in out and counts


def test_mask_document_non_json_falls_back() -> None:
    jm = make().json()
    assert jm.mask_document(b"not json password=x") == (
        b"not json password=[SECRET]",
        {"secret_key_value": 1},
    )


def test_lines_streaming_any_chunking() -> None:
    jm = make().json()
    events = [
        {"type": "ADDED", "object": SECRET},
        {"type": "MODIFIED", "object": {"kind": "Pod", "spec": {"env": "token=abc"}}},
    ]
    data = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    expected = b"".join(jm.mask_document(json.dumps(e).encode())[0] + b"\n" for e in events)
    for size in (1, 5, 100, len(data)):
        lm = jm.lines()
        out = b"".join(lm.feed(data[i : i + size]) for i in range(0, len(data), size)) + lm.flush()
        assert out == expected
        assert b"hunter2" not in out and b"token=abc" not in out
        assert lm.counts[SECRET_RULE] == 4


def test_lines_overlong_line_falls_back_to_stream() -> None:
    jm = make().json()
    lm = jm.lines(max_line=64)
    out = lm.feed(b'{"x": "' + b"a" * 100 + b" password=hunter2")
    out += lm.feed(b'"}\n{"y": 1}\n') + lm.flush()
    assert b"hunter2" not in out
    assert out.endswith(b'{"y": 1}\n')


def test_secret_named_keys() -> None:
    jm = make().json()
    out, counts = jm.mask_obj(
        {
            "password": "hunter2",
            "apiKey": 12345,
            "secretName": "db",
            "token": {"value": "abc"},
            "ok": True,
        }
    )
    assert out == {
        "password": "[SECRET]",
        "apiKey": "[SECRET]",
        "secretName": "db",
        "token": {"value": "abc"},
        "ok": True,
    }
    assert counts == {"secret_key_value": 2}
    again, c2 = jm.mask_obj(out)
    assert again == out and c2 == {}


def test_json_active_covers_secrets() -> None:
    m = make({"recognizers": {"credentials": False}})
    assert not m.active
    assert m.json().active
    _out, counts = m.json().mask_obj({"kind": "Secret", "data": {"a": b64("x")}})
    assert counts == {SECRET_RULE: 1}
    assert (
        not make({"recognizers": {"credentials": False}, "kubernetes_secrets": "off"}).json().active
    )


def test_lines_pem_printed_over_several_lines_is_masked() -> None:
    """NDJSON with plain-text lines between the documents (log exports): the
    lines of a PEM private key are masked together, not one at a time, which
    would have masked the header alone and let the key's body through."""
    jm = make().json()
    data = b"{\"a\": 1}\n" + PEM.encode() + b"\n{\"b\": \"password=hunter2\"}\n"
    lm = jm.lines()
    out = lm.feed(data) + lm.flush()
    assert b"MIIEpAIBAAKCAQEA1c7" not in out and b"hunter2" not in out
    assert out.startswith(b'{"a": 1}\n[PRIVATE_KEY]') and out.endswith(b'password=[SECRET]"}\n')
    assert lm.counts == {"pem_private_key": 1, "secret_key_value": 1}


_LINE = st.sampled_from(
    [
        b'{"type": "ADDED", "object": {"kind": "Secret", "data": {"k": "aHVudGVyMg=="}}}',
        b'{"env": "token=abc123"}',
        b"[1, 2, 3]",
        b"plain log line with alice@example.com",
        b"",
        b"   ",
        b"{not json password=hunter2",
        *PEM.encode().splitlines(),
    ]
)


@given(
    lines=st.lists(_LINE, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=8),
    final_newline=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_lines_any_chunking_gives_the_whole_buffer_result(
    lines: list[bytes], cuts: list[int], final_newline: bool
) -> None:
    jm = make({"recognizers": {"personal": True}}).json()
    data = b"\n".join(lines) + (b"\n" if final_newline else b"")
    whole = jm.lines()
    expected = whole.feed(data) + whole.flush()
    pieces = [data[a:b] for a, b in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True)]
    lm = jm.lines(max_line=4096)
    got = b"".join(lm.feed(p) for p in pieces) + lm.flush()
    assert got == expected
    assert lm.counts == whole.counts
    for secret in (b"hunter2", b"abc123", b"alice@example.com", b"aHVudGVyMg=="):
        assert secret not in got


def test_documents_nested_too_deep_get_the_content_rules() -> None:
    """Deeper than Python's parser or the walk go: masked as text (content
    rules), not an exception for the caller."""
    jm = make().json()
    for depth in (900, 3000, 100_000):
        data = b"[" * depth + b'"password=hunter2"' + b"]" * depth
        out, counts = jm.mask_document(data)
        assert b"hunter2" not in out and counts == {"secret_key_value": 1}
        assert out.startswith(b"[" * depth)
