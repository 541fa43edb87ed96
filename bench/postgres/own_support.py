"""This checkout's tests/support package for the scripts here, which import
hoopd from another source tree (``--tree``/``--compare-tree``, or a tree
argument) that may not have these helpers. Loaded by file path under its
own name, so nothing else of this checkout lands on sys.path to shadow a
module the other tree lacks."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

_NAME = "hoopd_bench_support"
_SUPPORT = Path(__file__).resolve().parents[2] / "tests" / "support"
_spec = importlib.util.spec_from_file_location(
    _NAME, _SUPPORT / "__init__.py", submodule_search_locations=[str(_SUPPORT)]
)
assert _spec is not None and _spec.loader is not None
sys.modules[_NAME] = _package = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_package)

MemoryTransport = importlib.import_module(f"{_NAME}.transports").MemoryTransport
split = importlib.import_module(f"{_NAME}.chunks").split
pg_inproc = importlib.import_module(f"{_NAME}.pg_inproc")
