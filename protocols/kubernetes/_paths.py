"""Classify a Kubernetes API request (sans-IO): method + path + query -> KubeRequest.

Mirrors the API server's own ``RequestInfoFactory``: ``/api/v1/...`` and
``/apis/GROUP/VERSION/...``, namespaces, ``namespaces/{name}/status|finalize``
as namespace subresources, the legacy ``/watch/`` prefix, verbs derived from
the method (GET -> get/list/watch, POST -> create, PUT -> update, PATCH ->
patch, DELETE -> delete/deletecollection) and from subresources (exec,
attach, portforward, logs, proxy). Anything else is a non-resource request
(``/version``, ``/healthz``, ``/openapi/v3``...).

Never raises: any path, even garbage, classifies to something.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from hoopd.transfer import is_tar_stream

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
VERB_SUBRESOURCES = {"exec": "exec", "attach": "attach", "portforward": "portforward", "log": "logs", "proxy": "proxy"}
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
KUBELET_STREAMS = {"run": "exec", "exec": "exec", "attach": "attach", "portforward": "portforward"}
"""The kubelet API's endpoints (``nodes/NAME/proxy/...``) that run a command in,
attach to or forward a port of a container (lower-cased), as the verb they are."""
DISCOVERY_PREFIXES = ("/api", "/apis", "/version", "/openapi", "/healthz", "/readyz", "/livez")


@dataclass(frozen=True, slots=True)
class KubeRequest:
    method: str
    path: str
    verb: str
    resource_request: bool = False
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    dry_run: bool = False
    query: Mapping[str, Sequence[str]] = field(default_factory=dict)
    proxy_path: tuple[str, ...] = ()
    """The segments after ``.../proxy/`` of a ``proxy`` request."""

    @property
    def watch(self) -> bool:
        return self.verb == "watch"

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS

    @property
    def discovery(self) -> bool:
        """Discovery, OpenAPI, version and health documents (no user data in
        them: their responses are passed through unmasked). Other
        non-resource paths are not: the API server's ``/logs/`` serves its
        node's log files, and aggregated or future endpoints may carry
        anything."""
        return not self.resource_request and is_discovery_path(self.path)

    @property
    def qualified_resource(self) -> str:
        """``pods``, ``deployments.apps``, ``deployments.apps/scale``."""
        res = self.resource + (f".{self.group}" if self.group else "")
        return res + (f"/{self.subresource}" if self.subresource else "")

    def exec_command(self) -> list[str]:
        return list(self.query.get("command", ()))

    @property
    def file_transfer(self) -> bool:
        """An exec that moves an archive through stdin/stdout: what ``kubectl
        cp`` runs (``tar cf - PATH`` from the pod, ``tar xmf - -C DIR`` to it)."""
        return self.verb == "exec" and is_tar_stream(self.exec_command())

    @property
    def kubelet_stream(self) -> tuple[str, str, str, str, list[str]] | None:
        """(verb, namespace, pod, container, command) of a request through
        ``nodes/NAME/proxy`` to the kubelet endpoints that exec in, attach to
        or port-forward a pod (``/run/NS/POD/[UID/]CONTAINER?cmd=...``,
        ``/exec/...?command=...``, ``/attach/...``, ``/portForward/NS/POD``):
        an exec by another door, judged as one. None for anything else."""
        if self.verb != "proxy" or self.resource != "nodes" or len(self.proxy_path) < 3:
            return None
        verb = KUBELET_STREAMS.get(self.proxy_path[0].lower())
        if verb is None:
            return None
        _, namespace, pod, *rest = self.proxy_path
        if verb == "portforward":
            return verb, namespace, pod, "", []
        container = rest[-1] if rest else ""
        if self.proxy_path[0].lower() == "run":  # the kubelet splits cmd at spaces
            command = self.query.get("cmd", [""])[0].split(" ")
        else:
            command = self.exec_command()
        return verb, namespace, pod, container, command

    def _kubelet_text(self, found: tuple[str, str, str, str, list[str]]) -> str:
        verb, namespace, pod, container, command = found
        parts = [verb, "pods", pod, f"-n {namespace}"]
        if container:
            parts.append(f"-c {container}")
        if verb == "portforward":
            parts += self.query.get("port", [])
        elif command and command != [""]:
            parts.append("-- " + shlex.join(command))
        return " ".join(parts)

    def text(self) -> str:
        """The normalized command text (rules match it, approvals hash it)."""
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        kubelet = self.kubelet_stream
        if kubelet is not None:  # the exec rules' words: "exec pods web-0 -n default -c main -- rm ..."
            return self._kubelet_text(kubelet)
        resource = self.qualified_resource
        if self.verb in VERB_SUBRESOURCES.values():  # "exec pods web-0", not "exec pods/exec web-0"
            resource = resource.rsplit("/", 1)[0]
        parts = [self.verb, resource]
        if self.name:
            parts.append(self.name)
        if self.namespace:
            parts.append(f"-n {self.namespace}")
        if self.dry_run:
            parts.append("--dry-run=server")
        if self.verb in ("exec", "attach"):
            container = self.query.get("container", [""])[0]
            if container:
                parts.append(f"-c {container}")
            cmd = self.exec_command()
            if cmd:
                parts.append("-- " + shlex.join(cmd))
        elif self.verb == "portforward":
            ports = self.query.get("ports", [])
            if ports:
                parts.append(" ".join(ports))
        return " ".join(parts)

    def attrs(self) -> dict[str, object]:
        out: dict[str, object] = {"verb": self.verb, "method": self.method, "path": self.path}
        if self.file_transfer:
            out["transfer"] = True
        if self.kubelet_stream is not None:
            out["kubelet"] = self.name  # through this node's kubelet API (nodes/NAME/proxy)
        if self.resource_request:
            out.update(
                group=self.group,
                version=self.version,
                resource=self.resource,
                subresource=self.subresource,
                namespace=self.namespace,
                name=self.name,
                dry_run=self.dry_run,
            )
        return out


def is_discovery_path(path: str) -> bool:
    """``/`` (the list of paths) or a path under one of DISCOVERY_PREFIXES.
    A path with dot segments never is (``/version/../logs/x`` is not under
    ``/version`` once the server resolves it)."""
    path = path.rstrip("/")
    if "/." in path:
        return False
    return not path or any(path == p or path.startswith(p + "/") for p in DISCOVERY_PREFIXES)


def _split(path: str) -> list[str]:
    """The segments of a path decoded once already (aiohttp's, like Go's
    ``URL.Path``, which the API server splits): not decoded again, or a
    ``%25xx`` in a name would be read as what the server never sees."""
    return [p for p in path.split("/") if p]


def classify(method: str, path: str, query_string: str = "") -> KubeRequest:
    """Classify a request (cached: kubectl repeats the same few requests;
    treat the result, including its ``query``, as read-only). ``path`` is
    percent-decoded (aiohttp's ``request.path``), ``query_string`` is not
    (the target's part after ``?`` as sent): each is then decoded once, as
    the API server decodes them."""
    if len(path) + len(query_string) > 2048:
        return _classify_uncached(method, path, query_string)
    return _classify_cached(method, path, query_string)


def _classify_uncached(method: str, path: str, query_string: str = "") -> KubeRequest:
    method = (method or "GET").upper()
    try:
        return _classify(method, path or "/", query_string or "")
    except Exception:  # never let a strange path crash a request
        return KubeRequest(method=method, path=path or "/", verb=method.lower())


_classify_cached = functools.lru_cache(maxsize=4096)(_classify_uncached)


def _classify(method: str, path: str, query_string: str) -> KubeRequest:
    query = parse_qs(query_string, keep_blank_values=True)
    parts = _split(path)
    nonresource = KubeRequest(method=method, path=path, verb=method.lower(), query=query)
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return nonresource
    if not rest:  # /api/v1, /apis/apps/v1: discovery
        return nonresource
    watch = False
    if rest[0] == "watch":
        watch = True
        rest = rest[1:]
        if not rest:
            return nonresource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if resource == "namespaces":
        namespace = ""
    watch = watch or query_bool(query, "watch")
    verb = _verb(method, name, subresource, watch)
    dry_run = "All" in query.get("dryRun", [])
    proxy_path = tuple(rest[3:]) if verb == "proxy" else ()
    return KubeRequest(
        method=method,
        path=path,
        verb=verb,
        resource_request=True,
        group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        dry_run=dry_run,
        query=query,
        proxy_path=proxy_path,
    )


def query_bool(query: Mapping[str, Sequence[str]], name: str) -> bool:
    """A boolean query parameter as the API server reads it
    (``Convert_Slice_string_To_bool``): absent, ``0`` or ``false`` (any case)
    is false, any other value -- ``yes``, an empty ``?watch`` -- is true.
    Reading it any other way would take a watch for a list (buffered to its
    end, masked as one document) while the server streams events."""
    values = query.get(name)
    if not values:
        return False
    return values[0] != "0" and values[0].lower() != "false"


def _verb(method: str, name: str, subresource: str, watch: bool) -> str:
    special = VERB_SUBRESOURCES.get(subresource)
    if special is not None and (special != "logs" or method == "GET"):
        return special
    if method in ("GET", "HEAD"):
        if watch:
            return "watch"
        return "get" if name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return method.lower()
