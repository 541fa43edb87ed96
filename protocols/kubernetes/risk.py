"""Risk of one Kubernetes API request (sans-IO).

Categories (usable in ``risk.rules[].match``) and their scores:

=====================  =====  =============================================
category               score  when
=====================  =====  =============================================
delete_namespace         90   delete/deletecollection of namespaces
delete_crd               90   delete of customresourcedefinitions
delete_pv                80   delete of persistentvolumes
deletecollection         75   any deletecollection
cluster_admin            95   an RBAC object granting cluster-admin or ``*``
rbac_change              60   create/update/patch/delete of RBAC objects
privileged_pod           85   privileged containers, hostPID/hostIPC/hostNetwork,
                              hostPath volumes, added SYS_ADMIN/ALL capabilities
                              (also ephemeral containers: kubectl debug)
opaque_pod_spec          75   a pod-bearing object whose spec could not be inspected
scale_to_zero            80   replicas set to 0 in a protected namespace
exec                     50   exec/attach into a pod (also through a node's
                              kubelet: nodes/NAME/proxy/run|exec|attach/...)
portforward              40   port-forward to a pod (also nodes/NAME/proxy/portForward)
read_secret              50   get/list/watch of secrets
write                    10   any other write
read                      0   reads, discovery
=====================  =====  =============================================

``dryRun=All`` requests never change anything: their score is capped at 10
(the categories stay, so an explicit rule can still match them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hoopd.config import RiskSection
from hoopd.model import Verdict
from hoopd.policy import Assessment

from ._paths import KubeRequest

RBAC_GROUP = "rbac.authorization.k8s.io"
RBAC_RESOURCES = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})
POD_BEARING = frozenset(
    {
        "pods",
        "deployments",
        "statefulsets",
        "daemonsets",
        "replicasets",
        "jobs",
        "cronjobs",
        "podtemplates",
        "replicationcontrollers",
    }
)
SCALABLE = frozenset({"deployments", "statefulsets", "replicasets", "replicationcontrollers"})
DANGEROUS_CAPS = frozenset({"SYS_ADMIN", "ALL", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE"})
HOST_FLAGS = ("hostPID", "hostIPC", "hostNetwork")

SCORES = {
    "cluster_admin": 95,
    "delete_namespace": 90,
    "delete_crd": 90,
    "privileged_pod": 85,
    "delete_pv": 80,
    "scale_to_zero": 80,
    "deletecollection": 75,
    "opaque_pod_spec": 75,
    "rbac_change": 60,
    "exec": 50,
    "read_secret": 50,
    "portforward": 40,
    "write": 10,
    "read": 0,
}


def _walk(node: Any) -> Iterable[tuple[str, Any, Any]]:
    """(key, value, parent) for every mapping entry in a JSON document."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                yield str(k), v, cur
                if isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(cur, list):
            stack.extend(v for v in cur if isinstance(v, dict | list))


def pod_spec_findings(body: Any) -> list[str]:
    """Dangerous pod-spec settings anywhere in an object or a patch."""
    found: list[str] = []
    for key, value, _ in _walk(body):
        if key == "privileged" and value is True:
            found.append("privileged container")
        elif key in HOST_FLAGS and value is True:
            found.append(f"{key}: true")
        elif key == "hostPath" and isinstance(value, dict):
            found.append(f"hostPath volume {value.get('path', '')}".rstrip())
        elif key == "add" and isinstance(value, list):
            caps = {str(c).upper().removeprefix("CAP_") for c in value}
            bad = sorted(caps & DANGEROUS_CAPS)
            if bad:
                found.append("capabilities " + ",".join(bad))
    # JSON patch operations: {"op": "add", "path": ".../privileged", "value": true}
    if isinstance(body, list):
        for op in body:
            if not isinstance(op, dict):
                continue
            path = str(op.get("path", ""))
            leaf = path.rsplit("/", 1)[-1]
            value = op.get("value")
            if (leaf == "privileged" or leaf in HOST_FLAGS) and value is True:
                found.append(f"{leaf}: true (json patch)")
            # .../capabilities/add (a list) or one element of it (add/-, add/0)
            segments = path.split("/")
            if "add" in segments[-2:] and "capabilities" in segments[-3:-1]:
                added = value if isinstance(value, list) else [value]
                caps = {str(c).upper().removeprefix("CAP_") for c in added}
                bad = sorted(caps & DANGEROUS_CAPS)
                if bad:
                    found.append("capabilities " + ",".join(bad) + " (json patch)")
            elif "/hostPath" in path or (isinstance(op.get("value"), dict) and "hostPath" in op["value"]):
                found.append("hostPath volume (json patch)")
    return sorted(set(found))


def _replicas(body: Any) -> int | None:
    if isinstance(body, dict):
        spec = body.get("spec")
        if isinstance(spec, dict) and isinstance(spec.get("replicas"), int):
            return int(spec["replicas"])
    if isinstance(body, list):  # json patch
        for op in body:
            if isinstance(op, dict) and str(op.get("path", "")).endswith("/spec/replicas"):
                value = op.get("value")
                if isinstance(value, int):
                    return value
    return None


def _grants_cluster_admin(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    ref = body.get("roleRef")
    if isinstance(ref, dict) and ref.get("name") == "cluster-admin":
        return True
    meta = body.get("metadata")
    if isinstance(meta, dict) and meta.get("name") == "cluster-admin":
        return True
    for rule in body.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        if "*" in (rule.get("verbs") or []) and "*" in (rule.get("resources") or []):
            return True
    return False


def assess(
    req: KubeRequest,
    body: Any = None,
    *,
    opaque_body: bool = False,
    protected_namespaces: Iterable[str] = (),
) -> Assessment:
    """Score one request. ``body`` is the decoded JSON/YAML request body (or
    None); ``opaque_body`` says a body was sent that could not be decoded."""
    cats: dict[str, str] = {}
    if not req.resource_request:
        return Assessment(0, frozenset({"read"}), ())
    res, verb = req.resource, req.verb
    deleting = verb in ("delete", "deletecollection")
    if verb == "deletecollection":
        cats["deletecollection"] = f"deletes every matching {req.qualified_resource}"
    if deleting and res == "namespaces" and not req.subresource:
        cats["delete_namespace"] = f"deletes namespace {req.name or '(all matching)'} and everything in it"
    if deleting and res == "customresourcedefinitions":
        cats["delete_crd"] = f"deletes CRD {req.name} and every object of it"
    if deleting and res == "persistentvolumes":
        cats["delete_pv"] = f"deletes persistent volume {req.name}"
    if req.group == RBAC_GROUP and res in RBAC_RESOURCES and req.write:
        cats["rbac_change"] = f"{verb} {res} {req.name}".rstrip()
        if _grants_cluster_admin(body) or (deleting and req.name == "cluster-admin"):
            cats["cluster_admin"] = "grants or changes cluster-admin (or * on *)"
        elif opaque_body and body is None:
            # (not decoded: it may grant anything)
            cats["cluster_admin"] = "an RBAC object whose body could not be inspected"
    if res == "secrets" and not req.subresource and verb in ("get", "list", "watch"):
        cats["read_secret"] = f"reads secret{'s' if not req.name else ' ' + req.name}"
    if verb in ("exec", "attach"):
        cats["exec"] = f"{verb} into pod {req.name}"
    if verb == "portforward":
        cats["portforward"] = f"port-forward to pod {req.name}"
    kubelet = req.kubelet_stream
    if kubelet is not None:
        how, namespace, pod = kubelet[:3]
        via = f"through the kubelet of node {req.name}"
        if how == "portforward":
            cats["portforward"] = f"port-forward to pod {pod} in {namespace} {via}"
        else:
            cats["exec"] = f"{how} into pod {pod} in {namespace} {via}"
    # pods/ephemeralcontainers (kubectl debug) adds containers to a running pod
    pod_spec = not req.subresource or (res == "pods" and req.subresource == "ephemeralcontainers")
    if res in POD_BEARING and verb in ("create", "update", "patch") and pod_spec:
        if opaque_body:
            cats["opaque_pod_spec"] = "pod spec could not be inspected (protobuf, YAML aliases, undecodable)"
        else:
            findings = pod_spec_findings(body)
            if findings:
                cats["privileged_pod"] = "; ".join(findings)
    if (
        res in SCALABLE
        and verb in ("update", "patch")
        and req.subresource in ("", "scale")
        and req.namespace in set(protected_namespaces)
        and _replicas(body) == 0
    ):
        cats["scale_to_zero"] = f"scales {res} {req.name} to zero in protected namespace {req.namespace}"
    if not cats:
        if req.write or verb not in ("get", "list", "watch", "logs"):
            cats["write"] = f"{verb} {req.qualified_resource}"
        else:
            cats["read"] = ""
    score = max(SCORES.get(c, 10) for c in cats)
    reasons = [r for r in cats.values() if r]
    if req.dry_run and score > 10:
        score = 10
        reasons.append("dry run: nothing is changed")
    return Assessment(score, frozenset(cats), tuple(reasons))


def with_rules(found: Assessment, text: str, risk: RiskSection | None) -> Assessment:
    """Add the verdicts of the connection's explicit rules (category or RE2 pattern)."""
    if risk is None or not risk.rules:
        return found
    verdicts: dict[str, Verdict] = {}
    for rule in risk.rules:
        if rule.match is not None:
            if rule.match in found.categories:
                verdicts[rule.rule_id] = rule.action
        elif rule.pattern is not None and _pattern(rule.pattern).search(text):
            verdicts[rule.rule_id] = rule.action
    if not verdicts:
        return found
    return Assessment(found.score, found.categories, found.reasons, verdicts)


_COMPILED: dict[str, Any] = {}


def _pattern(pattern: str) -> Any:
    rx = _COMPILED.get(pattern)
    if rx is None:
        import re2

        rx = _COMPILED[pattern] = re2.compile(pattern)
    return rx


def summary(body: Any) -> dict[str, Any]:
    """A short description of a written object for the command's attrs."""
    if isinstance(body, list):
        return {"json_patch_ops": [f"{op.get('op')} {op.get('path')}" for op in body[:20] if isinstance(op, dict)]}
    if not isinstance(body, dict):
        return {}
    out: dict[str, Any] = {}
    for key in ("apiVersion", "kind"):
        if isinstance(body.get(key), str):
            out[key] = body[key]
    meta = body.get("metadata")
    if isinstance(meta, Mapping):
        for key in ("name", "namespace", "generateName"):
            if isinstance(meta.get(key), str):
                out[key] = meta[key]
        if isinstance(meta.get("labels"), Mapping):
            out["labels"] = dict(list(meta["labels"].items())[:20])
    replicas = _replicas(body)
    if replicas is not None:
        out["replicas"] = replicas
    images = sorted({str(v) for k, v, _ in _walk(body) if k == "image" and isinstance(v, str)})
    if images:
        out["images"] = images[:20]
    if isinstance(body.get("data"), Mapping):
        out["data_keys"] = sorted(map(str, body["data"]))[:50]
    return out
