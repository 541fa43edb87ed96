"""Generate the v1 golden recording ONCE (already done; tests never regenerate).

    PYTHONPATH=. python tests/recorder/make_golden.py tests/recorder/golden/v1

Signed with the fixed test key (helpers.KEY). Keep the output forever: it is
what proves that newer hoopd versions still read and verify format v1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.recorder.helpers import record, sample_session

if __name__ == "__main__":
    out = Path(sys.argv[1])
    if out.exists():
        sys.exit(f"{out} exists: golden files are never regenerated")
    record(out, "sess-1", sample_session(), rotate_bytes=300, checkpoint_frames=4)
    print(f"wrote {out}")
