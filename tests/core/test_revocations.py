"""RevocationWatcher: fail closed until the store's revocations are read,
keep the last known ones when a later read fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hoopd.approvals import PostgresStore, SQLiteStore
from hoopd.identity.errors import AuthError
from hoopd.identity.tokens import GatewayTokens, TokenRevocation
from hoopd.revocations import RevocationWatcher
from tests.helpers import free_port


def reason(tokens: GatewayTokens, token: str) -> str:
    try:
        tokens.verify(token)
    except AuthError as exc:
        return exc.reason
    return "ok"


async def test_unreadable_store_refuses_gateway_tokens_until_read(tmp_path: Path) -> None:
    tokens = GatewayTokens(Ed25519PrivateKey.generate())
    token = tokens.issue("alice", [], 600)
    down = PostgresStore(f"postgresql://x:y@127.0.0.1:{free_port()}/none", connect_timeout=1.0)
    gateway = SimpleNamespace(approvals=down, tokens=tokens, sessions={})
    watcher = RevocationWatcher(gateway, poll_seconds=0.05)  # type: ignore[arg-type]
    await watcher.start()
    try:
        assert reason(tokens, token) == "unavailable"
        up = SQLiteStore(tmp_path / "state.sqlite3")
        leaked = tokens.issue("bob", [], 600)
        await up.revoke_token(TokenRevocation("subject", "bob", time.time(), time.time() + 600,
                                              issued_up_to=time.time()))
        gateway.approvals = up
        for _ in range(100):
            if watcher.loaded:
                break
            await asyncio.sleep(0.02)
        assert reason(tokens, token) == "ok" and reason(tokens, leaked) == "revoked"
        await up.close()  # a later failing read keeps what is known
        await asyncio.sleep(0.15)
        assert reason(tokens, token) == "ok" and reason(tokens, leaked) == "revoked"
    finally:
        await watcher.stop()
        await down.close()
