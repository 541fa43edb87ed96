"""Without google-re2 the engine falls back to Python's re, with a warning, and
masks the built-in samples exactly as RE2 does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import make
from .samples import PLANTS

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, warnings
sys.modules["re2"] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import masking
from masking import MaskingConfig, build_masker
from masking._regex import HAVE_RE2
texts = json.loads(sys.stdin.read())
m = build_masker(MaskingConfig.model_validate({"recognizers": {"personal": True}}), b"test-gateway-hmac-key-0123456789")
print(json.dumps({
    "have_re2": HAVE_RE2,
    "warned": any("falls back to Python's re" in str(w.message) for w in caught),
    "out": [m.mask_text(t)[0] for t in texts],
}))
"""


def test_python_re_fallback_matches_re2() -> None:
    texts = [text for _, text, _ in PLANTS] + ["1234 200 123-45-6789", "mail a@b.io, password=x"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["have_re2"] is False
    assert got["warned"] is True
    m = make({"recognizers": {"personal": True}})
    assert got["out"] == [m.mask_text(t)[0] for t in texts]
