from __future__ import annotations

from masking import Column

from .conftest import make


def test_row_masker_plan() -> None:
    m = make(
        {
            "recognizers": ["email", "card"],
            "rules": [{"id": "pii", "fields": ["users.ssn", "*_phone"], "replace": "hmac"}],
        }
    )
    cols = [
        Column("id", "users", "int8"),
        Column("email", "users", "text"),
        Column("ssn", "users", "text"),
        Column("home_phone", None, "varchar"),
        Column("created", "users", "timestamptz"),
        Column("pan", "users", "int8"),
    ]
    rm = m.rows(cols)
    vals, changed, counts = rm.mask(
        [b"1", b"bob@example.com", b"123-45-6789", None, b"2024-01-01 a@b.io", b"4111111111111111"]
    )
    assert changed
    assert vals[0] == b"1"
    assert vals[1] == b"[EMAIL]"
    assert vals[2] is not None and vals[2].startswith(b"[PII:")
    assert vals[3] is None
    assert vals[4] == b"2024-01-01 a@b.io"  # timestamps are not scanned
    assert vals[5] == b"[CARD]"
    assert counts == {"email": 1, "pii": 1, "card": 1}
    vals2, changed2, counts2 = rm.mask([b"2", b"nobody", b"123-45-6789", None, None, b"7"])
    assert changed2 and counts2 == {"pii": 1}
    assert vals2[2] == vals[2]  # same value, same token
    assert rm.counts == {"email": 1, "pii": 2, "card": 1}


def test_row_masker_unchanged() -> None:
    m = make()
    rm = m.rows([Column("a", None, "text")])
    assert rm.mask([b"hello"]) == ([b"hello"], False, {})


def test_row_masker_inactive() -> None:
    m = make({"recognizers": {"credentials": False}})
    rm = m.rows([Column("a", None, "text")])
    assert not rm.active
    assert rm.mask([b"password=x"]) == ([b"password=x"], False, {})


def test_field_glob_case_insensitive_and_table_qualified() -> None:
    m = make({"rules": [{"id": "f", "fields": ["Customers.*"]}]})
    rm = m.rows([Column("Name", "customers", "text"), Column("name", "orders", "text")])
    vals, _, _ = rm.mask([b"Ann", b"Bob"])
    assert vals == [b"[F]", b"Bob"]


def test_mask_field() -> None:
    m = make()
    rm = m.rows([Column("a"), Column("b")])
    assert rm.mask_field(1, b"token=abc") == (b"token=[SECRET]", {"secret_key_value": 1})


def test_secret_named_columns_replaced_with_credentials_on() -> None:
    rm = make().rows(
        [Column("password_hash", None, "text"), Column("password_name", None, "text"), Column("x")]
    )
    vals, _changed, counts = rm.mask([b"$2b$12$abc", b"not secret", b"plain"])
    assert vals == [b"[SECRET]", b"not secret", b"plain"]
    assert counts == {"secret_key_value": 1}
    rm_off = make({"recognizers": {"disable": ["secret_key_value"]}}).rows([Column("password")])
    assert rm_off.mask([b"x"])[0] == [b"x"]
