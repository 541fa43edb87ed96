"""Response (and request) body transforms: decoding and masking, sans-IO.

``plan_response`` decides, from the response headers, what happens to a body:

* ``json`` (``application/json``, ``*+json``): buffered up to
  ``mask_json_max_bytes`` and masked as a document (by key, path and content);
  past the cap the body falls back to ``text`` (content masking), or is refused
  when key/path rules exist and ``unmaskable: refuse``.
* ``ndjson`` (``application/x-ndjson`` and friends): masked line by line.
* ``text`` (``text/*`` including ``text/event-stream``, XML, YAML, forms, no
  content type): streamed through the stream masker, which holds back only
  a bounded tail, so a value split across chunks is still masked.
* ``pass``: not maskable (binary types, unknown content encodings) and
  ``unmaskable: pass``; the body is relayed untouched.
* ``refuse``: not maskable and ``unmaskable: refuse``.

Compressed bodies (gzip, deflate, br when the ``brotli`` module (a dependency) is
importable) are decoded when masking applies, and sent on uncompressed.

All masking goes through this module (``masker.json()``, ``masker.stream()``,
``masker.mask_bytes``), keeping the masking package's API in one place.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

from .h1 import Headers

try:  # pragma: no cover - depends on the environment
    import brotli

    HAVE_BROTLI = True
except ImportError:  # pragma: no cover
    brotli = None
    HAVE_BROTLI = False

Counts = dict[str, int]

DECODABLE = ("gzip", "x-gzip", "deflate", "br") if HAVE_BROTLI else ("gzip", "x-gzip", "deflate")
ACCEPT_ENCODING = "gzip, deflate, br" if HAVE_BROTLI else "gzip, deflate"

_JSON_TYPES = frozenset({"application/json", "text/json"})
_NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/json-seq",
     "application/stream+json", "application/jsonlines", "application/x-jsonlines"}
)
_TEXT_APP_TYPES = frozenset(
    {"application/xml", "application/javascript", "application/x-www-form-urlencoded",
     "application/yaml", "application/x-yaml", "application/graphql", "application/sql",
     "application/csv", "application/ecmascript", "application/x-sh", "application/toml"}
)


def media_type(headers: Headers) -> str:
    value = headers.get("content-type")
    if value is None:
        return ""
    return value.split(";", 1)[0].strip().lower()


def charset(headers: Headers) -> str:
    """The ``charset`` parameter of the Content-Type, lower case ('' if none)."""
    value = headers.get("content-type") or ""
    for param in value.split(";")[1:]:
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            return val.strip().strip('"').lower()
    return ""


@functools.lru_cache(maxsize=64)
def foreign_charset(name: str) -> str:
    """The Python codec for a charset in which ASCII text is not ASCII bytes
    (UTF-16, UTF-32, EBCDIC, ...), or ''. The maskers read bytes as ASCII
    compatible: a secret in such a body would pass unseen, so the body is
    masked as UTF-8 and sent back in its own charset. Unknown charsets are
    read as bytes."""
    if not name or name in ("utf-8", "utf8", "us-ascii", "iso-8859-1", "latin1"):
        return ""
    try:
        info = codecs.lookup(name)
    except LookupError:
        return ""
    probe = "password=Ab1 {}\n"
    try:
        same = probe.encode(info.name) == probe.encode("ascii")
    except UnicodeError:
        same = False
    return "" if same else info.name


def body_kind(mtype: str) -> str:
    """``json`` | ``ndjson`` | ``text`` | ``binary`` for a media type ('' = unknown: text)."""
    if not mtype:
        return "text"
    if mtype in _JSON_TYPES or mtype.endswith("+json"):
        return "json"
    if mtype in _NDJSON_TYPES:
        return "ndjson"
    if mtype.startswith("text/") or mtype in _TEXT_APP_TYPES or mtype.endswith("+xml"):
        return "text"
    return "binary"


@dataclass(frozen=True, slots=True)
class Plan:
    mode: str
    """``none`` (masking off) | ``json`` | ``ndjson`` | ``text`` | ``pass`` | ``refuse``."""
    encoding: str = ""
    """Content-Encoding to decode ('' = none)."""
    reason: str = ""
    charset: str = ""
    """Codec of an ASCII-incompatible charset to transcode through ('' = none)."""

    @property
    def transforms(self) -> bool:
        return self.mode in ("json", "ndjson", "text")


def plan_response(headers: Headers, masker: Any, unmaskable: str) -> Plan:
    if masker is None or not masker.active:
        return Plan("none")
    kind = body_kind(media_type(headers))
    unmask = "refuse" if unmaskable == "refuse" else "pass"
    if kind == "binary":
        return Plan(unmask, reason=f"content type {media_type(headers)} cannot be masked")
    codings = headers.tokens("content-encoding")
    codings = [c for c in codings if c != "identity"]
    encoding = ""
    if codings:
        if len(codings) > 1 or codings[0] not in DECODABLE:
            return Plan(unmask, reason=f"content encoding {', '.join(codings)} cannot be decoded")
        encoding = codings[0]
    return Plan(kind, encoding, charset=foreign_charset(charset(headers)))


class Transcoder:
    """A body in a foreign charset (see foreign_charset) as UTF-8 for the
    maskers, and the maskers' UTF-8 output back in that charset. Both sides
    are incremental: a character may be split across chunks. Invalid input
    becomes U+FFFD (the body is being rewritten by masking anyway)."""

    def __init__(self, codec: str) -> None:
        self._in = codecs.getincrementaldecoder(codec)("replace")
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._out = codecs.getincrementalencoder(codec)("replace")

    def to_utf8(self, data: bytes, final: bool = False) -> bytes:
        return self._in.decode(data, final).encode("utf-8", "surrogatepass")

    def from_utf8(self, data: bytes, final: bool = False) -> bytes:
        return self._out.encode(self._utf8.decode(data, final), final)


class BodyDecodeError(Exception):
    """A compressed body its coding cannot decode (corrupt upstream data)."""


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def flush(self) -> bytes: ...


class ZlibDecoder:
    """gzip (possibly several members) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        self._first = True

    def feed(self, data: bytes) -> bytes:
        try:
            return self._feed(data)
        except zlib.error as exc:
            raise BodyDecodeError(str(exc)) from None

    def _feed(self, data: bytes) -> bytes:
        out = []
        if self._first and not self._gzip and data:
            self._first = False
            try:
                return self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        self._first = False
        while data:
            out.append(self._obj.decompress(data))
            data = self._obj.unused_data
            if data and self._gzip and self._obj.eof:
                self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                break
        return b"".join(out)

    def flush(self) -> bytes:
        try:
            return self._obj.flush()
        except zlib.error as exc:
            raise BodyDecodeError(str(exc)) from None


class BrotliDecoder:
    def __init__(self) -> None:
        assert brotli is not None
        self._obj = brotli.Decompressor()

    def feed(self, data: bytes) -> bytes:
        try:
            return bytes(self._obj.process(data))
        except brotli.error as exc:
            raise BodyDecodeError(str(exc)) from None

    def flush(self) -> bytes:
        return b""


def decoder_for(encoding: str) -> _Decoder | None:
    if not encoding:
        return None
    if encoding == "br":
        return BrotliDecoder()
    return ZlibDecoder(encoding)


class BodyRefused(Exception):
    pass


_KV_WORDS = re.compile(
    rb"(?i:password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    rb"|private[_-]?key|credential|client[_-]?secret|pwd)"
)
"""Words one of which every key name the ``secret_key_value`` recognizer
replaces by name contains (``masking.recognizers.KV_KEYS``)."""
_ANCHORS = ("^", "$", "\\A", "\\z", "\\Z")

CACHE_MAX_DOC = 16 * 1024
"""JSON documents up to this size have their masked form remembered."""
CACHE_ENTRIES = 256


class JsonDocuments:
    """Masks whole JSON documents exactly as ``masker.json().mask_document``
    (the reference: parse, walk every key and value, re-serialize), cheaper:

    * prefilter: a document without escapes whose raw bytes have no candidate
      of any content rule (one RE2 search of the joined pattern), no PEM
      header, no word a secret key name needs and no ``"Secret"`` cannot be
      changed by the walk (its strings and numbers are substrings of the raw
      bytes, bounded by non-word characters): it is returned as it came,
      without parsing. Unsafe (so never taken) with key/path rules or a
      custom pattern that has anchors.
    * cache: the result for a small document is remembered, keyed by its exact
      bytes (masking is a pure function of them; APIs answer the same small
      documents over and over).

    ``tests/http/test_bodies.py`` checks output and counts against the walk."""

    def __init__(self, masker: Any) -> None:
        self.masker = masker
        self._json = masker.json() if masker is not None else None
        self._cache: dict[bytes, tuple[bytes, Counts]] = {}
        self._main: Any = None
        self._prefilter = False
        self._kv = False
        self._secret = True
        if masker is None:
            return
        config = getattr(masker, "config", None)
        rules = getattr(config, "rules", None)
        main = getattr(masker, "_main", None)
        if rules is None or (main is None and getattr(masker, "_pem", None) is None):
            return
        if masker.paths or getattr(masker, "_field_rules", True):
            return
        for rule in rules:
            pattern = getattr(rule, "pattern", None) or ""
            if any(a in pattern for a in _ANCHORS):
                return
        self._main = main
        self._kv = getattr(masker, "_kv_rule", True) is not None
        self._secret = getattr(self._json, "_secret_mode", "replace") != "off"
        self._prefilter = True

    def unchanged(self, data: bytes) -> bool:
        """True when the walk provably changes nothing (see the class doc)."""
        if not self._prefilter or b"\\" in data or 0 in data:
            return False
        main = self._main
        if main is not None and main.raw_search(data, 0, len(data))[0][0] >= 0:
            return False
        if b"-----BEGIN " in data:
            return False
        if self._kv and _KV_WORDS.search(data) is not None:
            return False
        return not (self._secret and b'"Secret"' in data)

    def mask(self, data: bytes) -> tuple[bytes, Counts]:
        if self._json is None or not data:
            return data, {}
        if len(data) > CACHE_MAX_DOC:
            return self._mask(data)
        cache = self._cache
        hit = cache.get(data)
        if hit is not None:
            return hit[0], dict(hit[1])
        out, counts = self._mask(data)
        if len(cache) >= CACHE_ENTRIES:
            cache.clear()
        cache[data] = (out, dict(counts))
        return out, counts

    def _mask(self, data: bytes) -> tuple[bytes, Counts]:
        if self.unchanged(data):
            return data, {}
        assert self._json is not None
        # masker.json().mask_document, parsing once: a body that does not
        # parse may be several documents (below)
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            if b"\n" in data.strip():
                return self._mask_lines(data)
            out, counts = self.masker.mask_bytes(data)
            return bytes(out), dict(counts)
        return self._document(data, obj)

    def _document(self, data: bytes, obj: Any) -> tuple[bytes, Counts]:
        """``mask_document`` of ``data``, already parsed into ``obj``."""
        assert self._json is not None
        masked, counts = self._json.mask_obj(obj)
        if not counts:
            return data, {}
        return json.dumps(masked, separators=(",", ":"), ensure_ascii=False).encode(), dict(counts)

    def _mask_lines(self, data: bytes) -> tuple[bytes, Counts]:
        """A body that is not one JSON document but has several lines
        (NDJSON labelled ``application/json``, as log and export endpoints
        send): each line that is a JSON document is masked as one (key and
        path rules apply, as for ``application/x-ndjson``); the runs of other
        lines are content-masked together (a PEM block spans lines). A body
        none of whose lines parse is masked exactly as before: by content."""
        out: list[bytes] = []
        counts: Counts = {}
        run: list[bytes] = []

        def flush_run() -> None:
            if run:
                masked, found = self.masker.mask_bytes(b"".join(run))
                out.append(bytes(masked))
                _add_counts(counts, found)
                run.clear()

        parts = data.split(b"\n")
        last = len(parts) - 1
        for i, line in enumerate(parts):
            end = b"\n" if i < last else b""
            obj = _parse(line) if line.strip() else _NOT_JSON
            if obj is _NOT_JSON:
                run.append(line + end)
                continue
            flush_run()
            masked, found = self._document(line, obj)
            out.append(masked + end)
            _add_counts(counts, found)
        flush_run()
        return b"".join(out), counts


_NOT_JSON = object()


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


def _add_counts(into: Counts, found: Any) -> None:
    for k, n in found.items():
        into[k] = into.get(k, 0) + n


def has_structural_rules(masker: Any) -> bool:
    return bool(masker.paths or masker._field_rules)


class BodyMasker:
    """``feed(bytes) -> bytes`` / ``finish() -> bytes`` for one response body."""

    __slots__ = (
        "_buf", "_decoder", "_docs", "_json_cap", "_masker", "_size", "_stream", "_text",
        "_transforms", "_unmaskable", "counts", "fell_back", "mode", "plan",
    )  # fmt: skip

    def __init__(
        self, plan: Plan, masker: Any, json_cap: int, unmaskable: str, docs: JsonDocuments | None = None
    ) -> None:
        self.plan = plan
        self.mode = plan.mode
        self._masker = masker
        self._docs = docs if docs is not None else JsonDocuments(masker)
        self._transforms = transforms = plan.transforms
        self._decoder = decoder_for(plan.encoding) if transforms and plan.encoding else None
        self._text = Transcoder(plan.charset) if transforms and plan.charset else None
        self._json_cap = json_cap
        self._unmaskable = unmaskable
        self._buf: list[bytes] = []
        self._size = 0
        self._stream: Any = None
        self.counts: Counts = {}
        self.fell_back = False
        if self.mode == "text":
            self._stream = masker.stream()
        elif self.mode == "ndjson":
            self._stream = masker.json().lines()

    @property
    def buffering(self) -> bool:
        """True while the whole body is being collected (JSON): the head waits."""
        return self.mode == "json"

    def _add(self, counts: Counts) -> None:
        for k, n in counts.items():
            self.counts[k] = self.counts.get(k, 0) + n

    def feed(self, data: bytes) -> bytes:
        if not self._transforms:
            return data
        if self._text is None:
            return self._feed(data)
        return self._text.from_utf8(self._feed(data))

    def finish(self) -> bytes:
        if not self._transforms:
            return b""
        if self._text is None:
            return self._finish()
        return self._text.from_utf8(self._finish(), final=True)

    def _feed(self, data: bytes) -> bytes:
        if self._decoder is not None:
            data = self._decoder.feed(data)
        if self._text is not None:
            data = self._text.to_utf8(data)
        if self.mode == "json":
            self._buf.append(data)
            self._size += len(data)
            if self._size <= self._json_cap:
                return b""
            if has_structural_rules(self._masker) and self._unmaskable == "refuse":
                raise BodyRefused(
                    f"JSON body larger than {self._json_cap} bytes cannot be masked by key"
                )
            # fall back to streaming content masking of everything so far
            self.mode = "text"
            self.fell_back = True
            self._stream = self._masker.stream()
            held, self._buf = b"".join(self._buf), []
            return bytes(self._stream.feed(held))
        return bytes(self._stream.feed(data))

    def _finish(self) -> bytes:
        tail = self._decoder.flush() if self._decoder is not None else b""
        if self._text is not None:
            tail = self._text.to_utf8(tail, final=True)
        if self.mode == "json":
            data = b"".join(self._buf) + tail
            self._buf = []
            if not data:
                return b""
            out, counts = self._docs.mask(data)
            self._add(counts)
            return out
        out = self._stream.feed(tail) if tail else b""
        out += self._stream.flush()
        self._add(self._stream.counts)
        return bytes(out)


def mask_request_body(
    masker: Any, data: bytes, content_type: str, encoding: str, docs: JsonDocuments | None = None
) -> tuple[bytes, Counts]:
    """A request body (prefix) as it is recorded: masked; compressed bodies decoded first."""
    if masker is None or not masker.active or not data:
        return data, {}
    if encoding:
        dec = decoder_for(encoding) if encoding in DECODABLE else None
        if dec is None:
            return b"[body with content encoding " + encoding.encode() + b" not recorded]", {}
        try:
            data = dec.feed(data) + dec.flush()
        except (BodyDecodeError, OSError):
            return b"[undecodable compressed body not recorded]", {}
    kind = body_kind(content_type)
    if kind == "json":
        return (docs if docs is not None else JsonDocuments(masker)).mask(data)
    if kind == "ndjson":
        lm = masker.json().lines()
        out = lm.feed(data) + lm.flush()
        return bytes(out), dict(lm.counts)
    out, counts = masker.mask_bytes(data)
    return bytes(out), dict(counts)


def json_summary(data: bytes) -> dict[str, Any] | None:
    """A short, value-free description of a JSON request body."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return {"type": "invalid-json"}
    if isinstance(obj, dict):
        keys = sorted(str(k) for k in obj)
        return {"type": "object", "keys": keys[:32], "key_count": len(keys)}
    if isinstance(obj, list):
        return {"type": "array", "length": len(obj)}
    return {"type": type(obj).__name__}
