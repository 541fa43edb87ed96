"""A schema-less reader for Kubernetes protobuf bodies (sans-IO).

kubectl's typed clients (``kubectl create secret``, ``kubectl run``...) send
request bodies as ``application/vnd.kubernetes.protobuf``: the 4-byte magic
``k8s\\x00`` then a ``runtime.Unknown`` message::

    Unknown  { TypeMeta typeMeta = 1; bytes raw = 2; string contentEncoding = 3; string contentType = 4 }
    TypeMeta { string apiVersion = 1; string kind = 2 }

Every top-level object carries its ``ObjectMeta`` as field 1 (name = 1,
generateName = 2, namespace = 3, labels = 11, annotations = 12). That is all
the gateway needs to name the object in a command; the rest of the body is
not interpreted (see risk.py for how uninspectable pod specs are scored).

The reader never raises on garbage: it returns None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


class ProtoError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ProtoError("truncated varint")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; length-delimited values are bytes."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = _varint(data, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtoError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((num, wire, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > n:
                raise ProtoError("truncated field")
            out.append((num, wire, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            if pos + 8 > n:
                raise ProtoError("truncated fixed64")
            out.append((num, wire, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == 5:
            if pos + 4 > n:
                raise ProtoError("truncated fixed32")
            out.append((num, wire, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ProtoError(f"unsupported wire type {wire}")
    return out


def _str(value: int | bytes) -> str:
    if isinstance(value, int):
        raise ProtoError("expected a string")
    return value.decode("utf-8", "replace")


def _map(entries: list[bytes]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for entry in entries:
        key = b""
        val = b""
        for num, _, v in fields(entry):
            if isinstance(v, bytes):
                if num == 1:
                    key = v
                elif num == 2:
                    val = v
        out[key.decode("utf-8", "replace")] = val
    return out


@dataclass
class ProtoObject:
    api_version: str = ""
    kind: str = ""
    name: str = ""
    generate_name: str = ""
    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    """The object's own message (after the envelope)."""

    def fields(self) -> list[tuple[int, int, int | bytes]]:
        return fields(self.raw)


def decode(body: bytes) -> ProtoObject | None:
    """Envelope, type and ObjectMeta of a protobuf body; None if it is not one."""
    try:
        return _decode(body)
    except (ProtoError, UnicodeDecodeError):
        return None


def _decode(body: bytes) -> ProtoObject:
    if not body.startswith(MAGIC):
        raise ProtoError("no k8s protobuf magic")
    obj = ProtoObject()
    for num, _, value in fields(body[len(MAGIC) :]):
        if num == 1 and isinstance(value, bytes):
            for n2, _, v2 in fields(value):
                if n2 == 1:
                    obj.api_version = _str(v2)
                elif n2 == 2:
                    obj.kind = _str(v2)
        elif num == 2 and isinstance(value, bytes):
            obj.raw = value
    # ObjectMeta given twice is merged, as by Go's generated Unmarshal
    labels: list[bytes] = []
    annotations: list[bytes] = []
    for num, _, value in fields(obj.raw):
        if num != 1 or not isinstance(value, bytes):
            continue
        for n2, _, v2 in fields(value):
            if n2 == 1:
                obj.name = _str(v2)
            elif n2 == 2:
                obj.generate_name = _str(v2)
            elif n2 == 3:
                obj.namespace = _str(v2)
            elif n2 == 11 and isinstance(v2, bytes):
                labels.append(v2)
            elif n2 == 12 and isinstance(v2, bytes):
                annotations.append(v2)
    obj.labels = {k: v.decode("utf-8", "replace") for k, v in _map(labels).items()}
    obj.annotations = {k: v.decode("utf-8", "replace") for k, v in _map(annotations).items()}
    return obj


def string_maps(raw: bytes, number: int) -> dict[str, bytes]:
    """The ``map<string, string|bytes>`` field ``number`` of a message."""
    try:
        return _map([v for n, _, v in fields(raw) if n == number and isinstance(v, bytes)])
    except ProtoError:
        return {}


def string_field(raw: bytes, number: int) -> str:
    try:
        for n, _, v in fields(raw):
            if n == number and isinstance(v, bytes):
                return v.decode("utf-8", "replace")
    except ProtoError:
        pass
    return ""


def rbac_fields(obj: ProtoObject) -> dict[str, object]:
    """``roleRef`` of (Cluster)RoleBindings and ``rules`` of (Cluster)Roles:
    RoleBinding{subjects = 2, roleRef = 3}, RoleRef{apiGroup = 1, kind = 2,
    name = 3}; Role{rules = 2}, PolicyRule{verbs = 1, apiGroups = 2, resources = 3}."""
    try:
        if obj.kind in ("RoleBinding", "ClusterRoleBinding"):
            # as Go's generated Unmarshal reads it: a message field given twice
            # is merged into one, a string field's last value wins (the first
            # roleRef naming "view", a second naming "cluster-admin", is a
            # cluster-admin binding)
            ref: dict[str, str] = {}
            for n, _, v in fields(obj.raw):
                if n == 3 and isinstance(v, bytes):
                    for n2, _, v2 in fields(v):
                        key = {2: "kind", 3: "name"}.get(n2)
                        if key and isinstance(v2, bytes):
                            ref[key] = v2.decode("utf-8", "replace")
            if ref:
                return {"roleRef": {"kind": ref.get("kind", ""), "name": ref.get("name", "")}}
        if obj.kind in ("Role", "ClusterRole"):
            rules = []
            for n, _, v in fields(obj.raw):
                if n == 2 and isinstance(v, bytes):
                    rule: dict[str, list[str]] = {"verbs": [], "apiGroups": [], "resources": []}
                    for n2, _, v2 in fields(v):
                        key = {1: "verbs", 2: "apiGroups", 3: "resources"}.get(n2)
                        if key and isinstance(v2, bytes):
                            rule[key].append(v2.decode("utf-8", "replace"))
                    rules.append(rule)
            return {"rules": rules}
    except ProtoError:
        pass
    return {}
