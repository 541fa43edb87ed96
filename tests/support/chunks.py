"""Splitting a byte stream at arbitrary points, for the parsers' property
tests ("bytes split at any point give the same messages")."""

from __future__ import annotations


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at each position in ``cuts`` (taken modulo len + 1,
    duplicates ignored); the pieces join back to ``data``."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out
