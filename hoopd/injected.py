"""The secrets a connection's gateway sends upstream on the client's behalf.

They are masked in everything the upstream sends back (``masking.literals``):
the client never holds the upstream credential, and an upstream that echoes a
request (its headers, its URL) must not hand it over. Collected from the
connection's ``upstream:`` section: every ``SecretRef`` value in it, plus the
derived forms a protocol's model declares with an ``injected_forms()`` method
(the base64 ``user:password`` of HTTP basic auth, a service-account token
read from a file).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hoopd.configtypes import Secret

_MAX_DEPTH = 8
"""Upstream sections are shallow; a bound keeps a cyclic object harmless."""


def injected_secrets(upstream: Any) -> list[str]:
    """Every injected secret value of an ``upstream:`` section (no duplicates, in order)."""
    found: list[str] = []
    _walk(upstream, found, 0)
    return list(dict.fromkeys(v for v in found if v))


def _walk(obj: Any, found: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH or obj is None:
        return
    if isinstance(obj, Secret):
        found.append(obj.reveal())
    elif isinstance(obj, BaseModel):
        forms = getattr(obj, "injected_forms", None)
        if callable(forms):
            found.extend(forms())
        for name in type(obj).model_fields:
            _walk(getattr(obj, name, None), found, depth + 1)
    elif isinstance(obj, dict):
        for value in obj.values():
            _walk(value, found, depth + 1)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _walk(value, found, depth + 1)
