"""A bearer token kept in a file that something else rotates.

The kubelet replaces a pod's projected service-account token long before it
expires (by default hourly, by swapping a symlink), and token sidecars renew
theirs the same way. Read once at start-up, such a token stops working
mid-run and every request fails with 401 until a restart. client-go re-reads
its ``tokenFile``; so does this: the file is ``stat``-ed at most once per
``RECHECK`` seconds and read again when it changed.

The tokens seen are kept (the last few) because the gateway masks every
credential it injected in what the API server sends back: a response can
still echo the token of a request made just before the rotation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

RECHECK = 1.0
"""Seconds between two looks at the file: a ``stat`` per request would cost
more than the request's header work, and the old token stays valid for a
while after a rotation (the kubelet rotates at 80% of the lifetime)."""

KEEP = 4
"""Tokens remembered for masking (the current one and the previous ones)."""


class TokenFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._token: str | None = None
        self._next_check = 0.0
        self.seen: list[str] = []
        """The current token last, then older ones (at most ``KEEP``)."""

    def current(self) -> str | None:
        """The token to send now (None if the file was never readable)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + RECHECK
            self._refresh()
        return self._token

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return  # keep the last good token: the API server's 401 tells the rest
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        try:
            text = self.path.read_text().strip()
        except OSError:
            return
        if not text:
            return  # caught mid-write by a non-atomic writer: look again next time
        self._stamp = stamp
        if text != self._token:
            self._token = text
            older = [t for t in self.seen if t != text][-(KEEP - 1) :]
            self.seen = [*older, text]

    # A connection config holding one compares equal to a reloaded, unchanged
    # one (reload keeps the connection running when its config is equal).
    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenFile) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r})"
