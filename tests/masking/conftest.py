from __future__ import annotations

from typing import Any

import pytest

from masking import Masker, MaskingConfig, build_masker

KEY = b"test-gateway-hmac-key-0123456789"


def make(cfg: dict[str, Any] | None = None) -> Masker:
    return build_masker(MaskingConfig.model_validate(cfg or {}), KEY)


@pytest.fixture(scope="session")
def full() -> Masker:
    """Every built-in recognizer on."""
    return make({"recognizers": {"personal": True}})


def masked_at_each_gap(m: Masker, data: bytes) -> list[tuple[bytes, dict[str, int]]]:
    """``m.mask_bytes(data)`` twice: the gap after a rejected candidate
    searched once (``engine._FIRST_BEFORE_MAX`` 0), and by anchored matches
    (``first_before``, the default bound)."""
    import masking.engine as engine_mod

    saved = engine_mod._FIRST_BEFORE_MAX
    out = []
    for gap in (0, saved):
        engine_mod._FIRST_BEFORE_MAX = gap
        try:
            out.append(m.mask_bytes(data))
        finally:
            engine_mod._FIRST_BEFORE_MAX = saved
    return out


def unchecked(m: Masker) -> Any:
    """``m``'s C++ scanner without the rules' cheap checks: it returns every
    candidate of the joined pattern, even those the loop would only reject."""
    import masking.engine as engine_mod

    assert m._main is not None
    return engine_mod._make_scanner(m._main.pattern, m._parts, m.window, *m._plan)
