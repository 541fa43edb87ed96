"""This checkout's test helpers for the scripts here, which import hoopd
from another source tree (``--tree``/``--compare-tree``, or a tree argument)
that may not have them. Loaded by file path, so nothing else of this
checkout lands on sys.path to shadow a module the other tree lacks."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

_SUPPORT = Path(__file__).resolve().parents[2] / "tests" / "support"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hoopd_bench_{name}", _SUPPORT / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MemoryTransport = _load("transports").MemoryTransport
split = _load("chunks").split
