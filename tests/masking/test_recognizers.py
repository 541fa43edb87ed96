from __future__ import annotations

import pytest

from masking import BUILTINS, CREDENTIAL_IDS, PERSONAL_IDS
from masking.validators import card, iban, luhn_ok, ssn

from .conftest import make
from .samples import NEGATIVES, POSITIVES


def only(rid: str):  # type: ignore[no-untyped-def]
    return make({"recognizers": {"credentials": False, "enable": [rid]}})


def test_every_builtin_has_cases() -> None:
    ids = {r.id for r in BUILTINS}
    assert ids == set(POSITIVES) == set(NEGATIVES)
    assert ids == CREDENTIAL_IDS | PERSONAL_IDS
    assert len(ids) == len(BUILTINS)


@pytest.mark.parametrize(
    ("rid", "text", "secret"), [(r, t, s) for r, c in POSITIVES.items() for t, s in c]
)
def test_positive(rid: str, text: str, secret: str) -> None:
    out, counts = only(rid).mask_text(text)
    assert secret not in out, out
    assert counts == {rid: 1}


@pytest.mark.parametrize(("rid", "text"), [(r, t) for r, c in NEGATIVES.items() for t in c])
def test_near_miss(rid: str, text: str) -> None:
    out, counts = only(rid).mask_text(text)
    assert counts == {}
    assert out == text


def test_value_group_keeps_context() -> None:
    m = make()
    assert m.mask_text("postgres://app:hunter2@db/x")[0] == "postgres://app:[PASSWORD]@db/x"
    assert m.mask_text("password=hunter2 ok")[0] == "password=[SECRET] ok"
    assert m.mask_text('"client_secret": "abc"')[0] == '"client_secret": "[SECRET]"'
    assert (
        m.mask_text("Authorization: Bearer abcdefghijklmnop1234")[0]
        == "Authorization: Bearer [CREDENTIALS]"
    )


def test_pem_without_end_masks_body() -> None:
    text = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAbCd\n"
    out, counts = make().mask_text(text)
    assert "MIIE" not in out and "AbCd" not in out
    assert counts == {"pem_private_key": 1}


def test_validators() -> None:
    assert luhn_ok(b"4111111111111111") and not luhn_ok(b"4111111111111112")
    assert luhn_ok(b"79927398713")
    assert card(b"4111 1111 1111 1111 2024") == len(b"4111 1111 1111 1111")
    assert card(b"1234 200 123-45-6789") == 0
    assert ssn(b"123-45-6789") == 11 and ssn(b"666-45-6789") == 0
    assert iban(b"DE89 3704 0044 0532 0130 00") > 0
    assert iban(b"DE89 3704 0044 0532 0130 00 AB12") == len(b"DE89 3704 0044 0532 0130 00")


def test_ssn_inside_failed_card_run_is_found(full) -> None:  # type: ignore[no-untyped-def]
    out, counts = full.mask_text("1234 200 123-45-6789")
    assert out == "1234 200 [SSN]"
    assert counts == {"ssn": 1}


def test_card_followed_by_expiry_group(full) -> None:  # type: ignore[no-untyped-def]
    out, _ = full.mask_text("card 4111 1111 1111 1111 2024")
    assert out == "card [CARD] 2024"
