"""Commands whose stdin or stdout carries a file archive, not text.

Masking rewrites matches in place; inside an archive that changes a file's
length and corrupts it. Protocols that run commands (ssh exec, Kubernetes
exec) treat these as file transfers: carried unmasked and unrecorded, or
refused when the connection turns file transfer off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_TAR_ARCHIVE_FLAGS = re.compile(r"-?[vmpozjJkhP]*[cx][vmpozjJkhP]*f")
"""Create or extract (``cf``, ``-xmf``, ``czf``...): letters that take no
argument and run no program, ``f`` last (its argument: the next word)."""
_TAR_OPTIONS = frozenset({"--no-same-permissions", "--no-same-owner"})
"""Long options kubectl cp sends (``--no-preserve``); any other option may run
a program (``-I``/``--use-compress-program``, ``--to-command``,
``--checkpoint-action=exec=``, ``-F``...) whose output would pass as the
archive, unmasked and unrecorded."""


def is_tar_stream(argv: Sequence[str]) -> bool:
    """``tar`` creating or extracting an archive on stdin/stdout (``f -``):
    what ``kubectl cp`` runs, and ``ssh host tar cf - dir``. Only plain
    ones: an option besides the archive flags, ``-C DIR`` and
    ``_TAR_OPTIONS`` makes it an ordinary (masked, recorded) command."""
    if not argv or argv[0].rsplit("/", 1)[-1] != "tar":
        return False
    args = argv[1:]
    archive = False
    i = 0
    while i < len(args):
        arg = args[i]
        nxt = args[i + 1] if i + 1 < len(args) else None
        if _TAR_ARCHIVE_FLAGS.fullmatch(arg) is not None and nxt == "-":
            archive = True
            i += 2
        elif arg == "-C" and nxt is not None:
            i += 2
        elif arg.startswith("-") and arg not in _TAR_OPTIONS:
            return False
        else:
            i += 1
    return archive
