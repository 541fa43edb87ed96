"""Response (and request) body transforms: decoding and masking, sans-IO.

``plan_response`` decides, from the response headers, what happens to a body:

* ``json`` (``application/json``, ``*+json``): buffered up to
  ``mask_json_max_bytes`` and masked as a document (by key, path and content);
  past the cap the body falls back to ``text`` (content masking), or is refused
  when key/path rules exist and ``unmaskable: refuse``. A body that is not
  one document is split into documents and garbage (``JsonDocuments._several``).
* ``ndjson`` (``application/x-ndjson`` and friends): masked line by line
  (``masking.JsonLinesMasker``, each JSON line by ``JsonDocuments.mask``).
* ``text`` (``text/*`` including ``text/event-stream``, XML, YAML, forms, no
  content type): streamed through the stream masker, which holds back only
  a bounded tail, so a value split across chunks is still masked.
* ``pass``: a binary type and ``unmaskable: pass``; the body is relayed untouched.
* ``refuse``: a binary type and ``unmaskable: refuse``, or a maskable type in
  a content encoding the gateway cannot decode (whatever ``unmaskable`` says).

Compressed bodies (gzip, deflate, br when the ``brotli`` module (a dependency) is
importable) are decoded when masking applies, ``DECODE_STEP`` at a time
(``BodyMasker.pending``), and sent on uncompressed; a stream that is
corrupt or ends before its end marker raises BodyDecodeError.

All masking goes through this module (``masker.json()``, ``masker.stream()``,
``masker.mask_bytes``), keeping the masking package's API in one place.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import functools
import json
import math
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from masking._regex import Compiled
from masking.engine import KV_ID
from masking.jsonmask import SECRET_RULE, JsonLinesMasker
from masking.replacements import looks_masked
from masking.stream import InjectedScrubber, StreamMasker

from .h1 import Headers

try:  # pragma: no cover - depends on the environment
    import brotli

    # brotli >= 1.2 bounds a step's output (``output_buffer_limit``); an
    # older one would decode a bomb whole, so br is not accepted with it
    HAVE_BROTLI = hasattr(brotli.Decompressor, "can_accept_more_data")
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
     "application/http",  # an HTTP message (batch APIs), as message/http
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
    if not getattr(info, "_is_text_encoding", True):
        # rot13, base64, zlib, hex...: codecs, not charsets (codecs.encode
        # of text raises LookupError with them): read as bytes, as clients do
        return ""
    # '@' and '+': UTF-7 writes them as '+AEA-' and '+-' (an e-mail address
    # would pass unseen) while it leaves letters and digits as they are
    probe = "password=Ab1 {}\n@+"
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
    if (
        mtype.startswith(("text/", "message/"))  # message/http (a TRACE echo), message/rfc822
        or mtype in _TEXT_APP_TYPES
        or mtype.endswith("+xml")
        # a batch API's answer (HTTP responses with JSON, one per part); not
        # byteranges: pieces of a file, often binary (and never asked for
        # through masking, which drops Range)
        or (mtype.startswith("multipart/") and mtype != "multipart/byteranges")
    ):
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
    transfer = [c for c in headers.tokens("transfer-encoding") if c not in ("chunked", "identity")]
    if transfer:
        # a transfer coding (never asked for: the gateway sends no TE) is
        # undone by no one on the way: the maskers would see compressed bytes
        return Plan(
            "refuse", reason=f"transfer coding {', '.join(transfer)} cannot be decoded for masking"
        )
    codings = headers.tokens("content-encoding")
    codings = [c for c in codings if c != "identity"]
    encoding = ""
    if codings:
        if len(codings) > 1 or codings[0] not in DECODABLE:
            # Always refused, whatever ``unmaskable`` says: the body is of a
            # type that can hold secrets, and the gateway asked the upstream
            # for codings it can decode only (HttpProxy.request_head)
            return Plan(
                "refuse",
                reason=f"content encoding {', '.join(codings)} cannot be decoded for masking"
                f" (the gateway accepts {ACCEPT_ENCODING}, identity)",
            )
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
    @property
    def pending(self) -> bool: ...
    def feed(self, data: bytes, limit: int = 0) -> bytes: ...
    def flush(self) -> bytes: ...


DECODE_STEP = 1 << 20
"""Decoded bytes a response body's decoder gives at a time (``BodyMasker.feed``):
a 256 KiB read of a gzip bomb (deflate's ratio is ~1032:1) is ~256 MiB
decoded; the compressed rest waits (``pending``) until the client took the
step before (``UpstreamConnection._pump``)."""


class ZlibDecoder:
    """gzip (possibly several members) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in ("gzip", "x-gzip")
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS if self._gzip else zlib.MAX_WBITS)
        self._first = True
        self._fed = False
        self._in = b""
        """Compressed input not decoded yet (over ``limit``)."""

    @property
    def pending(self) -> bool:
        """Input is waiting: ``feed(b"", limit)`` decodes more of it."""
        return bool(self._in)

    def feed(self, data: bytes, limit: int = 0) -> bytes:
        """Decode ``data`` after the input kept from before: all of it, or
        (``limit`` > 0) about ``limit`` bytes of output, keeping the rest."""
        if data:
            self._fed = True
            self._in = self._in + data if self._in else data
        try:
            return self._feed(limit)
        except zlib.error as exc:
            self._in = b""
            raise BodyDecodeError(str(exc)) from None

    def _feed(self, limit: int) -> bytes:
        if self._first and not self._gzip and self._in:
            self._first = False
            try:
                first = self._obj.decompress(self._in, limit)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            else:
                self._in = b"" if self._obj.eof else self._obj.unconsumed_tail
                return first
        self._first = False
        out: list[bytes] = []
        n = 0
        while self._in:
            obj = self._obj
            if obj.eof:
                if not self._gzip:
                    self._in = b""  # after a deflate stream's end: ignored
                    break
                obj = self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the next gzip member
            before = len(self._in)
            piece = obj.decompress(self._in, limit - n if limit else 0)
            out.append(piece)
            n += len(piece)
            self._in = obj.unused_data if obj.eof else obj.unconsumed_tail
            if not piece and len(self._in) == before and not obj.eof:
                raise BodyDecodeError("zlib decoder makes no progress")
            if limit and n >= limit:
                break
        return out[0] if len(out) == 1 else b"".join(out)

    def flush(self) -> bytes:
        rest = self.feed(b"") if self._in else b""
        try:
            tail = rest + self._obj.flush()
        except zlib.error as exc:
            raise BodyDecodeError(str(exc)) from None
        # zlib takes a stream cut short for a whole one: without its end
        # marker the body is incomplete, which the client must not mistake
        # for the whole response (an empty body is no stream at all)
        if self._fed and not self._obj.eof:
            raise BodyDecodeError("compressed stream ends before its end (truncated)")
        return tail


class BrotliDecoder:
    def __init__(self) -> None:
        assert brotli is not None
        self._obj = brotli.Decompressor()
        self._fed = False
        self._in = b""
        self._busy = False
        """The decompressor may have output to give for the input it has
        (its last step reached the limit): it gets no more input till then."""

    @property
    def pending(self) -> bool:
        return self._busy or bool(self._in)

    def feed(self, data: bytes, limit: int = 0) -> bytes:
        if data:
            self._fed = True
            self._in = self._in + data if self._in else data
        try:
            return self._feed(limit)
        except brotli.error as exc:
            self._in = b""
            self._busy = False
            raise BodyDecodeError(str(exc)) from None

    def _feed(self, limit: int) -> bytes:
        obj = self._obj
        limit = limit or sys.maxsize
        out: list[bytes] = []
        n = 0
        while (self._busy or self._in) and n < limit:
            data = b""
            if not self._busy:  # (input while output is due would be lost)
                data, self._in = self._in, b""
            piece = bytes(obj.process(data, output_buffer_limit=limit - n))
            if not obj.can_accept_more_data():
                if not piece and not data:
                    raise BodyDecodeError("brotli decoder makes no progress")
                self._busy = True
            else:
                # output up to the limit: there may be more of it
                self._busy = len(piece) >= limit - n
            out.append(piece)
            n += len(piece)
        return out[0] if len(out) == 1 else b"".join(out)

    def flush(self) -> bytes:
        tail = self.feed(b"") if self.pending else b""
        if self._fed and not self._obj.is_finished():
            raise BodyDecodeError("compressed stream ends before its end (truncated)")
        return tail


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
_KV_FIND = Compiled(_KV_WORDS.pattern).raw_search
"""``_KV_WORDS`` searched as the engine matches key names (RE2 when it is
there): its case folding is Unicode's, so ``password`` spelt with long s
(U+017F) is a secret key name to the engine and must be seen here too; and it
is several times faster."""
_ANCHORS = ("^", "$", "\\A", "\\z", "\\Z")

_AFTER_WS = re.compile(rb"[ \t\r\n]*")
_NOT_JSON_SAFE = re.compile(rb'["\\\x00-\x1f]')
"""Bytes a replacement cannot be spliced into a string literal with."""


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: an object with a key twice is refused (the walk
    keeps only the last value; the raw bytes keep both)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _is_key(data: bytes, close: int) -> bool:
    """The string whose closing quote is at ``close`` is an object's key
    (keys are never masked by content)."""
    after = _AFTER_WS.match(data, close + 1)
    return after is not None and data[after.end() : after.end() + 1] == b":"


_UNIQUE = json.JSONDecoder(object_pairs_hook=_no_duplicates)
"""Parses only to know a document is one valid document, keys unique."""

CACHE_MAX_DOC = 16 * 1024
"""JSON documents up to this size have their masked form remembered."""
CACHE_ENTRIES = 256
NDJSON_MAX_LINE = 64 << 20
"""A longer line of line-delimited JSON is content-masked (as ``JsonMasker.lines``)."""


class JsonDocuments:
    """Masks whole JSON documents as ``masker.json().mask_document`` (the
    reference: parse, walk every key and value, re-serialize) does, to the
    same values and counts, cheaper:

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
    * in place: a document the prefilter would take but for candidates that
      start inside value strings has exactly those strings masked by
      ``mask_value`` (the walk's own call) and spliced into the upstream's
      bytes, formatting kept (``_in_place``); anything it cannot vouch for
      goes to the walk.

    ``tests/http/test_bodies.py`` checks output and counts against the walk."""

    def __init__(self, masker: Any) -> None:
        self.masker = masker
        self._json = masker.json() if masker is not None else None
        self._cache: dict[bytes, tuple[bytes, Counts]] = {}
        self._main: Any = None
        self._secret_replace: Callable[[bytes], bytes] | None = (
            self._json.secret_replacer if self._json is not None else None
        )
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
        return self._plain(data) and self._first_candidate(data, 0) < 0

    def _plain(self, data: bytes) -> bool:
        """No escapes, PEM header, secret-key word or ``"Secret"``: every key
        and value the walk sees is its raw bytes, only content rules can
        change it, and the walk's content scan of a value is ``mask_value``
        of those bytes."""
        if not self._prefilter or b"\\" in data or 0 in data:
            return False
        if b"-----BEGIN " in data:
            return False
        if self._kv and _KV_FIND(data, 0, len(data))[0][0] >= 0:
            return False
        # (a SecretList's items say no kind; today its "Secret" word also
        # trips the secret-key-word check above, but that one can be off)
        return not (self._secret and (b'"Secret"' in data or b'"SecretList"' in data))

    def _first_candidate(self, data: bytes, pos: int) -> int:
        """Where the leftmost candidate of any content rule at or after
        ``pos`` starts (-1: none)."""
        main = self._main
        if main is None:
            return -1
        return int(main.raw_search(data, pos, len(data))[0][0])

    def _in_place(self, data: bytes, first: int) -> tuple[bytes, Counts] | None:
        """The walk's result for a ``_plain`` document whose first candidate
        starts at ``first``, as the upstream's bytes with only the masked
        value strings replaced; None when that cannot be vouched for (the
        caller walks).

        Why it is the walk: a match of the joined pattern in a string alone
        is one in the raw bytes too (anchored patterns are excluded; for
        ``\\b`` a quote is no word byte, as the end of the text is not), so a
        string the walk's ``mask_value`` changes holds a candidate in the raw
        bytes, and the search from before it finds that one or an earlier one. Each string a candidate starts in gets
        ``mask_value`` of its raw bytes, which is what the walk computes for
        it (no escapes: the bytes are its UTF-8). A candidate outside value
        strings (a number the walk may mask, or one spanning quotes and
        structure), duplicate keys (the walk drops all but the last) and a
        replacement JSON would need to escape go to the walk."""
        try:
            # json.loads of bytes without NULs reads UTF-8, a BOM skipped
            _UNIQUE.decode(data.decode("utf-8-sig", "surrogatepass"))
        except (ValueError, UnicodeDecodeError, _DuplicateKey):
            return None
        edits: list[tuple[int, int, bytes]] = []
        counts: Counts = {}
        mask_value = self.masker.mask_value
        p = first
        quotes, counted = 0, 0  # quotes in data[:counted]
        while p >= 0:
            # without escapes every quote opens or closes a string: an odd
            # number up to p puts p in a string (or on its opening quote)
            quotes += data.count(b'"', counted, p + 1)
            counted = p + 1
            if quotes % 2 == 0:  # outside strings, or on a closing quote
                return None
            start = data.rfind(b'"', 0, counted) + 1
            end = data.find(b'"', start)
            if not _is_key(data, end):
                new, found = mask_value(data[start:end])
                if found:
                    if _NOT_JSON_SAFE.search(new) is not None:
                        return None
                    edits.append((start, end, bytes(new)))
                    _add_counts(counts, found)
            quotes += data.count(b'"', counted, end + 1)
            counted = end + 1
            p = self._first_candidate(data, counted)
        return _apply(data, edits), counts

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

    def lines(self) -> JsonLinesMasker:
        """A stream masker for line-delimited JSON (the masking package's,
        as Kubernetes watches use) whose lines are masked by ``mask``: the
        same result per document as a whole body, with the prefilter, the
        cache and the handling of lines that do not parse (``_several``)."""
        masker = self.masker
        assert masker is not None
        return JsonLinesMasker(self.mask, lambda: KeyedRun(masker), NDJSON_MAX_LINE)

    def _mask(self, data: bytes) -> tuple[bytes, Counts]:
        if self._plain(data):
            first = self._first_candidate(data, 0)
            if first < 0:
                return data, {}
            done = self._in_place(data, first)
            if done is not None:
                return done
        assert self._json is not None
        # masker.json().mask_document, parsing once: a body that does not
        # parse may be several documents, or documents and garbage (below)
        try:
            try:
                obj = json.loads(data)
            except (ValueError, UnicodeDecodeError):
                return self._several(data)
            return self._document(data, obj)
        except RecursionError:
            # nested deeper than the parser or the walk go (a thousand levels,
            # which a user can put in a stored object to break every read of
            # it): the tolerant key scan, which keeps a stack, then content
            return self._garbage(data)
        except UnicodeEncodeError:
            # a lone surrogate escape ("\ud800": JSON's grammar allows it,
            # UTF-8 cannot hold it; a user can store one): the walk could not
            # encode the string it is in. Masked with U+FFFD in its place.
            fixed = replace_lone_surrogates(data)
            if fixed == data:  # pragma: no cover - only surrogates raise it
                return self._garbage(data)
            return self._mask(fixed)

    def _document(self, data: bytes, obj: Any) -> tuple[bytes, Counts]:
        """``mask_document`` of ``data``, already parsed into ``obj``."""
        assert self._json is not None
        masked, counts = self._json.mask_obj(obj)
        if not counts:
            return data, {}
        try:
            out = json.dumps(masked, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            # a number too large for a float (1e999) would come back as
            # Infinity, which is not JSON
            out = _dumps_non_finite(masked)
        return out.encode(), dict(counts)

    def _several(self, data: bytes) -> tuple[bytes, Counts]:
        """A body that is not one JSON document: NDJSON labelled
        ``application/json``, documents back to back (``{..}{..}``), a
        document and garbage, a truncated document. Each document is masked
        as one (key, path and Secret rules apply); each run of the rest goes
        through ``_garbage``, so key rules still hit what is shaped like a
        key and its value, and content rules see the run whole (a PEM block
        spans lines)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._garbage(data)
        out: list[bytes] = []
        counts: Counts = {}
        for is_doc, piece, obj in split_documents(text):
            raw = piece.encode("utf-8")
            if is_doc is None:  # whitespace between documents
                out.append(raw)
                continue
            masked, found = self._document(raw, obj) if is_doc else self._garbage(raw)
            out.append(masked)
            _add_counts(counts, found)
        return b"".join(out), counts

    def _garbage(self, data: bytes) -> tuple[bytes, Counts]:
        """Key rules by a tolerant scan (``mask_keys_loosely``), then content rules."""
        keyed, counts = mask_keys_loosely(self.masker, data, self._secret_replace)
        out, found = self.masker.mask_bytes(keyed)
        _add_counts(counts, found)
        return bytes(out), counts


_NON_FINITE = {"inf": "1e999", "-inf": "-1e999", "nan": "NaN"}


def _dumps_non_finite(obj: Any) -> str:
    """``json.dumps`` of a document with numbers beyond a float (parsed as
    infinities): each is written back as ``1e999`` / ``-1e999``, valid JSON
    that parses to the same (a NaN the upstream sent as such stays NaN)."""

    def mark(node: Any) -> Any:
        if isinstance(node, float) and not math.isfinite(node):
            return f"\0hoopd-{node!r}\0"
        if isinstance(node, dict):
            return {k: mark(v) for k, v in node.items()}
        if isinstance(node, list):
            return [mark(v) for v in node]
        return node

    out = json.dumps(mark(obj), separators=(",", ":"), ensure_ascii=False)
    for name, text in _NON_FINITE.items():
        out = out.replace(f'"\\u0000hoopd-{name}\\u0000"', text)
    return out


_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
_AFTER_SCALAR = frozenset(("", " ", "\t", "\r", "\n", "{", "[", '"'))
_RESYNC = re.compile(r"\n[ \t\r]*[\[{]")
MAX_RESYNC = 64
"""Failed parses of a line that opens an object or array before the rest of
a body is taken as garbage: each may read to the end of the body (a
truncated, pretty-printed array of objects), so they are bounded."""


def split_documents(text: str) -> list[tuple[bool | None, str, Any]]:
    """``text`` as consecutive pieces ``(kind, piece, parsed)``: kind True for
    a JSON document, None for whitespace between documents, False for a run
    that does not parse. After a run that does not parse, parsing resumes at
    the next line that opens an object or array (NDJSON with a stray line)."""
    pieces: list[tuple[bool | None, str, Any]] = []
    pos, n, failed = 0, len(text), 0
    garbage_from = scanned = depth = -1
    while pos < n:
        ws = _WS.match(text, pos)
        end = ws.end() if ws is not None else pos
        if end == n:
            break
        try:
            obj, doc_end = _DECODER.raw_decode(text, end)
            if not isinstance(obj, dict | list) and text[doc_end : doc_end + 1] not in _AFTER_SCALAR:
                # "x":... or 1abc: part of something that is not JSON, whose
                # key the garbage scan must see whole
                raise ValueError
        except ValueError:
            failed += 1
            if garbage_from < 0:
                garbage_from = scanned = pos
                depth = 0
            pos = n
            for nxt in _RESYNC.finditer(text, end) if failed < MAX_RESYNC else ():
                # only where the garbage has closed what it opened: a line
                # inside a document cut short is not a document of its own
                depth = _depth(text, scanned, nxt.start() + 1, depth)
                scanned = nxt.start() + 1
                if depth == 0:
                    pos = scanned
                    break
            continue
        if garbage_from >= 0:
            pieces.append((False, text[garbage_from:pos], None))
            garbage_from = -1
        if end > pos:
            pieces.append((None, text[pos:end], None))
        pieces.append((True, text[end:doc_end], obj))
        pos = doc_end
    if garbage_from >= 0:
        pieces.append((False, text[garbage_from:], None))
    elif pos < n:
        pieces.append((None, text[pos:], None))
    return pieces


_BRACKETS = re.compile(r'"(?:[^"\\\n]|\\[^\n])*"?|[\[{\]}]')


def _depth(text: str, start: int, end: int, depth: int) -> int:
    """``depth`` plus the objects and arrays ``text[start:end]`` opens and
    does not close (strings skipped; never below 0)."""
    for m in _BRACKETS.finditer(text, start, end):
        c = m.group()[0]
        if c == "{" or c == "[":
            depth += 1
        elif c == "}" or c == "]":
            depth = max(depth - 1, 0)
    return depth


_TOKEN = re.compile(
    rb'"(?:[^"\\\n]|\\[^\n])*(?:"|(?=\n)|\\?\Z)'  # a string, maybe cut at a newline or the end
    rb"|[{}\[\]:,]"
    rb"|[^{}\[\]:,\"\ \t\r\n]+",  # a number, literal or other bare word
)
"""JSON's tokens (whitespace matches nothing: ``finditer`` skips it)."""


_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class _Frame:
    """An object or array the loose scan is inside."""

    __slots__ = (
        "index", "is_obj", "key", "rid", "secret", "secret_data", "secret_list", "states", "want_key",
    )  # fmt: skip

    def __init__(self, is_obj: bool, states: frozenset[Any], rid: str | None) -> None:
        self.is_obj = is_obj
        self.states = states
        self.rid = rid
        """The rule replacing everything inside (the key or path of the
        container hit one), as ``JsonMasker._replace_all`` does."""
        self.key: str | None = None
        self.want_key = is_obj
        self.index = 0
        self.secret = False
        """An object that said ``"kind": "Secret"`` (before its data, as
        Kubernetes writes it)."""
        self.secret_data = 0
        """1: the ``data`` object of a Secret (base64 values), 2: its ``stringData``."""
        self.secret_list = 0
        """1: an object that said ``"kind": "SecretList"``; 2: its ``items``
        array, whose objects are Secrets (the API server leaves their kind out)."""


def mask_keys_loosely(
    masker: Any, data: bytes, secret_replace: Callable[[bytes], bytes] | None = None
) -> tuple[bytes, Counts]:
    """Key and path rules applied to text that is JSON-shaped but does not
    parse (cut short, documents with garbage between them): a scan of its
    tokens that tracks objects, arrays, keys and indexes as a parser would,
    and tolerates anything. A value a field rule, a path rule or a secret key
    name would replace in a document is replaced the same way here, so a
    body does not escape key rules by being malformed. As garbage can shift
    the nesting, JSON paths match from every object and array as well as
    from the root (more is masked, never less). With ``secret_replace``
    (Kubernetes Secret handling on), the values of the ``data`` and
    ``stringData`` of an object that said ``"kind": "Secret"`` before them
    are replaced by it, as are those of the items of a ``SecretList``. Content rules are not applied (the caller does that)."""
    paths = masker.paths
    if not (paths or b":" in data):
        return data, {}
    counts: Counts = {}
    edits: list[tuple[int, int, bytes]] = []
    stack: list[_Frame] = []
    top_states: frozenset[Any] = paths.start() if paths else frozenset()
    key_rules: KeyRules = {}
    for m in _TOKEN.finditer(data):
        tok = m.group()
        c = tok[:1]
        frame = stack[-1] if stack else None
        if c == b":":
            if frame is not None and frame.is_obj:
                frame.want_key = False
        elif c == b",":
            if frame is not None:
                if frame.is_obj:
                    frame.want_key, frame.key = True, None
                else:
                    frame.index += 1
        elif c in b"}]":
            if stack:
                stack.pop()
        elif c == b"{" or c == b"[":
            states, rid, _ = _position(masker, frame, top_states, key_rules)
            # where garbage came before, any object or array may be a
            # document's root: JSON paths are matched from it too
            child = _Frame(c == b"{", states | top_states if frame else states, rid)
            if frame is not None and frame.secret and secret_replace is not None:
                child.secret_data = {"data": 1, "stringData": 2}.get(frame.key or "", 0)
            elif frame is not None and frame.secret_list == 1 and frame.key == "items":
                child.secret_list = 2
            elif frame is not None and frame.secret_list == 2 and c == b"{":
                child.secret = True
            stack.append(child)
        elif frame is not None and frame.is_obj and frame.want_key:
            if c == b'"':
                frame.key = _loose_string(tok).decode("utf-8", "replace")
        else:
            if frame is not None and frame.is_obj and frame.key == "kind":
                if tok == b'"Secret"':
                    frame.secret = True
                elif tok == b'"SecretList"':
                    frame.secret_list = 1
            new: bytes | None
            if frame is not None and frame.secret_data and secret_replace is not None and c == b'"':
                new = _secret_value(tok, frame.secret_data == 1, secret_replace, counts)
            elif secret_replace is not None and c == b'"' and _secret_last_applied(stack):
                # a JSON copy of the Secret, which this scan does not parse: all of it
                new = _secret_value(tok, False, secret_replace, counts)
            else:
                states, rid, secret_name = _position(masker, frame, top_states, key_rules)
                new = _loose_value(masker, tok, rid, secret_name, counts)
            if new is not None:
                edits.append((m.start(), m.end(), new))
    edits.extend(_keyed_values(masker, data, edits, counts, key_rules))
    return _apply(data, edits), counts


def _secret_last_applied(stack: list[_Frame]) -> bool:
    """The scan is at the value of a Secret's last-applied annotation."""
    return (
        len(stack) >= 3
        and stack[-1].key == _LAST_APPLIED
        and stack[-2].key == "annotations"
        and stack[-3].key == "metadata"
        and stack[-3].secret
    )


def _apply(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """``data`` with the (start, end, replacement) edits made (they do not overlap)."""
    if not edits:
        return data
    edits.sort()
    out, last = [], 0
    for a, b, new in edits:
        out.append(data[last:a])
        out.append(new)
        last = b
    out.append(data[last:])
    return b"".join(out)


class KeyedRun(StreamMasker):
    """The content stream for a run of lines of line-delimited JSON that do
    not open an object or array (``JsonLinesMasker``): each line gets the
    quote-parity-free ``"key": value`` scan of ``_keyed_values`` before the
    content stream masker, so the ``"password": "x",`` line of a
    pretty-printed document in an NDJSON stream is masked by its key as in
    an ``application/json`` body. ``JsonLinesMasker`` feeds whole lines
    (bar lines over its limit; a ``"key": value`` cut there gets content
    rules only). Key masks are counted in ``counts`` with the content ones."""

    def __init__(self, masker: Any) -> None:
        super().__init__(masker)
        self._keys_of = masker

    def feed(self, data: bytes) -> bytes:
        if b":" in data:
            data = _apply(data, _keyed_values(self._keys_of, data, [], self.counts))
        return super().feed(data)


_KEY_VALUE = re.compile(
    rb'"((?:[^"\\\n]|\\[^\n])*)"[ \t\r\n]*:[ \t\r\n]*'
    rb'("(?:[^"\\\n]|\\[^\n])*(?:"|(?=\n)|\\?\Z)|[^{}\[\]:,"\ \t\r\n]+)'
)


def _keyed_values(
    masker: Any,
    data: bytes,
    done: list[tuple[int, int, bytes]],
    counts: Counts,
    key_rules: KeyRules | None = None,
) -> list[tuple[int, int, bytes]]:
    """Second pass of ``mask_keys_loosely``: every ``"key": value`` whose key
    a field rule or a secret key name masks, found wherever it starts. A
    stray quote in garbage shifts which quotes open strings for the token
    scan; a search that tries every position does not depend on that. Spans
    the first pass replaced are left alone."""
    # ``done`` and the matches both come in order and without overlaps of
    # their own: one pointer finds the edit of ``done`` a match could overlap
    taken = sorted((a, b) for a, b, _ in done)
    i, n = 0, len(taken)
    more: list[tuple[int, int, bytes]] = []
    for m in _KEY_VALUE.finditer(data):
        a, b = m.span(2)
        while i < n and taken[i][1] <= a:
            i += 1
        if i < n and taken[i][0] < b:
            continue
        key = _loose_string(b'"' + m.group(1) + b'"').decode("utf-8", "replace")
        rid, secret_name = _key_rule(masker, key, key_rules if key_rules is not None else {})
        new = _loose_value(masker, m.group(2), rid, secret_name, counts)
        if new is not None:
            more.append((a, b, new))
    return more


KeyRules = dict[str, tuple[str | None, bool]]
"""Per scan: a key name's field rule and whether it is a secret key name
(the same keys come back in every object of a body)."""


def _key_rule(masker: Any, key: str, cache: KeyRules) -> tuple[str | None, bool]:
    hit = cache.get(key)
    if hit is None:
        rid = masker.field_rule(key)
        hit = cache[key] = (rid, rid is None and masker.secret_key_name(key))
    return hit


def _position(
    masker: Any, frame: _Frame | None, top: frozenset[Any], key_rules: KeyRules
) -> tuple[frozenset[Any], str | None, bool]:
    """(path states, replacing rule, secret key name?) of the value at the
    scan's position, decided as ``JsonMasker._walk`` decides."""
    if frame is None:
        return top, None, False
    states: frozenset[Any] = frozenset()
    hit = None
    if frame.is_obj:
        key = frame.key
        if key is None:
            return states, frame.rid, False
        if frame.states:
            states, hit = masker.paths.child(frame.states, key)
        rid = frame.rid or hit
        if rid is not None:
            return states, rid, False
        rid, secret_name = _key_rule(masker, key, key_rules)
        return states, rid, secret_name
    if frame.states:
        states, hit = masker.paths.child(frame.states, frame.index)
    return states, frame.rid or hit, False


def _loose_string(tok: bytes) -> bytes:
    """The value of a string token (maybe cut short), as the walk would see it."""
    if b"\\" not in tok:
        return tok[1:-1] if tok.endswith(b'"') and len(tok) > 1 else tok[1:]
    if tok.endswith(b'"') and len(tok) > 1:
        try:
            return str(json.loads(tok)).encode("utf-8", "surrogatepass")
        except (ValueError, UnicodeDecodeError):
            pass
    return tok[1:].rstrip(b'"')


def _loose_value(masker: Any, tok: bytes, rid: str | None, secret_name: bool, counts: Counts) -> bytes | None:
    """The replacement of one scalar token, or None to keep it."""
    if rid is None and not secret_name:
        return None
    is_str = tok[:1] == b'"'
    if not is_str and tok == b"null":
        return None
    raw = _loose_string(tok) if is_str else tok
    if rid is not None:
        new = masker.replace_value(rid, raw)
        counts[rid] = counts.get(rid, 0) + 1
    else:
        if not is_str and tok in (b"true", b"false"):
            return None
        if looks_masked(raw):
            return None
        new = masker.replace_secret_value(raw)
        counts[KV_ID] = counts.get(KV_ID, 0) + 1
    return json.dumps(new.decode("utf-8", "replace"), ensure_ascii=False).encode()


def _secret_value(
    tok: bytes, b64: bool, secret_replace: Callable[[bytes], bytes], counts: Counts
) -> bytes:
    """A value of a Secret's data (base64) or stringData, replaced as
    ``JsonMasker._secret_data`` replaces it."""
    raw = _loose_string(tok)
    if b64:
        with contextlib.suppress(binascii.Error, ValueError):  # not base64: replaced as it is
            raw = base64.b64decode(raw, validate=True)
    new = secret_replace(raw)
    counts[SECRET_RULE] = counts.get(SECRET_RULE, 0) + 1
    text = base64.b64encode(new).decode() if b64 else new.decode("utf-8", "replace")
    return json.dumps(text, ensure_ascii=False).encode()


def _add_counts(into: Counts, found: Any) -> None:
    for k, n in found.items():
        into[k] = into.get(k, 0) + n


def has_structural_rules(masker: Any) -> bool:
    return bool(masker.paths or masker._field_rules)


_SURROGATE_ESCAPES = re.compile(
    rb"(\\\\)"  # an escaped backslash (keeps the scan on escape boundaries)
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"  # a pair: one character
    rb"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"  # a lone surrogate
)


def replace_lone_surrogates(data: bytes) -> bytes:
    """JSON text with each lone surrogate escape (``\\ud800`` with no low
    surrogate after it, or a lone low one) written as ``\\ufffd``."""

    def fix(m: re.Match[bytes]) -> bytes:
        text = m.group()
        return text if m.group(1) is not None or len(text) == 12 else b"\\ufffd"

    return _SURROGATE_ESCAPES.sub(fix, data)


class BodyMasker:
    """``feed(bytes) -> bytes`` / ``finish() -> bytes`` for one response body."""

    __slots__ = (
        "_buf", "_decoder", "_docs", "_json_cap", "_masker", "_scrub", "_size", "_stream", "_text",
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
            self._stream = self._docs.lines()
        self._scrub: InjectedScrubber | None = None
        """A body relayed as it is: the injected secrets still blanked out."""
        if not transforms and masker is not None and masker.injects:
            self._scrub = InjectedScrubber(masker)

    @property
    def buffering(self) -> bool:
        """True while the whole body is being collected (JSON): the head waits."""
        return self.mode == "json"

    def _add(self, counts: Counts) -> None:
        for k, n in counts.items():
            self.counts[k] = self.counts.get(k, 0) + n

    @property
    def pending(self) -> bool:
        """Compressed input is waiting to be decoded: ``feed(b"")`` goes on
        with it (``DECODE_STEP`` at a time), ``finish`` only after it."""
        decoder = self._decoder
        return decoder is not None and decoder.pending

    def feed(self, data: bytes) -> bytes:
        """The masked bytes of ``data`` (what may go out so far); a
        compressed body is decoded ``DECODE_STEP`` bytes at a time, the rest
        of ``data`` kept (``pending``)."""
        if not self._transforms:
            return data if self._scrub is None else self._scrubbed(data, False)
        if self._text is None:
            return self._feed(data)
        return self._text.from_utf8(self._feed(data))

    def _scrubbed(self, data: bytes, final: bool) -> bytes:
        scrub = self._scrub
        assert scrub is not None
        out = scrub.feed(data, final)
        if scrub.counts:
            self._add(scrub.counts)
            scrub.counts = {}
        return out

    def finish(self) -> bytes:
        if not self._transforms:
            return b"" if self._scrub is None else self._scrubbed(b"", True)
        head = b""
        if self.pending:  # decoded at once: callers bound memory by feeding b"" first
            parts = []
            while self.pending:
                parts.append(self.feed(b""))
            head = b"".join(parts)
        if self._text is None:
            return head + self._finish()
        return head + self._text.from_utf8(self._finish(), final=True)

    def _feed(self, data: bytes) -> bytes:
        if self._decoder is not None:
            data = self._decoder.feed(data, DECODE_STEP)
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
            # a bounded step: a 64 KiB prefix of a gzip bomb is ~64 MiB
            # decoded (br far more), and the recording keeps a prefix anyway
            decoded = dec.feed(data, DECODE_STEP)
            data = decoded if dec.pending else decoded + dec.flush()
        except (BodyDecodeError, OSError):
            return b"[undecodable compressed body not recorded]", {}
    kind = body_kind(content_type)
    if kind == "json":
        return (docs if docs is not None else JsonDocuments(masker)).mask(data)
    if kind == "ndjson":
        lm = (docs if docs is not None else JsonDocuments(masker)).lines()
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
    except RecursionError:
        return {"type": "nested-too-deep"}
    if isinstance(obj, dict):
        keys = sorted(str(k) for k in obj)
        return {"type": "object", "keys": keys[:32], "key_count": len(keys)}
    if isinstance(obj, list):
        return {"type": "array", "length": len(obj)}
    return {"type": type(obj).__name__}
