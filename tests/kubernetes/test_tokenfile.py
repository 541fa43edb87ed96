"""The upstream token file as a rotating token source (the kubelet's
projected service-account token, a sidecar's renewed token)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from protocols.kubernetes import tokenfile
from protocols.kubernetes.tokenfile import TokenFile


@pytest.fixture(autouse=True)
def look_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenfile, "RECHECK", 0.0)


def rotate(path: Path, text: str) -> None:
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def test_rotation_is_picked_up_and_old_tokens_are_remembered(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("t0\n")
    source = TokenFile(path)
    assert source.current() == "t0"
    for n in range(1, 7):
        rotate(path, f"t{n}\n")
        assert source.current() == f"t{n}"
    assert source.seen == ["t3", "t4", "t5", "t6"]  # the current one last


def test_a_missing_or_half_written_file_keeps_the_last_good_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("good\n")
    source = TokenFile(path)
    assert source.current() == "good"
    path.write_text("")  # a writer that truncates before writing
    assert source.current() == "good"
    path.write_text("renewed\n")
    assert source.current() == "renewed"
    path.unlink()
    assert source.current() == "renewed"
    assert TokenFile(tmp_path / "never-there").current() is None


def test_looked_at_only_once_per_recheck_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenfile, "RECHECK", 3600.0)
    path = tmp_path / "token"
    path.write_text("first\n")
    source = TokenFile(path)
    assert source.current() == "first"
    rotate(path, "second\n")
    assert source.current() == "first"  # no stat per request
