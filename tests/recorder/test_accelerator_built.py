"""The C accelerator may be missing only where it cannot be built: otherwise
test_chainfast.py would skip and a broken build would go unnoticed."""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from pathlib import Path

import pytest


def _can_build() -> bool:
    python_h = Path(sysconfig.get_paths()["include"]) / "Python.h"
    openssl_h = Path("/usr/include/openssl/evp.h")
    return bool(shutil.which("gcc")) and python_h.exists() and openssl_h.exists()


def test_accelerator_is_built_where_the_tools_are() -> None:
    if not _can_build():
        pytest.skip("no gcc, Python.h or OpenSSL headers here: the pure-Python loop is expected")
    assert importlib.util.find_spec("recorder._chainfast") is not None, (
        "gcc and the headers are installed but recorder._chainfast was not built: "
        "run pip install -e . again and read its output"
    )
