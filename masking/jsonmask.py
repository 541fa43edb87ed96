"""JSON masking: by key name (field rules), by JSON path, and by content.

Kubernetes awareness: an object with ``kind: Secret`` has its ``data`` values
(base64) and ``stringData`` values replaced (``kubernetes_secrets: replace``,
the default) or decoded, content-masked and re-encoded (``mask``). The
``kubectl.kubernetes.io/last-applied-configuration`` annotation of a Secret (a
JSON copy of it) is masked the same way. Lists, watch events (``{"type":…,
"object":…}``) and ``Table`` responses are walked like any other JSON, so a
Secret anywhere inside is found.
"""

from __future__ import annotations

import base64
import binascii
import json
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
    def active(self) -> bool:
        """False when no JSON could change: no content/field/path rules and
        Kubernetes Secret handling off (``Masker.active`` does not cover Secrets)."""
        return self._m.active or self._secret_mode != "off"

    # -------------------------------------------------------------- objects
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

    def _walk(self, node: Any, states: frozenset[State], counts: Counts) -> Any:
        if isinstance(node, dict):
            secret = self._secret_mode != "off" and node.get("kind") == "Secret"
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
                    else self._walk(v, child_states, counts)
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
        except (ValueError, UnicodeDecodeError):
            return self._m.mask_bytes(data)
        out, counts = self.mask_obj(obj)
        if not counts:
            return data, counts
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode(), counts

    def lines(self, max_line: int = 64 << 20) -> JsonLinesMasker:
        return JsonLinesMasker(self, max_line)


class JsonLinesMasker:
    """Line-delimited JSON (Kubernetes watch streams): ``feed(bytes) -> bytes``, ``flush()``.

    Each complete line is masked as a document. A line longer than ``max_line``
    is not buffered further: the rest of it goes through a content stream masker."""

    def __init__(self, jm: JsonMasker, max_line: int) -> None:
        self._jm = jm
        self._buf = b""
        self._max = max_line
        self._raw: StreamMasker | None = None
        self.counts: Counts = {}

    def _add(self, c: Counts) -> None:
        for k, n in c.items():
            _add(self.counts, k, n)

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        if self._raw is not None:
            nl = data.find(b"\n")
            if nl < 0:
                return self._raw.feed(data)
            out.append(self._raw.feed(data[: nl + 1]) + self._raw.flush())
            self._add(self._raw.counts)
            self._raw = None
            data = data[nl + 1 :]
        buf = self._buf + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            if line.strip():
                masked, c = self._jm.mask_document(line)
                self._add(c)
                out.append(masked + b"\n")
            else:
                out.append(line + b"\n")
            start = nl + 1
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            self._raw = self._jm._m.stream()
            out.append(self._raw.feed(self._buf))
            self._buf = b""
        return b"".join(out)

    def flush(self) -> bytes:
        if self._raw is not None:
            tail = self._raw.flush()
            self._add(self._raw.counts)
            self._raw = None
            return tail
        buf, self._buf = self._buf, b""
        if not buf.strip():
            return buf
        masked, c = self._jm.mask_document(buf)
        self._add(c)
        return masked
