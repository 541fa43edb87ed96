"""JSON masking: by key name (field rules), by JSON path, and by content.

Kubernetes awareness: an object with ``kind: Secret`` has its ``data`` values
(base64) and ``stringData`` values replaced (``kubernetes_secrets: replace``,
the default) or decoded, content-masked and re-encoded (``mask``). The
``kubectl.kubernetes.io/last-applied-configuration`` annotation of a Secret (a
JSON copy of it) is masked the same way; so are the items of a
``SecretList``, which the API server sends without a ``kind``. Lists, watch events (``{"type":…,
"object":…}``) and ``Table`` responses are walked like any other JSON, so a
Secret anywhere inside is found.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .engine import KV_ID, Counts, _replacement_for
from .paths import State
from .replacements import looks_masked, make_replacer
from .stream import StreamMasker

if TYPE_CHECKING:
    from .engine import Masker

SECRET_RULE = "kubernetes_secret"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _add(counts: Counts, rid: str, n: int = 1) -> None:
    counts[rid] = counts.get(rid, 0) + n


class JsonMasker:
    def __init__(self, masker: Masker) -> None:
        self._m = masker
        self._secret_mode = masker.config.kubernetes_secrets if masker.config.enabled else "off"
        self._secret_replace = make_replacer(
            _replacement_for(masker.config, SECRET_RULE, "credential"), "SECRET", masker._hmac_key
        )
        self._paths = masker.paths

    @property
    def secret_replacer(self) -> Callable[[bytes], bytes] | None:
        """The replacement of a Kubernetes Secret's data values, or None when
        Secret handling is off (for scans of JSON that does not parse)."""
        return self._secret_replace if self._secret_mode != "off" else None

    @property
    def active(self) -> bool:
        """False when no JSON could change: no content/field/path rules and
        Kubernetes Secret handling off (``Masker.active`` does not cover Secrets)."""
        return self._m.active or self._secret_mode != "off"

    @property
    def has_paths(self) -> bool:
        """JSON path rules exist: where a value sits matters, not only its key."""
        return bool(self._paths)

    # -------------------------------------------------------------- objects
    def mask_item(self, item: Any, list_kind: Any) -> tuple[Any, Counts]:
        """``item`` masked as ``mask_obj`` masks it as one of the ``items`` of
        a document of kind ``list_kind``. Only without JSON path rules
        (``has_paths``), as those depend on the position in the document."""
        assert not self._paths, "JSON path rules: mask the whole document"
        counts: Counts = {}
        secrets = self._secret_mode != "off" and list_kind == "SecretList"
        return self._walk(item, frozenset(), counts, secrets), counts

    def mask_obj(self, obj: Any) -> tuple[Any, Counts]:
        counts: Counts = {}
        out = self._walk(obj, self._paths.start() if self._paths else frozenset(), counts)
        return out, counts

    def _replace_all(self, node: Any, rid: str, counts: Counts) -> Any:
        if isinstance(node, dict):
            return {k: self._replace_all(v, rid, counts) for k, v in node.items()}
        if isinstance(node, list):
            return [self._replace_all(v, rid, counts) for v in node]
        if node is None:
            return None
        raw = node.encode() if isinstance(node, str) else json.dumps(node).encode()
        _add(counts, rid)
        return self._m.replace_value(rid, raw).decode("utf-8", "replace")

    def _scalar(self, node: Any, counts: Counts) -> Any:
        m = self._m
        if isinstance(node, str):
            if not m.scans_content:
                return node
            out, c = m.mask_text(node)
            for k, n in c.items():
                _add(counts, k, n)
            return out
        if (
            isinstance(node, int)
            and not isinstance(node, bool)
            and m.scans_content
            and abs(node) >= 1000000
        ):
            text = str(node)
            out, c = m.mask_text(text)
            if c:
                for k, n in c.items():
                    _add(counts, k, n)
                return out
        return node

    def _walk(
        self, node: Any, states: frozenset[State], counts: Counts, secrets: bool = False
    ) -> Any:
        """``secrets``: ``node`` is a SecretList's ``items`` (or one of them)."""
        if isinstance(node, dict):
            kind = node.get("kind")
            on = self._secret_mode != "off"
            # The API server leaves kind out of a list's items: a SecretList's are Secrets.
            secret = on and (kind == "Secret" or (secrets and kind is None))
            secret_list = on and kind == "SecretList"
            out: dict[str, Any] = {}
            for k, v in node.items():
                child_states: frozenset[State] = frozenset()
                hit = None
                if states:
                    child_states, hit = self._paths.child(states, k)
                rid = hit or (self._m.field_rule(k) if isinstance(k, str) else None)
                if rid is not None:
                    out[k] = self._replace_all(v, rid, counts)
                elif (
                    isinstance(v, str | int | float)
                    and not isinstance(v, bool)
                    and isinstance(k, str)
                    and self._m.secret_key_name(k)
                ):
                    raw = v.encode() if isinstance(v, str) else str(v).encode()
                    if looks_masked(raw):
                        out[k] = v
                    else:
                        out[k] = self._m.replace_secret_value(raw).decode("utf-8", "replace")
                        _add(counts, KV_ID)
                elif secret and k in ("data", "stringData") and isinstance(v, dict):
                    out[k] = self._secret_data(v, k == "data", counts)
                elif secret and k == "metadata" and isinstance(v, dict):
                    out[k] = self._secret_metadata(v, child_states, counts)
                elif secret_list and k == "items" and isinstance(v, list):
                    out[k] = self._walk(v, child_states, counts, secrets=True)
                else:
                    out[k] = self._walk(v, child_states, counts)
            return out
        if isinstance(node, list):
            res = []
            for i, v in enumerate(node):
                child_states = frozenset()
                hit = None
                if states:
                    child_states, hit = self._paths.child(states, i)
                res.append(
                    self._replace_all(v, hit, counts)
                    if hit
                    else self._walk(v, child_states, counts, secrets and isinstance(v, dict))
                )
            return res
        return self._scalar(node, counts)

    def _secret_data(self, data: dict[str, Any], b64: bool, counts: Counts) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in data.items():
            if not isinstance(v, str):
                out[k] = v
                continue
            if b64:
                try:
                    raw = base64.b64decode(v, validate=True)
                except (binascii.Error, ValueError):
                    raw = v.encode()
            else:
                raw = v.encode()
            if self._secret_mode == "replace":
                new = self._secret_replace(raw)
                _add(counts, SECRET_RULE)
            else:
                new, c = self._m.mask_value(raw)
                for rk, n in c.items():
                    _add(counts, rk, n)
                if not c:
                    out[k] = v
                    continue
            out[k] = base64.b64encode(new).decode() if b64 else new.decode("utf-8", "replace")
        return out

    def _secret_metadata(
        self, meta: dict[str, Any], states: frozenset[State], counts: Counts
    ) -> Any:
        ann = meta.get("annotations")
        if not (isinstance(ann, dict) and isinstance(ann.get(LAST_APPLIED), str)):
            return self._walk(meta, states, counts)
        # The last-applied annotation is a JSON copy of the Secret: mask it as one.
        raw = ann[LAST_APPLIED]
        try:
            masked, c = self.mask_obj(json.loads(raw))
            for k, n in c.items():
                _add(counts, k, n)
            new = json.dumps(masked, separators=(",", ":")) if c else raw
        except ValueError:
            new = self._secret_replace(raw.encode()).decode()
            _add(counts, SECRET_RULE)
        rest = {k: v for k, v in ann.items() if k != LAST_APPLIED}
        out = self._walk({**meta, "annotations": rest}, states, counts)
        if isinstance(out, dict) and isinstance(out.get("annotations"), dict):
            out["annotations"][LAST_APPLIED] = new
        return out

    # -------------------------------------------------------------- documents
    def mask_document(self, data: bytes) -> tuple[bytes, Counts]:
        """Mask a JSON document. Unchanged documents are returned byte for byte;
        changed ones are re-serialized compactly. Non-JSON falls back to content masking."""
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            # (RecursionError: nested deeper than the parser goes)
            return self._m.mask_bytes(data)
        try:
            out, counts = self.mask_obj(obj)
        except RecursionError:  # ... or than the walk goes
            return self._m.mask_bytes(data)
        if not counts:
            return data, counts
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode(), counts

    def lines(self, max_line: int = 64 << 20) -> JsonLinesMasker:
        return JsonLinesMasker(self.mask_document, self._m.stream, max_line)


DocumentMasker = Callable[[bytes], tuple[bytes, Counts]]


def _looks_like_document(line: bytes) -> bool:
    """A line masked as a JSON document: one that opens an object or array.
    Other lines (log text, the lines of a PEM block) are content, and a run of
    them is masked together, so a value that spans lines is still found."""
    head = line.lstrip()[:1]
    return head == b"{" or head == b"["


class JsonLinesMasker:
    """Line-delimited JSON (watch streams, ``application/x-ndjson``, log
    exports): ``feed(bytes) -> bytes``, ``flush() -> bytes``.

    Each complete line that opens an object or array is masked as a document
    by ``document`` (key and path rules apply; it falls back to content rules
    when the line does not parse) and released at its newline. Runs of other
    lines go through one content stream masker, flushed when the run ends: a
    PEM private key printed over several lines is masked as it would be in a
    whole buffer, not line by line (which would let its body lines through).

    A line longer than ``max_line`` is not buffered further: with
    ``long_line_error`` a ValueError is raised (a Kubernetes watch event must
    be masked as a document or not at all); otherwise the rest of the line is
    content-masked as part of a run.

    ``counts`` adds up everything masked; ``take_counts()`` returns what was
    masked since it was last called (released or not yet released)."""

    def __init__(
        self,
        document: DocumentMasker,
        content: Callable[[], StreamMasker],
        max_line: int,
        long_line_error: bool = False,
    ) -> None:
        self._document = document
        self._content = content
        self._max = max_line
        self._long_line_error = long_line_error
        self._buf = b""
        self._run: StreamMasker | None = None
        self._run_seen: Counts = {}
        self._in_long_line = False
        self.counts: Counts = {}
        self._fresh: Counts = {}

    def _add(self, c: Counts) -> None:
        for k, n in c.items():
            _add(self.counts, k, n)
            _add(self._fresh, k, n)

    def take_counts(self) -> Counts:
        self._sync_run_counts()
        fresh, self._fresh = self._fresh, {}
        return fresh

    def _sync_run_counts(self) -> None:
        run = self._run
        if run is None:
            return
        seen = self._run_seen
        for k, n in run.counts.items():
            new = n - seen.get(k, 0)
            if new:
                seen[k] = n
                _add(self.counts, k, new)
                _add(self._fresh, k, new)

    def _to_run(self, data: bytes) -> bytes:
        if self._run is None:
            self._run = self._content()
            self._run_seen = {}
        out = self._run.feed(data)
        self._sync_run_counts()
        return out

    def _end_run(self) -> bytes:
        run = self._run
        if run is None:
            return b""
        tail = run.flush()
        self._sync_run_counts()
        self._run = None
        return tail

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self._in_long_line:
            nl = data.find(b"\n")
            if nl < 0:
                return self._to_run(data)
            out.append(self._to_run(data[: nl + 1]))
            self._in_long_line = False
            data = data[nl + 1 :]
        buf = self._buf + data if self._buf else data
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            line = buf[start:nl]
            if _looks_like_document(line):
                out.append(self._end_run())
                masked, c = self._document(line)
                self._add(c)
                out.append(masked)
                out.append(b"\n")
            elif self._run is None and not line.strip():
                out.append(line + b"\n")
            else:
                out.append(self._to_run(buf[start : nl + 1]))
            start = nl + 1
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            if self._long_line_error:
                raise ValueError(f"a line longer than {self._max} bytes")
            out.append(self._to_run(self._buf))
            self._buf = b""
            self._in_long_line = True
        return b"".join(out)

    def flush(self) -> bytes:
        buf, self._buf = self._buf, b""
        if self._in_long_line or not _looks_like_document(buf):
            self._in_long_line = False
            if self._run is None and not buf.strip():
                return buf
            return self._to_run(buf) + self._end_run()
        tail = self._end_run()  # the last line is a document without its newline
        masked, c = self._document(buf)
        self._add(c)
        return tail + masked
