from __future__ import annotations

import pytest
from pydantic import ValidationError

from masking import MaskingConfig, build_masker
from masking.engine import PEM_ID

from .conftest import KEY, make


def test_defaults_credentials_on_personal_off() -> None:
    m = make()
    assert m.mask_text("password=hunter2")[1] == {"secret_key_value": 1}
    assert m.mask_text("mail john@example.com")[1] == {}
    assert m.active


def test_personal_switch_and_disable() -> None:
    m = make({"recognizers": {"personal": True, "disable": ["ipv4"]}})
    assert m.mask_text("john@example.com 10.0.0.1")[0] == "[EMAIL] 10.0.0.1"


def test_list_shorthand_enables() -> None:
    m = make({"recognizers": ["email"]})
    assert m.mask_text("john@example.com AKIAIOSFODNN7EXAMPLE")[1] == {
        "email": 1,
        "aws_access_key_id": 1,
    }


def test_credentials_can_be_turned_off() -> None:
    m = make({"recognizers": {"credentials": False}})
    assert not m.active
    assert m.mask_text("password=hunter2") == ("password=hunter2", {})
    m = make({"recognizers": {"disable": ["secret_key_value"]}})
    assert m.mask_text("password=hunter2")[1] == {}


def test_disabled_config() -> None:
    m = make({"enabled": False})
    assert not m.active
    assert m.mask_bytes(b"password=x") == (b"password=x", {})


def test_custom_regex_rule_and_value_group() -> None:
    m = make(
        {
            "rules": [
                {"id": "employee", "pattern": "EMP-[0-9]{6}"},
                {"id": "ticket", "pattern": "ticket #(?P<value>[0-9]+)", "label": "TICKET"},
                {"id": "ci", "pattern": "project-x", "ignore_case": True},
            ]
        }
    )
    out, counts = m.mask_text("EMP-123456 ticket #42 PROJECT-X")
    assert out == "[EMPLOYEE] ticket #[TICKET] [CI]"
    assert counts == {"employee": 1, "ticket": 1, "ci": 1}


def test_invalid_regex_points_at_rule_field() -> None:
    with pytest.raises(ValidationError) as exc:
        MaskingConfig.model_validate(
            {"rules": [{"id": "ok", "pattern": "a"}, {"id": "bad", "pattern": "a(b"}]}
        )
    err = exc.value.errors()[0]
    assert err["loc"] == ("rules", 1, "pattern")
    assert "invalid RE2 pattern" in err["msg"] and "missing )" in err["msg"]


def test_lookaround_is_rejected_as_not_re2() -> None:
    with pytest.raises(ValidationError) as exc:
        MaskingConfig.model_validate({"rules": [{"id": "x", "pattern": "(?<=a)b"}]})
    assert exc.value.errors()[0]["loc"] == ("rules", 0, "pattern")


def test_empty_matching_pattern_rejected() -> None:
    with pytest.raises(ValidationError, match="empty string"):
        MaskingConfig.model_validate({"rules": [{"id": "x", "pattern": "a*"}]})


def test_build_masker_names_rule_on_invalid_regex() -> None:
    cfg = MaskingConfig.model_construct(rules=(MaskingConfig.model_fields["rules"].annotation,))  # type: ignore[arg-type]
    del cfg
    from masking.config import Rule

    bad = Rule.model_construct(
        id="broken", pattern="x(", fields=(), json_paths=(), ignore_case=False, max_length=10
    )
    cfg2 = MaskingConfig.model_construct(rules=(bad,), allow=(), replacements={})
    with pytest.raises(ValueError, match="broken"):
        build_masker(cfg2, KEY)


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="unknown recognizer"):
        MaskingConfig.model_validate({"recognizers": {"enable": ["nope"]}})
    with pytest.raises(ValidationError, match="collides"):
        MaskingConfig.model_validate({"rules": [{"id": "email", "pattern": "x"}]})
    with pytest.raises(ValidationError, match="used twice"):
        MaskingConfig.model_validate(
            {"rules": [{"id": "a", "pattern": "x"}, {"id": "a", "pattern": "y"}]}
        )
    with pytest.raises(ValidationError, match="needs one of"):
        MaskingConfig.model_validate({"rules": [{"id": "a"}]})
    with pytest.raises(ValidationError, match="extra"):
        MaskingConfig.model_validate({"bogus": 1})
    with pytest.raises(ValidationError):
        MaskingConfig.model_validate({"rules": [{"id": "a", "json_paths": ["spec.x"]}]})
    with pytest.raises(ValidationError, match="replacements key"):
        MaskingConfig.model_validate({"replacements": {"nope": "hmac"}})
    with pytest.raises(ValueError, match="hmac_key"):
        build_masker(MaskingConfig(), b"short")


def test_config_is_frozen() -> None:
    cfg = MaskingConfig()
    with pytest.raises(ValidationError):
        cfg.enabled = False  # type: ignore[misc]


def test_allow_list() -> None:
    m = make(
        {
            "recognizers": ["email"],
            "allow": ["noreply@example.com", {"pattern": ".*@example\\.org", "rules": ["email"]}],
        }
    )
    out, counts = m.mask_text("noreply@example.com a@example.org b@example.net")
    assert out == "noreply@example.com a@example.org [EMAIL]"
    assert counts == {"email": 1}


def test_replacements() -> None:
    m = make(
        {
            "recognizers": {"personal": True},
            "replacements": {
                "card": "partial",
                "email": "hmac",
                "ssn": {"kind": "placeholder", "placeholder": "<ssn>"},
            },
        }
    )
    out, _ = m.mask_text("4111-1111-1111-1234 x 4111 1111 1111 1111")
    assert "****-****-****-1234" not in out  # 4111-1111-1111-1234 fails Luhn
    out, _ = m.mask_text("4111-1111-1111-1111")
    assert out == "****-****-****-1111"
    a, _ = m.mask_text("john@example.com")
    b, _ = m.mask_text("to: john@example.com")
    c, _ = m.mask_text("jane@example.com")
    assert a.startswith("[EMAIL:") and b == "to: " + a and c != a
    assert m.mask_text("123-45-6789")[0] == "<ssn>"


def test_hmac_depends_on_key() -> None:
    cfg = MaskingConfig.model_validate(
        {"recognizers": ["email"], "replacements": {"email": "hmac"}}
    )
    a = build_masker(cfg, KEY).mask_text("john@example.com")[0]
    b = build_masker(cfg, b"another-key-another-key-0000").mask_text("john@example.com")[0]
    assert a != b


def test_partial_never_reveals_short_values() -> None:
    m = make({"replacements": {"credential": "partial"}})
    assert m.mask_text("password=abc")[0] == "password=***"


def test_counts_by_rule() -> None:
    m = make({"recognizers": {"personal": True}})
    _, counts = m.mask_text("a@b.io c@d.io 10.1.1.1 password=x AKIAIOSFODNN7EXAMPLE")
    assert counts == {"email": 2, "ipv4": 1, "secret_key_value": 1, "aws_access_key_id": 1}


def test_mask_text_non_ascii() -> None:
    m = make({"recognizers": ["email"]})
    assert m.mask_text("héllo — josé@example.com ✓")[0] == "héllo — [EMAIL] ✓"


def test_kv_not_crossing_newline_and_pem_priority() -> None:
    m = make()
    out, counts = m.mask_text(
        "private_key: -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\nx"
    )
    assert "AAAA" not in out
    assert counts.get(PEM_ID) == 1


def test_rule_ids() -> None:
    m = make({"rules": [{"id": "f", "fields": ["email"]}]})
    assert "f" in m.rule_ids() and PEM_ID in m.rule_ids()


def test_short_value_prefilter_is_sound() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from .samples import PLANTS

    m = make({"recognizers": {"personal": True}})
    letters = st.text(alphabet=st.sampled_from(list("abcXYZ AKIASBCQza0123456789")), max_size=60)
    # lower-case words, digits, spaces and dashes (the second pre-filter class)
    lower = st.text(alphabet=st.sampled_from(list("abglpatxoeruvsin-  0123456789")), max_size=60)
    tokens = st.sampled_from(
        [
            "AKIAIOSFODNN7EXAMPLEX",
            "Basic dXNlcjpwYXNzd29yZA",
            "basic dxnlcjpwyxnzd29yza",
            "bearer abcdefgh-1234567890",
            "glpat-abcdefghijklmnopqrst",
            "glrt-abcdefghij-klmnopqrst-1",
            "xoxb-1234567890-abcdef",
            "xapp-1-abcdefghij-123",
            "415 555 2671",
            "123 45 6789",
            "123-45-6789",
            "4111 1111 1111 1111",
            "queue-1234",
        ]
    )

    @settings(max_examples=800, deadline=None)
    @given(v=letters | lower | tokens | st.sampled_from([t for _, t, _ in PLANTS]))
    def check(v: str) -> None:
        b = v.encode()
        assert m.mask_value(b) == m.mask_bytes(b)

    check()
    assert m.mask_value(b"AKIAIOSFODNNSEXAMPLE")[1] == {"aws_access_key_id": 1}
    assert m.mask_value(b"4111111111111111")[1] == {"card": 1}
    assert m.mask_value(b"glpat-abcdefghijklmnopqrst")[1] == {"gitlab_token": 1}
    assert m.mask_value(b"123 45 6789")[1] == {"ssn": 1}
    assert m.mask_value(b"queue-1234") == (b"queue-1234", {})


LONG_RUNS_CHECK = """
import time
from masking.config import MaskingConfig
from masking.engine import build_masker
m = build_masker(MaskingConfig.model_validate({"recognizers": {"personal": True}}), b"k" * 32)
for data in (
    b"a" * 50_000 + b"@x.com",
    b"ab" * 25_000 + b"::1",
    b"x" * 50_000 + b"password=1",
    b"password" + b"x" * 50_000 + b"=1",
    b"1" * 50_000,
    b"4111 " * 10_000,
):
    times = []
    for _ in range(3):
        t = time.perf_counter()
        m.mask_bytes(data)
        times.append(time.perf_counter() - t)
    assert min(times) < 2.0, (data[:8], times)
"""


def test_long_runs_stay_linear() -> None:
    """Unbounded prefixes used to re-scan long runs byte by byte, which took
    minutes on 50 KB. Best of three against a bound two orders of magnitude
    above a linear scan. Run in a fresh process: after hundreds of other
    tests in one process the shared compiled patterns run far slower on the
    card-candidate run (a known issue, see docs/masking.md), and this test is
    about the algorithm, not that."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LONG_RUNS_CHECK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


RATIO_CHECK = """
import time
from masking.config import MaskingConfig
from masking.engine import build_masker
m = build_masker(MaskingConfig.model_validate({"recognizers": {"personal": True}}), b"k" * 32)
shapes = {
    "hex run before ::1": lambda n: b"ab" * (n // 2) + b"::1",
    "hex groups with colons": lambda n: b"ab:" * (n // 3),
    "double colons": lambda n: b"a::" * (n // 3),
    "card candidates failing Luhn": lambda n: b"4111 " * (n // 5),
    "digits and dots": lambda n: b"1." * (n // 2),
    "e-mail local part": lambda n: b"a" * n + b"@x.com",
    "key name": lambda n: b"password" + b"x" * n + b"=1",
}
def best(data):
    # CPU time of this process, best of five: other processes on a loaded
    # machine pre-empt it (which wall-clock time would count) but do not add
    # to its CPU time.
    times = []
    for _ in range(5):
        t = time.process_time()
        m.mask_bytes(data)
        times.append(time.process_time() - t)
    return min(times)
for name, shape in shapes.items():
    small, big = best(shape(10_000)), best(shape(40_000))
    assert big < 8 * small + 0.01, (name, small, big)
# matches that run to the end of a megabyte line (key words whose values have
# no stop byte): 8x the input, 8x the time (each used to search to the end of
# the line: 40x); a line of candidates rejected in C++ is searched chunk after
# chunk, not from its start again for each chunk
defaults = build_masker(MaskingConfig.model_validate({}), b"k" * 32)
for m in (m, defaults):
    for unit in (b"xtoken:", b"password=", b"4111 "):
        small = best(unit * (250_000 // len(unit)))
        big = best(unit * (2_000_000 // len(unit)))
        assert big < 24 * small + 0.05, (unit, small, big)
"""


def test_long_runs_scale_linearly() -> None:
    """4x the input must cost about 4x the time, not 16x: compared within one
    run (CPU time, best of five each), so machine load cuts both sides alike (a small
    absolute floor absorbs timer noise on the fast shapes). Hex runs before
    ``::1`` once took 43 ms at 50 KB against 0.2 ms at 12.5 KB in a loaded test
    process; shapes that produce a candidate every few bytes (hex groups with
    colons, card candidates that fail Luhn and are re-scanned rule by rule)
    used to re-search up to 16 KiB of their line per candidate. Fresh process,
    like test_long_runs_stay_linear."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", RATIO_CHECK], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_long_key_names() -> None:
    m = make()
    key = "SPRING_DATASOURCE_HIKARI_DATA_SOURCE_PROPERTIES_PASSWORD"
    assert m.mask_text(f"{key}=hunter2")[0] == f"{key}=[SECRET]"
