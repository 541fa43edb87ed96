"""Format v1 golden files stay readable and verifiable; key handling."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from recorder.compat import UnsupportedVersion, upgrade_body
from recorder.keys import (
    export_public_key,
    key_fingerprint,
    load_or_create_signing_key,
    load_public_key,
)
from recorder.reader import SessionReader
from recorder.verify import Status, verify_session

from .helpers import KEY, sample_session

GOLDEN = Path(__file__).parent / "golden" / "v1"


def test_golden_v1_reads_back_and_verifies() -> None:
    sdir = GOLDEN / "sess-1"
    reader = SessionReader(sdir)
    recs = list(reader.events())
    assert not reader.problems
    assert [r.event for r in recs] == list(sample_session())
    assert [r.seq for r in recs] == list(range(1, len(recs) + 1))
    assert all(h["version"] == 1 for h in reader.headers)
    pub = load_public_key(GOLDEN / "recording-signing-key.pub")
    assert key_fingerprint(pub) == key_fingerprint(KEY.public_key())
    result = verify_session(sdir, pub)
    assert result.status is Status.OK, result.summary()
    assert result.files > 1


def test_compat_rejects_future_versions() -> None:
    assert upgrade_body(1, {"t": "resize", "cols": 1, "rows": 2}) == {
        "t": "resize", "cols": 1, "rows": 2}
    with pytest.raises(UnsupportedVersion):
        upgrade_body(2, {})


def test_signing_key_created_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "key.pem"
    key = load_or_create_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_signing_key(path)
    assert key_fingerprint(again.public_key()) == key_fingerprint(key.public_key())
    pub_path = export_public_key(key, tmp_path / "recs")
    assert pub_path == tmp_path / "recs" / "recording-signing-key.pub"
    fp = key_fingerprint(load_public_key(pub_path))
    assert fp == key_fingerprint(key.public_key()) and fp.startswith("SHA256:")
    assert len(fp) == len("SHA256:") + 43
