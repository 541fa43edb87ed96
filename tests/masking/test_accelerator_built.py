"""The C++ scan accelerator may be missing only where it cannot be built:
otherwise test_re2scan.py would skip and a broken build would go unnoticed."""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path

import pytest


def _can_build() -> bool:
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    re2_h = Path("/usr/include/re2/re2.h")
    set_h = Path("/usr/include/re2/set.h")
    return bool(shutil.which("g++")) and python_h.exists() and re2_h.exists() and set_h.exists()


def test_accelerator_is_built_where_the_tools_are() -> None:
    if not _can_build():
        pytest.skip("no g++, Python.h or RE2 headers here: the pure-Python scan is expected")
    assert importlib.util.find_spec("masking._re2scan") is not None, (
        "g++ and the headers (libre2-dev) are installed but masking._re2scan was not "
        "built: run pip install -e . again and read its output"
    )
