from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .issuer import LocalIssuer


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    iss = LocalIssuer()
    await iss.start()
    try:
        yield iss
    finally:
        await iss.stop()
