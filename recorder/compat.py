"""Upgrading recorded event bodies from older format versions.

In the style of mitmproxy's io/compat.py: ``CONVERTERS[v]`` turns a body
written by format version ``v`` into one of version ``v + 1``; readers apply
the chain from the version in a file's header frame up to FORMAT_VERSION, so
the rest of the code only ever sees current records. Rules (see
docs/recording-format.md, "Compatibility"):

* adding a key to an event record does not need a new version (readers
  ignore unknown keys and ``from_record`` supplies defaults);
* renaming/removing a key or changing its meaning bumps the version and
  adds a converter here, plus golden files for the old version in
  tests/recorder/golden/ that are kept forever;
* the framing (frame array, hash chain, signature input) of a version never
  changes; a new framing is a new version with its own verifier branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recorder.format import FORMAT_VERSION

Body = dict[str, Any]

# version -> converter to version + 1. Empty while 1 is the only version.
CONVERTERS: dict[int, Callable[[Body], Body]] = {}


class UnsupportedVersion(ValueError):
    pass


def upgrade_body(version: int, body: Body) -> Body:
    """Return ``body`` (written by ``version``) converted to FORMAT_VERSION."""
    if version > FORMAT_VERSION:
        raise UnsupportedVersion(
            f"recording format version {version} is newer than this hoopd "
            f"(supports up to {FORMAT_VERSION}); upgrade hoopd to read it"
        )
    if version < 1:
        raise UnsupportedVersion(f"invalid recording format version {version}")
    while version < FORMAT_VERSION:
        try:
            body = CONVERTERS[version](body)
        except KeyError:
            raise UnsupportedVersion(f"no converter from version {version}") from None
        version += 1
    return body


def supported(version: object) -> bool:
    return isinstance(version, int) and 1 <= version <= FORMAT_VERSION
