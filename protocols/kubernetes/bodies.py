"""Masking of Kubernetes response bodies: the one place that calls the masker.

On top of the generic JSON masker (``masker.json()``: field rules, JSON paths,
content rules, Secret ``data``/``stringData`` and a Secret's last-applied
annotation), this adds what only a Kubernetes handler knows:

* ``env[].value`` of every container (pods and every pod template), either all
  of them (``options.mask_env: all``, the default) or only those whose variable
  name matches a masking field rule (``rules``);
* ConfigMap ``data``/``binaryData`` values whose key matches
  ``options.configmap_keys`` (globs) or a masking field rule;
* the ``kubectl.kubernetes.io/last-applied-configuration`` annotation of any
  object (it repeats the env values and ConfigMap data), also inside Table rows
  and watch events.

Formats: full objects, lists, Tables (rows[].object, rows[].cells), watch
streams (one event per line, masked and sent as soon as the line is complete),
and plain-text logs through the streaming content masker.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from masking.engine import KV_ID
from masking.jsonmask import JsonLinesMasker
from protocols.http.bodies import mask_keys_loosely
from protocols.kubernetes._slices import SLICED_MIN_BYTES, mask_sliced

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ENV_RULE = "kubernetes_env"
CONFIGMAP_RULE = "kubernetes_configmap"
CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
MASK = "***"

Counts = dict[str, int]
_NONE, _K8S, _FULL = 0, 1, 2
_COLUMN_DEFS = b'"columnDefinitions"'
_COLUMN_NAME = re.compile(rb'"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_NAME_SPACING = re.compile(r"[\s-]+")
CACHE_MAX_DOC = 64 * 1024  # documents up to this size have their masked form cached
CACHE_ENTRIES = 256  # at most 16 MiB of input plus output per connection config


def _add(counts: Counts, rid: str, n: int = 1) -> None:
    counts[rid] = counts.get(rid, 0) + n


class BodyMasker:
    """Per-connection body masking (stateless; share it)."""

    def __init__(self, masker: Any, *, mask_env: str = "all", configmap_keys: Iterable[str] = ()) -> None:
        self.masker = masker
        self.json = masker.json() if masker is not None else None
        self.mask_env = mask_env
        globs = [fnmatch.translate(g.lower()) for g in configmap_keys]
        self._cm = re.compile("|".join(globs)) if globs else None
        self._k8s_triggers: tuple[bytes, ...] = ()
        self._cache: OrderedDict[bytes, tuple[bytes, Counts]] = OrderedDict()
        self._triggers = self._structural_triggers()

    def _structural_triggers(self) -> tuple[bytes, ...] | None:
        """Byte strings whose absence proves a JSON document needs no
        structural masking (no Secret, env, ConfigMap rule, last-applied); None
        when the fast path is unsafe (field/path rules, anchored patterns)."""
        masker = self.masker
        if masker is None:
            return ()
        config = getattr(masker, "config", None)
        rules = getattr(config, "rules", None)
        if rules is None:
            return None
        for rule in rules:
            if getattr(rule, "fields", ()) or getattr(rule, "json_paths", ()):
                return None
            pattern = getattr(rule, "pattern", None) or ""
            if "^" in pattern or "$" in pattern or "\\A" in pattern or "\\z" in pattern:
                return None
        triggers = [b'"Secret"', b'"SecretList"', LAST_APPLIED.encode(), b"\\u"]
        k8s = []
        if self.mask_env != "none":
            k8s.append(b'"env"')
        if self._cm is not None:
            k8s += [b'"ConfigMap"', b'"ConfigMapList"']
        self._k8s_triggers = tuple(k8s)
        return tuple(triggers)

    def _fast_path(self, data: bytes) -> int:
        """How much of the masking a JSON document needs, judged on its raw
        bytes: ``_FULL`` (generic JSON masker and Kubernetes pass), ``_K8S``
        (only the Kubernetes pass: env values / ConfigMap keys; no Secret,
        last-applied or escape marker and no content-rule hit anywhere in the
        raw bytes, a superset of its strings, so the generic walk would change
        nothing), or ``_NONE``."""
        triggers = self._triggers
        if triggers is None:
            return _FULL
        for t in triggers:
            if t in data:
                return _FULL
        if self.masker is not None:
            _, counts = self.masker.mask_bytes(data)
            if counts:
                return _FULL
        for t in self._k8s_triggers:
            if t in data:
                return _K8S
        if _COLUMN_DEFS in data and self._table_names_secret(data):
            return _K8S
        return _NONE

    def _nothing_to_mask(self, data: bytes) -> bool:
        return self._fast_path(data) == _NONE

    # ------------------------------------------------------------ pieces
    def _field_rule(self, name: str) -> str | None:
        if self.masker is None:
            return None
        try:
            return self.masker.field_rule(name)
        except Exception:
            return None

    def _replace(self, rid: str | None, value: str) -> str:
        if rid is not None and self.masker is not None:
            try:
                return self.masker.replace_value(rid, value.encode()).decode("utf-8", "replace")
            except KeyError:
                pass
        return MASK

    def _env(self, container: dict[str, Any], counts: Counts) -> None:
        env = container.get("env")
        if not isinstance(env, list):
            return
        new = []
        for var in env:
            if isinstance(var, dict) and isinstance(var.get("value"), str) and var["value"]:
                rid = self._field_rule(str(var.get("name", "")))
                if rid is not None or self.mask_env == "all":
                    var = {**var, "value": self._replace(rid, var["value"])}
                    _add(counts, rid or ENV_RULE)
            new.append(var)
        container["env"] = new

    def table_columns(self, defs: Any) -> dict[int, str | None]:
        """Index -> field rule id (None: the secret key names' rule) of the
        Table columns whose name names a secret, as a JSON key of that name
        would be masked: a custom resource's printer column showing
        ``spec.password`` is its value in another format. ("API Token" is
        read as ``API_Token``.)"""
        out: dict[int, str | None] = {}
        if not isinstance(defs, list) or self.masker is None:
            return out
        for i, col in enumerate(defs):
            name = col.get("name") if isinstance(col, dict) else None
            if not isinstance(name, str) or not name.strip():
                continue
            key = _NAME_SPACING.sub("_", name.strip())
            rid = self._field_rule(name) or self._field_rule(key)
            if rid is not None:
                out[i] = rid
                continue
            try:
                if self.masker.secret_key_name(key):
                    out[i] = None
            except Exception:
                pass
        return out

    def _table_names_secret(self, data: bytes) -> bool:
        """Whether a Table's column definitions (raw bytes) name a secret."""
        start = data.find(_COLUMN_DEFS)
        end = data.find(b'"rows"', start)
        names = []
        for m in _COLUMN_NAME.finditer(data, start, end if end >= 0 else len(data)):
            try:
                names.append({"name": json.loads(m[1])})
            except ValueError:
                return True  # not understood: the Kubernetes pass decides
        return bool(self.table_columns(names))

    def _table(self, table: dict[str, Any], counts: Counts, columns: dict[int, str | None] | None) -> None:
        """The cells of a Table's sensitive columns (``columns``: those of an
        earlier watch event, when this one carries no definitions)."""
        defs = table.get("columnDefinitions")
        cols = self.table_columns(defs) if isinstance(defs, list) and defs else (columns or {})
        rows = table.get("rows")
        if not cols or not isinstance(rows, list):
            return
        for row in rows:
            cells = row.get("cells") if isinstance(row, dict) else None
            if not isinstance(cells, list):
                continue
            for i, rid in cols.items():
                if i < len(cells) and isinstance(cells[i], str) and cells[i]:
                    if rid is not None:
                        cells[i] = self._replace(rid, cells[i])
                    else:
                        cells[i] = self.masker.replace_secret_value(cells[i].encode()).decode("utf-8", "replace")
                    _add(counts, rid or KV_ID)

    def _configmap(self, obj: dict[str, Any], counts: Counts) -> None:
        for key in ("data", "binaryData"):
            data = obj.get(key)
            if not isinstance(data, dict):
                continue
            out = {}
            for k, v in data.items():
                rid = self._field_rule(str(k))
                if isinstance(v, str) and (rid is not None or (self._cm is not None and self._cm.fullmatch(str(k).lower()))):
                    out[k] = self._replace(rid, v) if key == "data" else "Kioq"  # base64("***")
                    _add(counts, rid or CONFIGMAP_RULE)
                else:
                    out[k] = v
            obj[key] = out

    def prepare(
        self, node: Any, counts: Counts, item_of: Any = None, columns: dict[int, str | None] | None = None
    ) -> Any:
        """The Kubernetes-specific pass (in place, returns node). ``item_of``:
        ``node`` is one of the ``items`` of a document of that kind, and
        gets what the pass of the whole document would give it. ``columns``:
        the sensitive columns of a Table without column definitions (a
        watch's later events)."""
        stack = [node]
        secrets: set[int] = set()
        if isinstance(node, dict) and "kind" not in node:
            if item_of == "ConfigMapList":
                self._configmap(node, counts)
            elif item_of == "SecretList":
                secrets.add(id(node))
        while stack:
            cur = stack.pop()
            if isinstance(cur, list):
                stack.extend(v for v in cur if isinstance(v, dict | list))
                continue
            if not isinstance(cur, dict):
                continue
            if self.mask_env != "none":
                for name in CONTAINER_LISTS:
                    containers = cur.get(name)
                    if isinstance(containers, list):
                        for c in containers:
                            if isinstance(c, dict):
                                self._env(c, counts)
            kind = cur.get("kind")
            items = cur.get("items")
            if kind == "ConfigMap":
                self._configmap(cur, counts)
            elif kind == "Table":
                self._table(cur, counts, columns)
            elif kind in ("ConfigMapList", "SecretList") and isinstance(items, list):
                # The API server leaves kind out of a list's items.
                for item in items:
                    if isinstance(item, dict) and "kind" not in item:
                        if kind == "ConfigMapList":
                            self._configmap(item, counts)
                        else:
                            secrets.add(id(item))  # the generic JSON masker's, as a Secret
            meta = cur.get("metadata")
            if isinstance(meta, dict) and kind != "Secret" and id(cur) not in secrets:
                ann = meta.get("annotations")
                if isinstance(ann, dict) and isinstance(ann.get(LAST_APPLIED), str):
                    ann[LAST_APPLIED] = self._last_applied(ann[LAST_APPLIED], counts)
            stack.extend(v for k, v in cur.items() if k != "metadata" and isinstance(v, dict | list))
        return node

    def _last_applied(self, text: str, counts: Counts) -> str:
        try:
            inner = json.loads(text)
        except ValueError:
            return text  # content rules still scan it as a string
        masked, c = self.mask_obj(inner)
        if not c:
            return text
        for k, n in c.items():
            _add(counts, k, n)
        return json.dumps(masked, separators=(",", ":")) + "\n"

    # ------------------------------------------------------- list slices
    def mask_item(self, item: Any, raw: bytes | None, list_kind: Any) -> tuple[Any, Counts, bool]:
        """One of the ``items`` (``rows``) of a document of kind ``list_kind``
        masked as masking the whole document masks it (``_slices``; JSON path
        rules excluded). ``raw``: its bytes, for its own fast path (None: no
        fast path; the full walk changes nothing the fast path would not).
        Returns the item, its counts, and whether the fast path found it
        needed the full walk."""
        counts: Counts = {}
        # the items of a SecretList or ConfigMapList carry no marker of their own
        level = _FULL if raw is None or list_kind == "SecretList" else self._fast_path(raw)
        if list_kind == "ConfigMapList" and self._cm is not None:
            level = max(level, _K8S)
        if level == _NONE:
            return item, counts, False
        item = self.prepare(item, counts, item_of=list_kind)
        if level == _FULL and self.json is not None:
            item, found = self.json.mask_item(item, list_kind)
            for k, n in found.items():
                _add(counts, k, n)
        return item, counts, level == _FULL

    async def mask_large_document(self, data: bytes) -> tuple[bytes, Counts]:
        """``mask_document``, giving the event loop back between slices of a
        large list (``_slices``)."""
        if len(data) >= SLICED_MIN_BYTES:
            done = await mask_sliced(self, data)
            if done is not None:
                return done
        return self.mask_document(data)

    # ------------------------------------------------------------ public
    def mask_obj(self, obj: Any, columns: dict[int, str | None] | None = None) -> tuple[Any, Counts]:
        counts: Counts = {}
        obj = self.prepare(obj, counts, columns=columns)
        if self.json is not None:
            obj, c = self.json.mask_obj(obj)
            for k, n in c.items():
                _add(counts, k, n)
        return obj, counts

    def mask_document(self, data: bytes, columns: dict[int, str | None] | None = None) -> tuple[bytes, Counts]:
        """A JSON document (object, list, Table, Status). Unchanged documents
        are returned as they came. ``columns``: see ``prepare``.

        Results for small documents are remembered (keyed by the exact bytes;
        masking is a pure function of them): kubectl, k9s and controllers poll
        the same objects and lists over and over."""
        if columns:
            return self._mask_document(data, columns)
        if len(data) > CACHE_MAX_DOC:
            return self._mask_document(data)
        cache = self._cache
        hit = cache.get(data)
        if hit is not None:
            cache.move_to_end(data)
            return hit[0], dict(hit[1])
        out, counts = self._mask_document(data)
        cache[data] = (out, dict(counts))
        if len(cache) > CACHE_ENTRIES:
            cache.popitem(last=False)
        return out, counts

    def _mask_document(self, data: bytes, columns: dict[int, str | None] | None = None) -> tuple[bytes, Counts]:
        level = self._fast_path(data)
        if columns:
            level = max(level, _K8S)
        if level == _NONE:
            return data, {}
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return self._mask_unparsable(data)
        except RecursionError:
            return self._mask_too_deep(data)
        try:
            if level == _K8S:
                counts: Counts = {}
                out = self.prepare(obj, counts, columns=columns)
            else:
                out, counts = self.mask_obj(obj, columns)
        except RecursionError:
            return self._mask_too_deep(data)
        if not counts:
            return data, counts
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode(), counts

    def _mask_too_deep(self, data: bytes) -> tuple[bytes, Counts]:
        """A document nested deeper than the parser or the walk go (a
        thousand levels, which a user can put in a custom resource to break
        every read of it): key, path and Secret rules by the tolerant scan,
        which keeps its own stack, then the content rules."""
        if self.masker is None:
            return data, {}
        secret = self.json.secret_replacer if self.json is not None else None
        keyed, counts = mask_keys_loosely(self.masker, data, secret)
        out, found = self.mask_bytes(keyed)
        for k, n in found.items():
            _add(counts, k, n)
        return out, counts

    def _mask_unparsable(self, data: bytes) -> tuple[bytes, Counts]:
        """A body that is not one JSON document. Several lines (watch events
        the gateway did not expect, any newline-delimited JSON) are masked
        line by line as documents: content rules alone would pass a Secret's
        base64 ``data`` in clear. Anything else gets the content rules."""
        if b"\n" not in data.strip():
            return self.mask_bytes(data)
        lines = LinesMasker(self)
        out, counts = lines.feed(data)
        tail, more = lines.flush()
        for k, n in more.items():
            _add(counts, k, n)
        return out + tail, counts

    def mask_bytes(self, data: bytes) -> tuple[bytes, Counts]:
        if self.masker is None:
            return data, {}
        out, counts = self.masker.mask_bytes(data)
        return out, dict(counts)

    def lines(self) -> LinesMasker:
        return LinesMasker(self)

    def stream(self) -> Any:
        """A content stream masker (``feed``/``flush``/``counts``) for logs and terminals."""
        return self.masker.stream() if self.masker is not None else _NullStream()


class LinesMasker:
    """Watch streams: newline-delimited JSON events, each masked as a document
    and released as soon as its newline arrives (masking's JsonLinesMasker
    with this connection's Kubernetes-aware document masker; lines that are
    not documents are content-masked in runs). An event over 64 MiB is an
    error rather than content-masked: a Secret's base64 data needs the
    document pass."""

    MAX_LINE = 64 * 1024 * 1024

    def __init__(self, bm: BodyMasker) -> None:
        self._bm = bm
        self._columns: dict[int, str | None] = {}
        """Sensitive columns of this watch's Table: only its first event says them."""
        self._lines = JsonLinesMasker(self._document, bm.stream, self.MAX_LINE, long_line_error=True)

    def _document(self, line: bytes) -> tuple[bytes, Counts]:
        if _COLUMN_DEFS in line:
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                event = None
            table = event.get("object") if isinstance(event, dict) else None
            if isinstance(table, dict) and table.get("kind") == "Table":
                defs = table.get("columnDefinitions")
                if isinstance(defs, list) and defs:
                    self._columns = self._bm.table_columns(defs)
                elif self._columns:
                    return self._bm.mask_document(line, self._columns)
        return self._bm.mask_document(line)

    def feed(self, data: bytes) -> tuple[bytes, Counts]:
        out = self._lines.feed(data)
        return out, self._lines.take_counts()

    def flush(self) -> tuple[bytes, Counts]:
        out = self._lines.flush()
        return out, self._lines.take_counts()


class _NullStream:
    def __init__(self) -> None:
        self.counts: Counts = {}

    def feed(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""
