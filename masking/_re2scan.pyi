# Stub of the optional C++ accelerator (masking/_re2scan.cpp).
from collections.abc import Sequence

MEMO_SIZE: int

class Scanner:
    def __init__(
        self,
        pattern: bytes,
        set_patterns: Sequence[bytes],
        never_nl: bool,
        window: int,
        scan_pattern: bytes | None = ...,
        lookback: int = ...,
        left_bytes: bytes = ...,
        sides: Sequence[tuple[bytes, bytes, int, bytes, int]] | None = ...,
        checks: Sequence[tuple[bytes, bytes, bool, bool, bool, int, int, int, bytes]] | None = ...,
    ) -> None: ...
    def scan(
        self,
        data: bytes,
        pos: int,
        endpos: int,
        limit: int,
        max_candidates: int,
        memo: bytearray | None = ...,
        /,
    ) -> list[tuple[int, int, int]]: ...
    def first_before(
        self, data: bytes, pos: int, stop: int, endpos: int, memo: bytearray | None = ..., /
    ) -> tuple[int, int, int] | None: ...
