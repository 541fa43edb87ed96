"""Multipart responses: a batch API's answer is ``multipart/mixed`` with an
HTTP response and its JSON in each part. ``multipart/*`` was binary to the
masker, so under ``unmaskable: pass`` (the default) every part reached the
client unmasked. Now the multipart types are text (stream-masked), except
``multipart/byteranges``: ranges of a file, which masking never produces
(``Range`` is dropped from masked requests) and which may be binary."""

from __future__ import annotations

import pytest

from tests.http.conftest import Env
from tests.http.test_proxy import curl


@pytest.mark.parametrize("subtype", ["mixed", "related", "alternative", "form-data"])
def test_a_multipart_answer_is_masked(env: Env, subtype: str) -> None:
    out = curl("-i", env.url("api", f"/batch?type={subtype}"))
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), out.stdout
    assert b"--b0undary--" in body and b'"id": 2' in body  # the parts still frame
    assert b"alice@example.com" not in body and b"4111 1111 1111 1111" not in body, body


def test_byteranges_stay_binary() -> None:
    from protocols.http.bodies import body_kind

    assert body_kind("multipart/byteranges") == "binary"
    assert body_kind("multipart/mixed") == "text"
