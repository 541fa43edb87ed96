"""The sans-IO request classifier."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.kubernetes._paths import classify


@pytest.mark.parametrize(
    ("method", "path", "query", "verb", "resource", "sub", "ns", "name", "text"),
    [
        ("GET", "/api/v1/namespaces/default/pods", "limit=500", "list", "pods", "", "default", "", "list pods -n default"),
        ("GET", "/api/v1/namespaces/default/pods/web-0", "", "get", "pods", "", "default", "web-0", "get pods web-0 -n default"),
        ("GET", "/api/v1/pods", "watch=true&resourceVersion=5", "watch", "pods", "", "", "", "watch pods"),
        ("GET", "/api/v1/watch/namespaces/x/pods", "", "watch", "pods", "", "x", "", "watch pods -n x"),
        ("POST", "/api/v1/namespaces/default/secrets", "", "create", "secrets", "", "default", "", "create secrets -n default"),
        ("PUT", "/apis/apps/v1/namespaces/p/deployments/web", "", "update", "deployments", "", "p", "web", "update deployments.apps web -n p"),
        ("PATCH", "/apis/apps/v1/namespaces/p/deployments/web/scale", "", "patch", "deployments", "scale", "p", "web", "patch deployments.apps/scale web -n p"),
        ("DELETE", "/api/v1/namespaces/foo", "", "delete", "namespaces", "", "", "foo", "delete namespaces foo"),
        ("PUT", "/api/v1/namespaces/foo/finalize", "", "update", "namespaces", "finalize", "", "foo", "update namespaces/finalize foo"),
        ("DELETE", "/api/v1/namespaces/d/pods", "labelSelector=a", "deletecollection", "pods", "", "d", "", "deletecollection pods -n d"),
        ("GET", "/api/v1/namespaces/d/pods/w/log", "follow=true", "logs", "pods", "log", "d", "w", "logs pods w -n d"),
        ("GET", "/api/v1/namespaces/d/pods/w/exec", "command=sh&command=-c&command=echo+hi&container=main", "exec", "pods", "exec", "d", "w", "exec pods w -n d -c main -- sh -c 'echo hi'"),
        ("POST", "/api/v1/namespaces/d/pods/w/attach", "", "attach", "pods", "attach", "d", "w", "attach pods w -n d"),
        ("POST", "/api/v1/namespaces/d/pods/w/portforward", "ports=8080", "portforward", "pods", "portforward", "d", "w", "portforward pods w -n d 8080"),
        ("GET", "/api/v1/namespaces/d/services/s/proxy/metrics", "", "proxy", "services", "proxy", "d", "s", "proxy services s -n d"),
        ("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com", "dryRun=All", "delete", "customresourcedefinitions", "", "", "x.example.com", "delete customresourcedefinitions.apiextensions.k8s.io x.example.com --dry-run=server"),
    ],
)
def test_classify(method: str, path: str, query: str, verb: str, resource: str, sub: str, ns: str, name: str, text: str) -> None:
    r = classify(method, path, query)
    assert r.resource_request
    assert (r.verb, r.resource, r.subresource, r.namespace, r.name) == (verb, resource, sub, ns, name)
    assert r.text() == text


@pytest.mark.parametrize("path", ["/version", "/api", "/apis", "/api/v1", "/apis/apps/v1", "/openapi/v3", "/healthz", "/", "/apis/apps"])
def test_nonresource(path: str) -> None:
    r = classify("GET", path)
    assert not r.resource_request and r.discovery
    assert r.verb == "get"
    assert r.text() == f"get {path}"


@pytest.mark.parametrize("path", ["/logs/kube-apiserver.log", "/logs", "/metrics", "/debug/pprof/", "/version/../logs/x", "/apis/../logs/x"])
def test_other_nonresource_paths_are_not_discovery(path: str) -> None:
    """Their responses are masked: only discovery documents pass unmasked."""
    assert not classify("GET", path).discovery


def test_dry_run_and_attrs() -> None:
    r = classify("POST", "/api/v1/namespaces/a/pods", "dryRun=All&fieldManager=kubectl")
    assert r.dry_run and r.write
    assert r.attrs()["dry_run"] is True and r.attrs()["namespace"] == "a"


@given(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "", "X\x00"]), st.text(max_size=200), st.text(max_size=200))
def test_garbage_never_raises(method: str, path: str, query: str) -> None:
    r = classify(method, path, query)
    assert isinstance(r.text(), str)
    assert isinstance(r.attrs(), dict)


@given(st.lists(st.sampled_from(["api", "apis", "v1", "apps", "namespaces", "watch", "x", "pods", "exec", "status", "%2F", "..", ""]), max_size=8))
def test_structured_garbage(parts: list[str]) -> None:
    for method in ("GET", "DELETE", "POST"):
        r = classify(method, "/" + "/".join(parts))
        r.text()
