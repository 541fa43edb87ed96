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
