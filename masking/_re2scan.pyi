# Stub of the optional C++ accelerator (masking/_re2scan.cpp).
from collections.abc import Sequence

class Scanner:
    def __init__(
        self, pattern: bytes, set_patterns: Sequence[bytes], never_nl: bool, window: int
    ) -> None: ...
    def scan(
        self, data: bytes, pos: int, endpos: int, limit: int, max_candidates: int, /
    ) -> list[tuple[int, int, int]]: ...
    def first_before(
        self, data: bytes, pos: int, stop: int, endpos: int, /
    ) -> tuple[int, int, int] | None: ...
