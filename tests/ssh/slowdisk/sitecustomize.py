"""Loaded by a test daemon started with this directory on PYTHONPATH: a slow
recordings disk. ``HOOPD_TEST_DISK_RATE`` (bytes per second) makes every
segment write sleep as long as that disk would take (recorder.segment keeps
every write in ``_write_all`` for this kind of test)."""

from __future__ import annotations

import os

_rate = float(os.environ.get("HOOPD_TEST_DISK_RATE", "0") or 0)
if _rate > 0:
    import time

    import recorder.segment as _segment

    _write_all = _segment._write_all

    def _slow_write_all(fd: int, data: bytes) -> None:
        time.sleep(len(data) / _rate)
        _write_all(fd, data)

    _segment._write_all = _slow_write_all
