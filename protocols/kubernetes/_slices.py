"""Masking a large list a slice at a time, so that one big response does not
stop every other session on the listener.

``BodyMasker.mask_document`` parses, walks and re-serializes a whole JSON
document in one go on the event loop, at about 2 MB/s when its values need
masking (a PodList whose pods all have env values): 37 MB of pods took 16 s
during which no other kubectl on the gateway got an answer. A list or
Table (a top-level object whose ``items`` or ``rows`` is an array) is done
here one element at a time instead -- decoded, masked, serialized -- with the
loop given back every ``SLICE_SECONDS``. Each element also gets its own fast
path (``BodyMasker.item_level``): most pods need only the Kubernetes pass.

The result is the bytes ``mask_document`` returns for the same document
(a property test holds the two together). Whatever this does not handle
(another shape, JSON path rules, a field rule on the list's own key,
duplicate keys, a document too deep to decode) answers None, and the
caller masks the whole document as before.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocols.kubernetes.bodies import BodyMasker

Counts = dict[str, int]

SLICED_MIN_BYTES = 256 * 1024
"""Smaller documents are masked in one go (~0.1 s at worst)."""
SLICE_SECONDS = 0.01
"""Loop time one slice may take before the other sessions get theirs."""
LIST_KEYS = ("items", "rows")
SKIP_CHECKS_AT = 0.9
"""When nearly every item checked needed the full walk, items are walked
without their fast path (it costs a content scan each), but for every
``RECHECK_EVERY``-th, so that a change further down the list is noticed."""
RECHECK_EVERY = 16

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_COMPACT = {"separators": (",", ":"), "ensure_ascii": False}


class _NotAList(Exception):
    """The document is not a shape this module slices."""


async def mask_sliced(bm: BodyMasker, data: bytes) -> tuple[bytes, Counts] | None:
    """``bm.mask_document(data)``, yielding to the event loop between
    slices; None if ``data`` is not a list this can slice."""
    if not _sliceable(bm):
        return None
    try:
        text = data.decode("utf-8")
        return await _mask(bm, data, text)
    except (_NotAList, ValueError, RecursionError):
        return None


def _sliceable(bm: BodyMasker) -> bool:
    masker, walker = bm.masker, bm.json
    if masker is None or walker is None or walker.has_paths:
        return False
    return not any(masker.field_rule(key) for key in LIST_KEYS)


async def _mask(bm: BodyMasker, data: bytes, text: str) -> tuple[bytes, Counts]:
    counts: Counts = {}
    members: list[tuple[str, Any]] = []  # in order; the list's own value is None
    pieces: list[str] = []
    list_key = ""
    kind: Any = None
    item_of: Any = None
    full_share = 0.0  # how often the items' own fast path found a full walk needed
    due = time.perf_counter() + SLICE_SECONDS
    i = _expect(text, _skip(text, 0), "{")
    i = _skip(text, i)
    if text.startswith("}", i):
        raise _NotAList
    while True:
        key, i = _DECODER.raw_decode(text, i)
        if not isinstance(key, str):
            raise _NotAList
        i = _skip(text, _expect(text, _skip(text, i), ":"))
        if not list_key and key in LIST_KEYS and text.startswith("[", i):
            if key == "rows" and bm.table_columns(dict(members).get("columnDefinitions")):
                raise _NotAList  # cells masked by their column: the whole Table
            list_key = key
            members.append((key, None))
            # (a kind after the list is checked below: then this is not done)
            kind = next((v for k, v in members if k == "kind"), None)
            item_of = kind if key == "items" else None  # (a Table's rows are no Secrets)
            i = _skip(text, i + 1)
            more = not text.startswith("]", i)
            if not more:
                i += 1
            while more:
                start = i
                item, i = _DECODER.raw_decode(text, i)
                check = full_share < SKIP_CHECKS_AT or len(pieces) % RECHECK_EVERY == 0
                raw = text[start:i].encode() if check else None
                masked, found, full = bm.mask_item(item, raw, item_of)
                if check:
                    full_share = 0.9 * full_share + 0.1 * full
                _merge(counts, found)
                pieces.append(json.dumps(masked, **_COMPACT))  # type: ignore[arg-type]
                if time.perf_counter() >= due:
                    await asyncio.sleep(0)
                    due = time.perf_counter() + SLICE_SECONDS
                i = _skip(text, i)
                more = text.startswith(",", i)
                i = _skip(text, i + 1) if more else _expect(text, i, "]")
        else:
            value, i = _DECODER.raw_decode(text, i)
            members.append((key, value))
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
            continue
        i = _expect(text, i, "}")
        break
    if _skip(text, i) != len(text) or not list_key:
        raise _NotAList
    keys = [k for k, _ in members]
    if len(set(keys)) != len(keys):
        raise _NotAList  # json.loads keeps the last of duplicate keys: not this
    if kind != dict(members).get("kind"):
        raise _NotAList  # the kind came after the list: its items were masked without it
    if list_key == "rows" and bm.table_columns(dict(members).get("columnDefinitions")):
        raise _NotAList  # the column definitions came after the rows
    envelope = {k: v for k, v in members if k != list_key}
    masked_envelope, found = bm.mask_obj(envelope)
    _merge(counts, found)
    if not counts:
        return data, counts
    # The masked document, serialized as mask_document serializes it.
    marker = f"hoopd-{list_key}-{id(pieces):x}-{time.monotonic_ns():x}"
    whole = {k: (marker if k == list_key else masked_envelope[k]) for k in keys}
    head = json.dumps(whole, **_COMPACT)  # type: ignore[arg-type]
    quoted = json.dumps(marker)
    if head.count(quoted) != 1:
        raise _NotAList
    before, after = head.split(quoted)
    body = "".join((before, "[", ",".join(pieces), "]", after))
    return body.encode(), counts


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    assert match is not None  # (matches the empty string)
    return match.end()


def _expect(text: str, i: int, char: str) -> int:
    if not text.startswith(char, i):
        raise _NotAList
    return i + 1


def _merge(into: Counts, found: Counts) -> None:
    for k, n in found.items():
        into[k] = into.get(k, 0) + n
