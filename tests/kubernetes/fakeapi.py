"""A Kubernetes-API-compatible test server, faithful enough for the real kubectl.

No kube-apiserver can be installed on these machines, so this carries the parts
kubectl touches for get/describe/apply/delete/exec/logs -f/get -w/scale:

* discovery: ``/version`` (minor pinned, kubectl is a version dispatcher),
  ``/api``, ``/apis`` (legacy and aggregated v2), ``/api/v1``, ``/apis/apps/v1``,
  a minimal ``/openapi/v3`` so that ``kubectl apply`` can use server-side field
  validation;
* CRUD with resourceVersion (conflicts, AlreadyExists, NotFound) for pods,
  secrets, configmaps, namespaces, events (empty) and deployments (+ scale);
* Table output (``Accept: ...;as=Table``), label/field selectors (name only);
* watch (newline-delimited events, replay from a resourceVersion, Table events);
* logs (``follow=true`` streams appended lines);
* exec over websocket ``v5.channel.k8s.io``/``v4.channel.k8s.io`` running a real
  subprocess (a pty with ``tty=true``, resizes applied), exit codes as a Status
  on channel 3; refused as the API server refuses it (pod not found, container
  not valid, no host assigned: a Status; a container not running: the
  kubelet's text), on the websocket and on kubectl's SPDY retry alike.

Run standalone: ``python -m tests.kubernetes.fakeapi --port 6443 --tls-dir DIR``.
In tests: ``with FakeApiServer(tmp) as api: api.url``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import datetime as dt
import fcntl
import json
import os
import pty
import ssl
import struct
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict

from hoopd.tls import cert_pem, generate_ca, issue_certificate
from protocols.kubernetes._proto import PROTOBUF, decode, fields, string_field, string_maps

MINOR = "32"
JSON = "application/json"


# ---------------------------------------------------------------- resources
@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    resource: str
    kind: str
    singular: str
    namespaced: bool
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
KINDS = [
    Kind("", "v1", "pods", "Pod", "pod", True, ("po",), ("log", "exec", "attach", "portforward", "status")),
    Kind("", "v1", "secrets", "Secret", "secret", True),
    Kind("", "v1", "configmaps", "ConfigMap", "configmap", True, ("cm",)),
    Kind("", "v1", "namespaces", "Namespace", "namespace", False, ("ns",), ("status",)),
    Kind("", "v1", "events", "Event", "event", True, ("ev",)),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", True, ("sa",)),
    Kind("", "v1", "nodes", "Node", "node", False, ("no",), ("proxy", "status")),
    Kind("apps", "v1", "deployments", "Deployment", "deployment", True, ("deploy",), ("scale", "status")),
    Kind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", "clusterrolebinding", False),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role", "role", True),
    # a custom resource whose printer columns (additionalPrinterColumns) show
    # spec fields, a password among them
    Kind("db.example.com", "v1", "databaseusers", "DatabaseUser", "databaseuser", True, ("dbu",)),
]
BY_PATH = {(k.group, k.version, k.resource): k for k in KINDS}
SUB_KINDS = {
    "log": ("", "v1", "Pod"),
    "exec": ("", "v1", "PodExecOptions"),
    "attach": ("", "v1", "PodAttachOptions"),
    "status": None,
    "scale": ("autoscaling", "v1", "Scale"),
}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def query_bool(request: web.Request, name: str) -> bool:
    """A boolean query parameter as the API server reads it
    (``Convert_Slice_string_To_bool``): absent, ``0`` or ``false`` (any case)
    is false; any other value, including an empty one, is true."""
    values = request.query.getall(name, [])
    return bool(values) and values[0] != "0" and values[0].lower() != "false"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (also used for strategic merge patches: lists are replaced)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def go_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as the API server's typed decoding (Go's encoding/json
    family) reads it: a key given twice whose values are both objects is
    decoded into the struct (or map) the first one filled -- the two merge --
    anything else is replaced by the last value. (With fieldValidation=Strict
    a duplicate field is an error instead.)"""
    out: dict[str, Any] = {}
    for key, value in pairs:
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            value = go_object([*old.items(), *value.items()])
        out[key] = value
    return out


def go_yaml(raw: bytes) -> Any:
    """YAML as the API server reads it (sigs.k8s.io/yaml, goyaml.v2's YAML
    1.1): ``y``/``Y``/``n``/``N`` are booleans too, and a plain scalar Go's
    ``strconv.ParseInt(s, 0, 64)`` reads (``0o17``, ``0X1F``, ``0B1``,
    underscores dropped) is an integer."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        bool_values = {**yaml.SafeLoader.bool_values, "y": True, "n": False}

    def go_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        value = loader.construct_scalar(node)
        try:
            return int(str(value).replace("_", ""), 0)
        except ValueError:
            return yaml.SafeLoader.construct_yaml_int(loader, node)

    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"), list("yYnN"))
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?0[oObBxX][0-9a-fA-F_]+$"), list("-+0"))
    Loader.add_constructor("tag:yaml.org,2002:int", go_int)
    return yaml.load(raw, Loader=Loader)  # a SafeLoader


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, op["value"])
            elif kind == "replace":
                parent[idx] = op["value"]
            elif kind == "remove":
                parent.pop(idx)
        elif kind in ("add", "replace"):
            parent[last] = op["value"]
        elif kind == "remove":
            parent.pop(last, None)
    return doc


def from_protobuf(raw: bytes) -> Any:
    """Enough protobuf for kubectl's typed create of Secrets, ConfigMaps and
    Namespaces (Secret: data = 2, type = 3, stringData = 4; ConfigMap: data = 2)."""
    obj = decode(raw)
    if obj is None:
        return None
    meta: dict[str, Any] = {"name": obj.name}
    if obj.generate_name:
        meta["generateName"] = obj.generate_name
    if obj.namespace:
        meta["namespace"] = obj.namespace
    if obj.labels:
        meta["labels"] = obj.labels
    if obj.annotations:
        meta["annotations"] = obj.annotations
    out: dict[str, Any] = {"apiVersion": obj.api_version, "kind": obj.kind, "metadata": meta}
    if obj.kind == "Secret":
        out["data"] = {k: base64.b64encode(v).decode() for k, v in string_maps(obj.raw, 2).items()}
        out["type"] = string_field(obj.raw, 3) or "Opaque"
        string_data = string_maps(obj.raw, 4)
        if string_data:
            out["stringData"] = {k: v.decode() for k, v in string_data.items()}
    elif obj.kind == "ConfigMap":
        out["data"] = {k: v.decode() for k, v in string_maps(obj.raw, 2).items()}
    elif obj.kind in ("RoleBinding", "ClusterRoleBinding"):
        # subjects = 2 (repeated), roleRef = 3; Subject/RoleRef fields: kind,
        # apiGroup / apiGroup, kind, name. As Go's generated Unmarshal reads
        # them: a message field given twice is merged, a string's last value wins.
        role_ref: dict[str, str] = {}
        subjects = []
        for num, _, value in fields(obj.raw):
            if not isinstance(value, bytes):
                continue
            if num == 3:
                for n2, _, v2 in fields(value):
                    key = {1: "apiGroup", 2: "kind", 3: "name"}.get(n2)
                    if key and isinstance(v2, bytes):
                        role_ref[key] = v2.decode()
            elif num == 2:
                names = {1: "kind", 2: "apiGroup", 3: "name", 4: "namespace"}
                subjects.append({names[n2]: v2.decode() for n2, _, v2 in fields(value) if n2 in names and isinstance(v2, bytes)})
        out["roleRef"] = role_ref
        out["subjects"] = subjects
    return out


# ---------------------------------------------------------------- store
@dataclass
class WatchEvent:
    rv: int
    type: str
    kind: Kind
    obj: dict[str, Any]


@dataclass
class Store:
    rv: int = 1
    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    """(resource key, namespace, name) -> object"""
    history: list[WatchEvent] = field(default_factory=list)
    watchers: set[asyncio.Queue[WatchEvent]] = field(default_factory=set)
    logs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    log_waiters: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    closing: bool = False
    """Set on shutdown: log followers end instead of waiting for lines."""

    @staticmethod
    def rkey(kind: Kind) -> str:
        return f"{kind.group}/{kind.resource}"

    def emit(self, type_: str, kind: Kind, obj: dict[str, Any]) -> None:
        ev = WatchEvent(int(obj["metadata"]["resourceVersion"]), type_, kind, copy.deepcopy(obj))
        self.history.append(ev)
        if len(self.history) > 5000:
            del self.history[:1000]
        for q in list(self.watchers):
            q.put_nowait(ev)

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def put(self, kind: Kind, obj: dict[str, Any], type_: str) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = self.next_rv()
        ns = meta.get("namespace", "") if kind.namespaced else ""
        self.objects[(self.rkey(kind), ns, meta["name"])] = obj
        self.emit(type_, kind, obj)
        return obj

    def create(self, kind: Kind, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if kind.namespaced:
            meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta.pop("resourceVersion", None)
        meta.setdefault("generation", 1)
        defaults(kind, obj)
        if kind.resource == "pods":
            self.logs.setdefault((ns, meta["name"]), list(DEFAULT_LOG))
        return self.put(kind, obj, "ADDED")

    def delete(self, kind: Kind, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((self.rkey(kind), ns if kind.namespaced else "", name), None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.emit("DELETED", kind, obj)
        if kind.resource == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                sub = next(k for k in KINDS if self.rkey(k) == key[0])
                self.delete(sub, name, key[2])
        return obj

    def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((self.rkey(kind), ns if kind.namespaced else "", name))

    def list(self, kind: Kind, ns: str | None) -> list[dict[str, Any]]:
        rk = self.rkey(kind)
        out = [o for (r, n, _), o in self.objects.items() if r == rk and (ns is None or n == ns)]
        return sorted(out, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def append_log(self, ns: str, pod: str, line: str) -> None:
        self.logs.setdefault((ns, pod), []).append(line)
        ev = self.log_waiters.pop((ns, pod), None)
        if ev is not None:
            ev.set()


def list_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A list's items as the API server sends them: without kind and
    apiVersion (the list says them once; kubectl fills them back in)."""
    return [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]


DEFAULT_LOG = [
    "starting web server",
    "connecting to db with password=hunter2",
    "listening on :8080",
]


def defaults(kind: Kind, obj: dict[str, Any]) -> None:
    if kind.resource == "pods":
        spec = obj.setdefault("spec", {})
        containers = spec.setdefault("containers", [{"name": "main", "image": "busybox"}])
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("nodeName", "fake-node")
        obj["status"] = {
            # not scheduled (an explicit empty nodeName): exec is refused
            "phase": "Running" if spec["nodeName"] else "Pending",
            "podIP": "10.0.0.7",
            "startTime": now_iso(),
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": c.get("name", "main"),
                    "image": c.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": now_iso()}},
                }
                for c in containers
            ],
        }
    elif kind.resource == "namespaces":
        obj["status"] = {"phase": "Active"}
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    elif kind.resource == "secrets":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(v.encode()).decode()
    elif kind.resource == "deployments":
        spec = obj.setdefault("spec", {})
        spec.setdefault("replicas", 1)
        sync_deployment_status(obj)


def sync_deployment_status(obj: dict[str, Any]) -> None:
    n = obj.get("spec", {}).get("replicas", 1)
    obj["status"] = {
        "replicas": n,
        "readyReplicas": n,
        "updatedReplicas": n,
        "availableReplicas": n,
        "observedGeneration": obj["metadata"].get("generation", 1),
    }


# ---------------------------------------------------------------- tables
def age(obj: dict[str, Any]) -> str:
    try:
        created = dt.datetime.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
        secs = int(time.time() - created.replace(tzinfo=dt.UTC).timestamp())
    except (KeyError, ValueError):
        return "<unknown>"
    return f"{secs}s" if secs < 120 else f"{secs // 60}m"


def columns(kind: Kind) -> list[tuple[str, str]]:
    extra = {
        "pods": [("Ready", "string"), ("Status", "string"), ("Restarts", "string")],
        "secrets": [("Type", "string"), ("Data", "string")],
        "configmaps": [("Data", "string")],
        "namespaces": [("Status", "string")],
        "deployments": [("Ready", "string"), ("Up-to-date", "string"), ("Available", "string")],
        "databaseusers": [("User", "string"), ("Password", "string")],
    }.get(kind.resource, [])
    return [("Name", "string"), *extra, ("Age", "string")]


def cells(kind: Kind, obj: dict[str, Any]) -> list[Any]:
    name = obj["metadata"]["name"]
    st = obj.get("status", {})
    extra: list[Any] = []
    if kind.resource == "pods":
        cs = st.get("containerStatuses", [])
        extra = [f"{sum(1 for c in cs if c.get('ready'))}/{len(cs)}", st.get("phase", ""), 0]
    elif kind.resource == "secrets":
        extra = [obj.get("type", ""), len(obj.get("data") or {})]
    elif kind.resource == "configmaps":
        extra = [len(obj.get("data") or {})]
    elif kind.resource == "namespaces":
        extra = [st.get("phase", "")]
    elif kind.resource == "deployments":
        n = obj.get("spec", {}).get("replicas", 0)
        extra = [f"{st.get('readyReplicas', 0)}/{n}", st.get("updatedReplicas", 0), st.get("availableReplicas", 0)]
    elif kind.resource == "databaseusers":
        spec = obj.get("spec") or {}
        extra = [spec.get("user", ""), spec.get("password", "")]
    return [name, *extra, age(obj)]


def table(kind: Kind, objs: list[dict[str, Any]], rv: str, include: str, with_columns: bool = True) -> dict[str, Any]:
    rows = []
    for obj in objs:
        if include == "Object":
            inner: Any = obj
        elif include == "None":
            inner = None
        else:
            inner = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        row: dict[str, Any] = {"cells": cells(kind, obj)}
        if inner is not None:
            row["object"] = inner
        rows.append(row)
    out: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": [],
        "rows": rows,
    }
    if with_columns:
        out["columnDefinitions"] = [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": n, "priority": 0}
            for n, t in columns(kind)
        ]
    return out


def wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


# ---------------------------------------------------------------- discovery
def resource_list(group: str, version: str) -> dict[str, Any]:
    resources = []
    for k in KINDS:
        if (k.group, k.version) != (group, version):
            continue
        resources.append(
            {
                "name": k.resource,
                "singularName": k.singular,
                "namespaced": k.namespaced,
                "kind": k.kind,
                "verbs": VERBS,
                "shortNames": list(k.short),
                **({"categories": ["all"]} if k.resource in ("pods", "deployments") else {}),
            }
        )
        for sub in k.subresources:
            g, v, kd = SUB_KINDS.get(sub) or (k.group, k.version, k.kind)
            resources.append(
                {
                    "name": f"{k.resource}/{sub}",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": kd,
                    **({"group": g, "version": v} if g != k.group else {}),
                    "verbs": ["get", "create"] if sub in ("exec", "attach") else ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


def groups() -> list[str]:
    return sorted({k.group for k in KINDS if k.group})


def discovery_group(group: str) -> dict[str, Any]:
    resources = []
    for k in KINDS:
        if k.group != group:
            continue
        subs = []
        for sub in k.subresources:
            g, v, kd = SUB_KINDS.get(sub) or (k.group, k.version, k.kind)
            subs.append(
                {
                    "subresource": sub,
                    "responseKind": {"group": g, "version": v, "kind": kd},
                    "verbs": ["get", "create"] if sub in ("exec", "attach") else ["get", "patch", "update"],
                }
            )
        resources.append(
            {
                "resource": k.resource,
                "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                "scope": "Namespaced" if k.namespaced else "Cluster",
                "singularResource": k.singular,
                "verbs": VERBS,
                **({"shortNames": list(k.short)} if k.short else {}),
                **({"categories": ["all"]} if k.resource in ("pods", "deployments") else {}),
                "subresources": subs,
            }
        )
    return {
        "metadata": {"name": group, "creationTimestamp": None},
        "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
    }


def aggregated(request: web.Request) -> str | None:
    accept = request.headers.get("Accept", "")
    for v in ("v2", "v2beta1"):
        if f"g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList" in accept:
            return v
    return None


def openapi_v3_doc(group: str, version: str) -> dict[str, Any]:
    """Just enough for kubectl's field-validation support check."""
    paths: dict[str, Any] = {}
    for k in KINDS:
        if (k.group, k.version) != (group, version):
            continue
        prefix = f"/apis/{k.group}/{k.version}" if k.group else f"/api/{k.version}"
        ns = "/namespaces/{namespace}" if k.namespaced else ""
        gvk = {"group": k.group, "version": k.version, "kind": k.kind}
        op = {
            "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
            "x-kubernetes-group-version-kind": gvk,
            "responses": {},
        }
        paths[f"{prefix}{ns}/{k.resource}/{{name}}"] = {"patch": op, "put": op}
        paths[f"{prefix}{ns}/{k.resource}"] = {"post": op}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": f"v1.{MINOR}.0"}, "paths": paths, "components": {"schemas": {}}}


def prefers_yaml(request: web.Request) -> bool:
    """The API server answers in the first media type of Accept it can
    serialize; application/yaml is one of them (for objects, lists, Status)."""
    first = request.headers.get("Accept", "").split(",", 1)[0]
    return first.split(";", 1)[0].strip().lower() == "application/yaml"


@web.middleware
async def yaml_negotiation(request: web.Request, handler: Any) -> web.StreamResponse:
    resp = await handler(request)
    if (
        prefers_yaml(request)
        and isinstance(resp, web.Response)
        and resp.content_type == "application/json"
        and isinstance(resp.body, bytes)
    ):
        import yaml

        doc = yaml.safe_dump(json.loads(resp.body), sort_keys=False).encode()
        return web.Response(body=doc, status=resp.status, content_type="application/yaml")
    return resp


def stream_location_error(pod: dict[str, Any], container: str) -> web.Response | None:
    """The API server's checks before it proxies exec/attach to the kubelet
    (``streamLocation`` in pkg/registry/core/pod/strategy.go), whatever the
    transport: so a refused websocket and kubectl's SPDY retry get the same
    Status, as from a real API server."""
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    containers = [c.get("name") for key in ("containers", "initContainers", "ephemeralContainers")
                  for c in spec.get(key) or []]
    if not container:
        names = [c.get("name") for c in spec.get("containers") or []]
        if len(names) > 1:
            return status(400, "BadRequest", f"a container name must be specified for pod {name}, "
                          f"choose one of: [{' '.join(names)}]")
    elif container not in containers:
        return status(400, "BadRequest", f"container {container} is not valid for pod {name}")
    if not spec.get("nodeName"):
        return status(400, "BadRequest", f"pod {name} does not have a host assigned")
    return None


def kubelet_error(pod: dict[str, Any], container: str) -> web.Response | None:
    """The kubelet's answer for a container that is not running (waiting,
    terminated), which the API server relays as it came: a 500 whose body
    is text, not a Status (``streaming.WriteError``)."""
    name = container or pod["spec"]["containers"][0]["name"]
    for st in (pod.get("status") or {}).get("containerStatuses") or []:
        if st.get("name") == name and "running" not in (st.get("state") or {}):
            return web.Response(status=500, text=f'container not found ("{name}")')
    return None


# ---------------------------------------------------------------- the app
class FakeApi:
    def __init__(self) -> None:
        self.store = Store()
        self.requests: list[tuple[str, str, CIMultiDict[str]]] = []  # headers: every value kept
        """(method, path_qs, headers) of every request, for assertions."""
        self.execs = 0
        self.pod_ports: dict[int, int] = {}
        """port-forward: pod port -> local port that answers for it."""
        self.port_forwards = 0
        self.kubelet_runs: list[tuple[str, str, str, list[str]]] = []
        """(namespace, pod, container, cmd) of each kubelet ``/run`` through ``nodes/NAME/proxy``."""
        self.node_logs: dict[str, str] = {
            "kube-apiserver.log": "I0101 00:00:00 starting\n"
            "I0101 00:00:01 etcd client: https://root:etcd-pw-9f2c@10.0.0.5:2379\n"
            "I0101 00:00:02 webhook token=AKIAIOSFODNN7EXAMPLE rejected\n",
        }
        """/logs/NAME: what the API server's logs handler serves from /var/log."""
        for ns in ("default", "kube-system"):
            self.store.create(BY_PATH[("", "v1", "namespaces")], "", {"metadata": {"name": ns}})
        self.store.create(BY_PATH[("", "v1", "nodes")], "", {"metadata": {"name": "fake-node"}})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[yaml_negotiation])
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs, CIMultiDict(request.headers)))
        if len(self.requests) > 20000:
            del self.requests[:10000]
        path = request.path.rstrip("/") or "/"
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return web.json_response(
                {"major": "1", "minor": MINOR, "gitVersion": f"v1.{MINOR}.0-fake", "platform": "linux/amd64",
                 "goVersion": "go1.23", "compiler": "gc", "buildDate": "2025-01-01T00:00:00Z",
                 "gitCommit": "0" * 40, "gitTreeState": "clean"}
            )
        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/echo-status":
            # a misbehaving authorizer (webhook, aggregated API server) that
            # quotes the request's credential in its error and a header
            cred = request.headers.get("Authorization", "")
            resp = status(403, "Forbidden", f"credential {cred!r} may not read /echo-status")
            resp.headers["X-Echo-Authorization"] = cred
            return resp
        if path == "/warning":
            # an admission webhook's warning (kubectl prints it as "Warning: ...")
            # quoting what it objects to, and the request's credential
            cred = request.headers.get("Authorization", "")
            resp = web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
            resp.headers["Warning"] = (
                f'299 - "env DB_PASSWORD has a literal value: password=hunter2, key AKIAIOSFODNN7EXAMPLE, sent with {cred}"'
            )
            return resp
        if path.startswith("/logs/"):
            # the API server's logs handler: files of its node's /var/log
            text = self.node_logs.get(path[len("/logs/"):])
            if text is None:
                return status(404, "NotFound", "the server could not find the requested resource")
            return web.Response(text=text, content_type="text/plain", charset="utf-8")
        if path == "/api":
            if (v := aggregated(request)) is not None:
                return self.discovery_list([""], v)
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/apis":
            if (v := aggregated(request)) is not None:
                return self.discovery_list(groups(), v)
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                         "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}}
                        for g in groups()
                    ],
                }
            )
        if path == "/openapi/v3":
            gvs = ["api/v1", *[f"apis/{g}/v1" for g in groups()]]
            return web.json_response({"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=F{MINOR}"} for gv in gvs}})
        if path.startswith("/openapi/v3/"):
            rest = path[len("/openapi/v3/"):].split("/")
            group, version = ("", rest[1]) if rest[0] == "api" else (rest[1], rest[2])
            return web.json_response(openapi_v3_doc(group, version))
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        elif parts[:1] == ["apis"] and len(parts) == 2:
            return web.json_response({"kind": "APIGroup", "apiVersion": "v1", "name": parts[1], "versions": [{"groupVersion": f"{parts[1]}/v1", "version": "v1"}]})
        else:
            return status(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if (group, version) not in {(k.group, k.version) for k in KINDS}:
                return status(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(resource_list(group, version))
        ns: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        kind = BY_PATH.get((group, version, rest[0]))
        if kind is None:
            return status(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if kind.namespaced and ns is None and name is not None:
            return status(404, "NotFound", "the server could not find the requested resource")
        if not kind.namespaced:
            ns = None
        if kind.resource == "nodes" and sub == "proxy" and name is not None:
            return await self.kubelet(request, name, rest[3:])
        return await self.resource(request, kind, ns, name, sub)

    async def kubelet(self, request: web.Request, node: str, rest: list[str]) -> web.StreamResponse:
        """``nodes/NAME/proxy/...``: the API server proxies to that node's
        kubelet API. ``/pods`` (the kubelet's PodList, env values and all) and
        ``/run/NS/POD/[UID/]CONTAINER?cmd=...`` (POST: runs a command in the
        container and answers its output; recorded in ``kubelet_runs``, not run)."""
        if self.store.get(BY_PATH[("", "v1", "nodes")], "", node.split(":")[0]) is None:
            return status(404, "NotFound", f'nodes "{node}" not found', name=node, kind="nodes")
        if rest == ["pods"] and request.method == "GET":
            pods = self.store.list(BY_PATH[("", "v1", "pods")], None)
            body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
            return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), content_type="application/json")
        if rest[:1] == ["run"] and len(rest) in (4, 5) and request.method == "POST":
            cmd = request.query.get("cmd", "").split(" ")
            self.kubelet_runs.append((rest[1], rest[2], rest[-1], cmd))
            return web.Response(text=f"ran {' '.join(cmd)} in {rest[1]}/{rest[2]}/{rest[-1]}\n")
        return web.Response(status=404, text="404 page not found\n")

    def discovery_list(self, names: list[str], version: str) -> web.Response:
        body = {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": f"apidiscovery.k8s.io/{version}",
            "metadata": {},
            "items": [discovery_group(g) for g in names],
        }
        return web.Response(
            body=json.dumps(body).encode(),
            headers={"Content-Type": f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"},
        )

    async def body(self, request: web.Request) -> Any:
        raw = await request.read()
        if request.content_type == PROTOBUF:
            return from_protobuf(raw)
        try:
            return json.loads(raw, object_pairs_hook=go_object) if raw else {}
        except ValueError:
            return go_yaml(raw)

    async def resource(self, request: web.Request, kind: Kind, ns: str | None, name: str | None, sub: str | None) -> web.StreamResponse:
        store = self.store
        q = request.query
        m = request.method
        dry = "All" in q.getall("dryRun", [])
        if m == "DELETE" and request.can_read_body:
            # as the API server's delete handlers: DeleteOptions come from the
            # body when there is one, and the query is not read at all
            raw = await request.read()
            if raw:
                options = await self.body(request)
                dry = isinstance(options, dict) and "All" in (options.get("dryRun") or [])
        if sub == "exec" or sub == "attach":
            return await self.exec(request, kind, ns or "", name or "", sub)
        if sub == "portforward":
            return await self.portforward(request, kind, ns or "", name or "")
        if sub == "log":
            return await self.log(request, ns or "", name or "")
        if name is None:
            if m == "GET" and query_bool(request, "watch"):
                return await self.watch(request, kind, ns)
            if m == "GET":
                return self.list(request, kind, ns)
            if m == "POST":
                obj = await self.body(request)
                if not isinstance(obj, dict):
                    return status(400, "BadRequest", "body must be an object")
                want = (obj.get("metadata") or {}).get("name")
                if want and store.get(kind, ns or "", want) is not None:
                    return status(409, "AlreadyExists", f'{kind.resource} "{want}" already exists',
                                  name=want, kind=kind.resource)
                if kind.namespaced and store.get(BY_PATH[("", "v1", "namespaces")], "", ns or "") is None:
                    return status(404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces")
                if dry:
                    out = copy.deepcopy(obj)
                    out.setdefault("metadata", {})["namespace"] = ns
                    return web.json_response(out, status=201)
                return web.json_response(store.create(kind, ns or "", obj), status=201)
            if m == "DELETE":
                items = store.list(kind, ns)
                items = [o for o in items if self.selected(request, o)]
                for o in items:
                    if not dry:
                        store.delete(kind, ns or "", o["metadata"]["name"])
                return web.json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {}, "items": list_items(items)})
            return status(405, "MethodNotAllowed", "method not allowed")
        current = store.get(kind, ns or "", name)
        if current is None:
            if m == "PATCH" and request.content_type == "application/apply-patch+yaml":
                pass
            else:
                return status(404, "NotFound", f'{kind.resource} "{name}" not found', name=name, kind=kind.resource)
        if sub == "scale":
            return await self.scale(request, kind, current)
        if m == "GET":
            return web.json_response(current)
        if m == "DELETE":
            if dry:
                return web.json_response(current)
            gone = store.delete(kind, ns or "", name)
            return web.json_response(gone)
        if m in ("PUT", "PATCH"):
            assert current is not None
            if m == "PUT":
                new = await self.body(request)
                if not isinstance(new, dict):
                    return status(400, "BadRequest", "body must be an object")
                rv = (new.get("metadata") or {}).get("resourceVersion")
                if rv and rv != current["metadata"]["resourceVersion"]:
                    return status(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been modified; please apply your changes to the latest version and try again', name=name, kind=kind.resource)
            else:
                patch = await self.body(request)
                ctype = request.content_type
                if ctype == "application/json-patch+json":
                    new = json_patch(current, patch)
                elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                    new = merge_patch(current, patch)
                else:
                    return status(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ctype})")
            meta = new.setdefault("metadata", {})
            for key in ("uid", "creationTimestamp", "namespace", "name"):
                if key in current["metadata"]:
                    meta[key] = current["metadata"][key]
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            if new.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
            if kind.resource == "deployments":
                sync_deployment_status(new)
            if kind.resource == "pods":
                new["status"] = current.get("status", {})
            if kind.resource == "secrets" and new.get("stringData"):
                for k, v in new.pop("stringData").items():
                    new.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
            if dry:
                return web.json_response(new)
            return web.json_response(store.put(kind, new, "MODIFIED"))
        return status(405, "MethodNotAllowed", "method not allowed")

    async def scale(self, request: web.Request, kind: Kind, obj: dict[str, Any] | None) -> web.Response:
        assert obj is not None
        meta = obj["metadata"]

        def scale_obj() -> dict[str, Any]:
            n = obj["spec"].get("replicas", 1)
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {"name": meta["name"], "namespace": meta.get("namespace"), "resourceVersion": meta["resourceVersion"], "uid": meta["uid"], "creationTimestamp": meta["creationTimestamp"]},
                "spec": {"replicas": n},
                "status": {"replicas": n, "selector": ""},
            }

        if request.method == "GET":
            return web.json_response(scale_obj())
        body = await self.body(request)
        new = merge_patch(scale_obj(), body) if request.method == "PATCH" else body
        replicas = (new.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            return status(422, "Invalid", "spec.replicas must be a non-negative integer")
        obj["spec"]["replicas"] = replicas
        sync_deployment_status(obj)
        self.store.put(kind, obj, "MODIFIED")
        return web.json_response(scale_obj())

    def selected(self, request: web.Request, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        for sel in request.query.get("fieldSelector", "").split(","):
            if not sel:
                continue
            key, _, value = sel.partition("=")
            value = value.lstrip("=")
            neg = key.endswith("!")
            key = key.rstrip("!")
            actual = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}.get(key)
            if key in ("metadata.name", "metadata.namespace") and (actual == value) == neg:
                return False
        labels = meta.get("labels") or {}
        for sel in request.query.get("labelSelector", "").split(","):
            if not sel:
                continue
            if "=" in sel:
                key, _, value = sel.partition("=")
                neg = key.endswith("!")
                key, value = key.rstrip("!"), value.lstrip("=")
                if (labels.get(key) == value) == neg:
                    return False
            elif labels.get(sel) is None:
                return False
        return True

    def list(self, request: web.Request, kind: Kind, ns: str | None) -> web.Response:
        items = [o for o in self.store.list(kind, ns) if self.selected(request, o)]
        rv = str(self.store.rv)
        if wants_table(request):
            return web.Response(
                body=json.dumps(table(kind, items, rv, request.query.get("includeObject", "Metadata"))).encode(),
                headers={"Content-Type": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            )
        return web.json_response({"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": {"resourceVersion": rv}, "items": list_items(items)})

    async def watch(self, request: web.Request, kind: Kind, ns: str | None) -> web.StreamResponse:
        store = self.store
        rk = store.rkey(kind)
        as_table = wants_table(request)
        include = request.query.get("includeObject", "Metadata")
        since = int(request.query.get("resourceVersion") or 0)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        ws: web.WebSocketResponse | None = None
        resp: web.StreamResponse
        if request.headers.get("Upgrade", "").lower() == "websocket":
            # the API server's watch over a websocket (golang.org/x/net/websocket,
            # which takes the one subprotocol offered): each event a text frame
            offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
            resp = ws = web.WebSocketResponse(protocols=offered[:1])
        else:
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        store.watchers.add(queue)
        first = [True]

        async def send(ev: WatchEvent) -> None:
            if store.rkey(ev.kind) != rk or (ns is not None and ev.obj["metadata"].get("namespace") != ns):
                return
            if not self.selected(request, ev.obj):
                return
            obj = table(kind, [ev.obj], str(ev.rv), include, first[0]) if as_table else ev.obj
            first[0] = False
            if ws is not None:
                await ws.send_str(json.dumps({"type": ev.type, "object": obj}))
                return
            await resp.write(json.dumps({"type": ev.type, "object": obj}).encode() + b"\n")

        try:
            if since == 0:
                for obj in [o for o in store.list(kind, ns)]:
                    await send(WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", kind, obj))
            else:
                for ev in [e for e in store.history if e.rv > since]:
                    await send(ev)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
                if ev.rv > since:
                    await send(ev)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            store.watchers.discard(queue)
        with contextlib.suppress(Exception):
            if ws is not None:
                await ws.close()
            else:
                await resp.write_eof()
        return resp

    async def log(self, request: web.Request, ns: str, name: str) -> web.StreamResponse:
        store = self.store
        if store.get(BY_PATH[("", "v1", "pods")], ns, name) is None:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        follow = request.query.get("follow") in ("true", "1")
        tail = request.query.get("tailLines")
        lines = store.logs.get((ns, name), [])
        start = max(0, len(lines) - int(tail)) if tail else 0
        limit = request.query.get("limitBytes")
        left = int(limit) if limit else -1  # as the API server: cut at a byte count
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        sent = start
        try:
            while True:
                lines = store.logs.get((ns, name), [])
                if sent < len(lines):
                    data = "".join(f"{line}\n" for line in lines[sent:]).encode()
                    if left >= 0:
                        data, left = data[:left], left - len(data[:left])
                    await resp.write(data)
                    sent = len(lines)
                if not follow or left == 0 or store.closing:
                    break
                ev = store.log_waiters.setdefault((ns, name), asyncio.Event())
                # a set Event's wait() returns without yielding to the loop:
                # waiting on one again would spin and block the loop forever
                await ev.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp

    # ------------------------------------------------------------ exec
    async def portforward(self, request: web.Request, kind: Kind, ns: str, name: str) -> web.StreamResponse:
        """kubectl port-forward: SPDY/3.1 tunnelled in a websocket (tests/kubernetes/spdy.py).
        A pod port connects to the local port in ``self.pod_ports``."""
        from tests.kubernetes.spdy import PortForwardSession

        if self.store.get(kind, ns, name) is None:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return status(400, "BadRequest", "this fake API server only speaks port-forward over websocket")
        ws = web.WebSocketResponse(protocols=("SPDY/3.1+portforward.k8s.io",), autoping=True, max_msg_size=0)
        await ws.prepare(request)

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if port not in self.pod_ports:
                raise OSError(f"nothing listens on port {port} in pod {name}")
            return await asyncio.open_connection("127.0.0.1", self.pod_ports[port])

        session = PortForwardSession(ws.send_bytes, connect)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await session.feed(msg.data)
        finally:
            session.close()
            self.port_forwards += session.forwarded
        return ws

    async def exec(self, request: web.Request, kind: Kind, ns: str, name: str, sub: str) -> web.StreamResponse:
        pod = self.store.get(kind, ns, name)
        if pod is None:
            return status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        container = request.query.get("container", "")
        refused = stream_location_error(pod, container) or kubelet_error(pod, container)
        if refused is not None:
            return refused
        qs = parse_qs(request.query_string)
        command = qs.get("command", [])
        if sub == "attach":
            command = ["sh"]
        tty = query_bool(request, "tty")
        stdin = query_bool(request, "stdin")
        cred = request.headers.get("Authorization", "")
        if name == "echo-status":
            # an authorizer in front of the kubelet that refuses the upgrade
            # and quotes the request's credential (body and a header)
            resp = status(403, "Forbidden", f"credential {cred!r} may not exec in {name}")
            resp.headers["X-Echo-Authorization"] = cred
            return resp
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return status(400, "BadRequest", "this fake API server only speaks websocket exec (v5.channel.k8s.io)")
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"), autoping=True, max_msg_size=0)
        ws.headers["X-Echo-Authorization"] = cred  # a header mirrored into the 101 response
        await ws.prepare(request)
        self.execs += 1
        if not command:
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "message": "no command", "reason": "BadRequest"}).encode())
            await ws.close()
            return ws
        if command == ["echo-text"]:
            # a text frame, which no channel protocol uses (kubectl ignores it)
            await ws.send_str(f"debug: key AKIAIOSFODNN7EXAMPLE, credential {cred}")
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Success"}).encode())
            await ws.close()
            return ws
        if command == ["echo-credential"]:
            # a runtime error on the status channel (3) that quotes the request's credential
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "reason": "InternalError",
                                                       "message": f"exec refused for credential {cred!r}"}).encode())
            await ws.close()
            return ws
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "TERM": "xterm", "POD_NAME": name}
        master = -1
        early: list[bytes] = []
        size = None
        if tty:  # like a container runtime, start with the client's initial size
            with contextlib.suppress(TimeoutError):
                first = await ws.receive(timeout=1.0)
                if first.type == WSMsgType.BINARY and first.data[:1] == b"\x04":
                    size = json.loads(first.data[1:])
                elif first.type == WSMsgType.BINARY:
                    early.append(first.data)
        try:
            if tty:
                master, slave = pty.openpty()
                if size:
                    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0))
                proc = await asyncio.create_subprocess_exec(
                    *command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, cwd="/tmp"
                )
                os.close(slave)
            else:
                proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=env,
                    cwd="/tmp",
                )
        except OSError as exc:
            await ws.send_bytes(b"\x03" + json.dumps({"metadata": {}, "status": "Failure", "message": f"exec failed: {exc}", "reason": "InternalError"}).encode())
            await ws.close()
            return ws
        loop = asyncio.get_running_loop()

        async def pump(reader: asyncio.StreamReader, channel: int) -> None:
            while chunk := await reader.read(65536):
                await ws.send_bytes(bytes([channel]) + chunk)

        async def pump_pty() -> None:
            q: asyncio.Queue[bytes] = asyncio.Queue()

            def readable() -> None:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                q.put_nowait(data)
                if not data:
                    loop.remove_reader(master)

            loop.add_reader(master, readable)
            while data := await q.get():
                await ws.send_bytes(b"\x01" + data)

        async def from_client() -> None:
            for data in early:
                if data[:1] == b"\x00":
                    os.write(master, data[1:])
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                ch, payload = msg.data[0], msg.data[1:]
                if ch == 0:
                    if tty:
                        os.write(master, payload)
                    elif proc.stdin is not None:
                        proc.stdin.write(payload)
                        with contextlib.suppress(ConnectionError):
                            await proc.stdin.drain()
                elif ch == 4:
                    with contextlib.suppress(ValueError, OSError):
                        size = json.loads(payload)
                        if tty:
                            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0))
                elif ch == 255 and payload[:1] == b"\x00":
                    if tty:
                        os.write(master, b"\x04")
                    elif proc.stdin is not None:
                        proc.stdin.close()

        pumps = [asyncio.ensure_future(pump_pty())] if tty else [
            asyncio.ensure_future(pump(proc.stdout, 1)),  # type: ignore[arg-type]
            asyncio.ensure_future(pump(proc.stderr, 2)),  # type: ignore[arg-type]
        ]
        reader = asyncio.ensure_future(from_client())
        try:
            await asyncio.wait({asyncio.ensure_future(proc.wait()), reader}, return_when=asyncio.FIRST_COMPLETED)
            if proc.returncode is None:  # client went away
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            await asyncio.wait(pumps, timeout=2)
            rc = proc.returncode
            if rc == 0:
                st: dict[str, Any] = {"metadata": {}, "status": "Success"}
            else:
                st = {
                    "metadata": {},
                    "status": "Failure",
                    "message": f"command terminated with non-zero exit code: exit status {rc}",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(rc)}]},
                }
            if not ws.closed:
                await ws.send_bytes(b"\x03" + json.dumps(st).encode())
                await ws.close()
        except (ConnectionResetError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        finally:
            reader.cancel()
            for p in pumps:
                p.cancel()
            if master >= 0:
                with contextlib.suppress(Exception):
                    loop.remove_reader(master)
                os.close(master)
        return ws


# ---------------------------------------------------------------- running it
def make_tls(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA and a server certificate for 127.0.0.1; returns (ca path, server context)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = generate_ca("fake kube CA")
    leaf, key = issue_certificate(ca, ca_key, "kube-apiserver")
    (directory / "ca.pem").write_bytes(cert_pem(ca))
    (directory / "server.pem").write_bytes(cert_pem(leaf))
    (directory / "server-key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
    return directory / "ca.pem", ctx


class FakeApiServer:
    """The fake API server in a thread with its own event loop (so tests can
    block on subprocesses such as kubectl)."""

    def __init__(self, tls_dir: Path, port: int = 0) -> None:
        self.api = FakeApi()
        self.ca, self._ssl = make_tls(tls_dir)
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) on the server's loop and return its result."""
        assert self._loop is not None
        fut: asyncio.Future[Any] = asyncio.run_coroutine_threadsafe(_acall(fn, *args), self._loop)  # type: ignore[arg-type]
        return fut.result(10)

    def __enter__(self) -> FakeApiServer:
        self._thread = threading.Thread(target=self._run, daemon=True, name="fakeapi")
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("fake API server did not start")
        return self

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def start() -> None:
            self._runner = web.AppRunner(self.api.app(), handle_signals=False, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        loop.close()

    async def _shutdown(self) -> None:
        assert self._runner is not None
        for q in list(self.api.store.watchers):
            q.put_nowait(WatchEvent(-1, "STOP", KINDS[0], {}))
        self.api.store.closing = True
        for ev in self.api.store.log_waiters.values():
            ev.set()
        await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


async def _acall(fn: Any, *args: Any) -> Any:
    return fn(*args)


@contextlib.contextmanager
def fake_api(tls_dir: Path) -> Iterator[FakeApiServer]:
    with FakeApiServer(tls_dir) as server:
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--tls-dir", type=Path, required=True)
    parser.add_argument("--plain", action="store_true", help="serve plain http (no TLS)")
    args = parser.parse_args()
    _, ctx = make_tls(args.tls_dir)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(FakeApi().app(), host="127.0.0.1", port=args.port, ssl_context=None if args.plain else ctx, print=None, access_log=None)


if __name__ == "__main__":
    main()
