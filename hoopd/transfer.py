"""Commands whose stdin or stdout carries a file archive, not text.

Masking rewrites matches in place; inside an archive that changes a file's
length and corrupts it. Protocols that run commands (ssh exec, Kubernetes
exec) treat these as file transfers: carried unmasked and unrecorded, or
refused when the connection turns file transfer off.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

_TAR_ARCHIVE_FLAGS = re.compile(r"-?[A-Za-z]*[cx][A-Za-z]*f")


def is_tar_stream(argv: Sequence[str]) -> bool:
    """``tar`` creating or extracting an archive on stdin/stdout (``f -``):
    what ``kubectl cp`` runs, and ``ssh host tar cf - dir``."""
    if not argv or argv[0].rsplit("/", 1)[-1] != "tar":
        return False
    return any(
        _TAR_ARCHIVE_FLAGS.fullmatch(arg) is not None and nxt == "-"
        for arg, nxt in itertools.pairwise(argv[1:])
    )
