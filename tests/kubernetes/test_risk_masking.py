"""Risk scoring, body masking and the protobuf reader (sans-IO)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopd.config import RiskRule, RiskSection
from hoopd.model import Verdict
from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.kubernetes import _proto
from protocols.kubernetes._paths import classify
from protocols.kubernetes.bodies import LAST_APPLIED, BodyMasker
from protocols.kubernetes.exec import exit_code, parse_resize
from protocols.kubernetes.proxy import _refused_encoding, decode_body, json_accept
from protocols.kubernetes.risk import assess, with_rules
from tests.masking.samples import PEM


def cats(method: str, path: str, body: Any = None, query: str = "", **kw: Any) -> set[str]:
    return set(assess(classify(method, path, query), body, **kw).categories)


def test_risk_categories() -> None:
    assert cats("DELETE", "/api/v1/namespaces/prod") == {"delete_namespace"}
    assert "deletecollection" in cats("DELETE", "/api/v1/namespaces/prod/pods")
    assert cats("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/a.b") == {"delete_crd"}
    assert cats("DELETE", "/api/v1/persistentvolumes/pv1") == {"delete_pv"}
    assert cats("GET", "/api/v1/namespaces/a/secrets/x") == {"read_secret"}
    assert cats("GET", "/api/v1/namespaces/a/pods/p/exec") == {"exec"}
    assert cats("GET", "/api/v1/namespaces/a/pods") == {"read"}
    assert cats("GET", "/version") == {"read"}
    binding = {"kind": "ClusterRoleBinding", "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}
    assert cats("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding) == {"rbac_change", "cluster_admin"}
    assert cats("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles", {"rules": [{"verbs": ["get"], "resources": ["pods"]}]}) == {"rbac_change"}
    pod = {"spec": {"hostNetwork": True, "containers": [{"name": "c", "securityContext": {"privileged": True}}], "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}}
    found = assess(classify("POST", "/api/v1/namespaces/a/pods"), pod)
    assert found.categories == {"privileged_pod"} and found.score == 85
    assert "privileged container" in found.reasons[0] and "hostPath volume /" in found.reasons[0]
    deploy = {"spec": {"template": {"spec": {"containers": [{"securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}}}
    assert cats("PATCH", "/apis/apps/v1/namespaces/a/deployments/d", deploy) == {"privileged_pod"}
    assert cats("PATCH", "/api/v1/namespaces/a/pods/p", [{"op": "add", "path": "/spec/containers/0/securityContext/privileged", "value": True}]) == {"privileged_pod"}
    assert cats("POST", "/api/v1/namespaces/a/pods", {"kind": "Pod"}, opaque_body=True) == {"opaque_pod_spec"}


def test_scale_to_zero_only_in_protected_namespaces() -> None:
    zero = {"spec": {"replicas": 0}}
    path = "/apis/apps/v1/namespaces/prod/deployments/web/scale"
    assert cats("PATCH", path, zero, protected_namespaces=["prod"]) == {"scale_to_zero"}
    assert "scale_to_zero" not in cats("PATCH", path, zero, protected_namespaces=["other"])
    assert "scale_to_zero" not in cats("PATCH", path, {"spec": {"replicas": 2}}, protected_namespaces=["prod"])


def test_dry_run_caps_score() -> None:
    found = assess(classify("DELETE", "/api/v1/namespaces/prod", "dryRun=All"))
    assert found.score == 10 and "delete_namespace" in found.categories


def test_connection_rules() -> None:
    risk = RiskSection(rules=(RiskRule(match="exec", action=Verdict.DENY), RiskRule(id="no-kube-system", pattern=r"-n kube-system\b", action=Verdict.REVIEW)))
    req = classify("GET", "/api/v1/namespaces/kube-system/pods/p/exec", "command=sh")
    found = with_rules(assess(req), req.text(), risk)
    assert found.rule_verdicts == {"exec": Verdict.DENY, "no-kube-system": Verdict.REVIEW}
    req = classify("GET", "/api/v1/namespaces/default/pods")
    assert with_rules(assess(req), req.text(), risk).rule_verdicts == {}


def masker(**kw: Any) -> BodyMasker:
    return BodyMasker(build_masker(MaskingConfig(), b"k" * 32), **kw)


SECRET = {
    "kind": "Secret",
    "apiVersion": "v1",
    "metadata": {"name": "db", "annotations": {LAST_APPLIED: json.dumps({"kind": "Secret", "data": {"password": base64.b64encode(b"hunter2").decode()}})}},
    "data": {"password": base64.b64encode(b"hunter2").decode()},
}
POD = {
    "kind": "Pod",
    "metadata": {"name": "p", "annotations": {LAST_APPLIED: json.dumps({"kind": "Pod", "spec": {"containers": [{"env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}})}},
    "spec": {"containers": [{"name": "c", "env": [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "FROM", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}]}]},
}
B64 = base64.b64encode(b"hunter2")


def test_secret_object_list_table_and_watch_are_masked() -> None:
    bm = masker()
    for doc in (
        SECRET,
        {"kind": "SecretList", "items": [SECRET]},
        {"kind": "Table", "rows": [{"cells": ["db"], "object": {"kind": "PartialObjectMetadata", "metadata": SECRET["metadata"]}}]},
        {"kind": "Table", "rows": [{"cells": ["db"], "object": SECRET}]},
    ):
        out, counts = bm.mask_document(json.dumps(doc).encode())
        assert B64 not in out and b"hunter2" not in out, doc["kind"]
        assert counts
    lines = bm.lines()
    event = json.dumps({"type": "ADDED", "object": SECRET}).encode() + b"\n"
    got = b""
    for i in range(len(event)):  # split at every byte: nothing leaks, same result
        piece, _ = lines.feed(event[i : i + 1])
        got += piece
    assert got.endswith(b"\n") and B64 not in got
    whole, _ = bm.lines().feed(event)
    assert whole == got


def test_text_body_with_a_private_key_over_several_lines_is_masked() -> None:
    """A body that is not JSON but has several lines (a pod's proxied log
    file, an aggregated API's text) is masked line by line for the JSON lines
    in it, and by content for runs of other lines together: a PEM private key
    loses its body lines too, not only its header line."""
    body = b"starting\n" + PEM.encode() + b"\n" + json.dumps({"type": "ADDED", "object": SECRET}).encode() + b"\ndone\n"
    out, counts = masker().mask_document(body)
    assert b"MIIEpAIBAAKCAQEA1c7" not in out and b"rXz6Ly3hr3nW6a" not in out and B64 not in out
    assert out.startswith(b"starting\n[PRIVATE_KEY]\n") and out.endswith(b"\ndone\n")
    assert counts.get("pem_private_key") == 1


def test_pod_env_and_last_applied_masked() -> None:
    out, counts = masker().mask_document(json.dumps(POD).encode())
    assert b"hunter2" not in out
    doc = json.loads(out)
    assert doc["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["key"] == "y"
    assert counts["kubernetes_env"] >= 2
    out, _ = masker(mask_env="none").mask_document(json.dumps(POD).encode())
    assert b"hunter2" in out


def test_configmap_keys_by_option() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"db_url": "postgres://u:secretpw@h/db", "color": "blue"}}
    out, _ = masker(configmap_keys=["db_*"]).mask_document(json.dumps(cm).encode())
    doc = json.loads(out)
    assert doc["data"]["db_url"] == "***" and doc["data"]["color"] == "blue"


def _as_listed(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as a list's item from the API server: without kind and apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


LISTED_SECRET = {
    "metadata": {"name": "regcred", "namespace": "default"},
    "type": "Opaque",
    # keys that no secret-key-name rule knows: only the Secret rule masks them
    "data": {"motd": base64.b64encode(b"list-hunter2").decode(), "config.yaml": B64.decode()},
}


@pytest.mark.parametrize("mode", ["replace", "mask"])
def test_secret_list_items_without_kind_are_secrets(mode: str) -> None:
    """``kubectl get secrets -o json`` (and every client listing Secrets)
    gets a SecretList whose items do not say ``kind: Secret``."""
    bm = BodyMasker(
        build_masker(MaskingConfig.model_validate({"kubernetes_secrets": mode, "rules": [{"id": "h", "pattern": "hunter2"}]}), b"k" * 32)
    )
    listed = {"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": [LISTED_SECRET, _as_listed(SECRET)]}
    raw = json.dumps(listed).encode()
    out, counts = bm.mask_document(raw)
    assert b"list-hunter2" not in base64.b64decode(json.loads(out)["items"][0]["data"]["motd"])
    assert B64 not in out and b"hunter2" not in out
    assert counts
    # a document too deep to parse goes through the tolerant scan: same rule
    deep = raw[:-1] + b',"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    out, _ = bm.mask_document(deep)
    assert B64 not in out and base64.b64encode(b"list-hunter2") not in out
    # an item that says another kind is that kind
    other = {**listed, "items": [{**LISTED_SECRET, "kind": "NotASecret"}]}
    out, _ = bm.mask_document(json.dumps(other).encode())
    assert base64.b64encode(b"list-hunter2") in out


def test_configmap_list_items_without_kind_get_configmap_keys() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"db_url": "postgres://u:secretpw@h/db", "color": "blue"}}
    listed = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {}, "items": [_as_listed(cm), cm]}
    out, counts = masker(configmap_keys=["db_*"]).mask_document(json.dumps(listed).encode())
    items = json.loads(out)["items"]
    assert [i["data"]["db_url"] for i in items] == ["***", "***"]
    assert [i["data"]["color"] for i in items] == ["blue", "blue"]
    assert counts == {"kubernetes_configmap": 2}


def test_logs_stream_masking_split_anywhere() -> None:
    bm = masker()
    text = b"connecting with password=hunter2 now\nok\n"
    whole = bm.stream()
    expected = whole.feed(text) + whole.flush()
    assert b"hunter2" not in expected
    for cut in range(1, len(text)):
        s = bm.stream()
        assert s.feed(text[:cut]) + s.feed(text[cut:]) + s.flush() == expected


def test_non_json_document_falls_back_to_content() -> None:
    out, _ = masker().mask_document(b"password=hunter2 not json")
    assert b"hunter2" not in out


def test_several_json_documents_are_masked_line_by_line() -> None:
    """A JSON body that is not one document (watch events read as a whole)
    is masked per line, Secret data included, not by content rules alone."""
    event = json.dumps({"type": "ADDED", "object": SECRET}).encode()
    out, counts = masker().mask_document(event + b"\n" + event + b"\n")
    assert B64 not in out and counts.get("kubernetes_secret")
    assert [json.loads(line)["type"] for line in out.splitlines()] == ["ADDED", "ADDED"]
    assert out.endswith(b"\n")


def test_watch_flag_read_as_the_api_server_reads_it() -> None:
    for query in ("watch=yes", "watch", "watch=", "watch=TRUE", "watch=1"):
        assert classify("GET", "/api/v1/secrets", query).verb == "watch", query
    for query in ("watch=0", "watch=false", "watch=False", "", "watchx=1"):
        assert classify("GET", "/api/v1/secrets", query).verb == "list", query


def test_upstream_is_asked_for_json_only() -> None:
    assert json_accept("application/yaml") == "application/json"
    assert json_accept("application/YAML, application/json;q=0.9") == "application/json;q=0.9"
    assert json_accept("application/vnd.kubernetes.protobuf,application/json") == "application/json"
    assert json_accept("application/json;as=Table;v=v1;g=meta.k8s.io,application/json") == (
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    )
    secret = classify("GET", "/api/v1/namespaces/d/secrets/x")
    assert _refused_encoding(secret, "application/yaml")
    assert _refused_encoding(secret, "application/vnd.kubernetes.protobuf")
    assert not _refused_encoding(secret, "application/json")
    proxied = classify("GET", "/api/v1/namespaces/d/services/s/proxy/config.yaml")
    assert not _refused_encoding(proxied, "application/yaml")
    assert not _refused_encoding(classify("GET", "/logs/a.yaml"), "application/yaml")


def _pb_field(num: int, payload: bytes) -> bytes:
    return bytes([(num << 3) | 2, len(payload)]) + payload


def test_protobuf_envelope() -> None:
    meta = _pb_field(1, b"db") + _pb_field(3, b"prod") + _pb_field(11, _pb_field(1, b"app") + _pb_field(2, b"web"))
    role_ref = _pb_field(2, b"ClusterRole") + _pb_field(3, b"cluster-admin")
    raw = _pb_field(1, meta) + _pb_field(3, role_ref)
    body = _proto.MAGIC + _pb_field(1, _pb_field(1, b"rbac.authorization.k8s.io/v1") + _pb_field(2, b"ClusterRoleBinding")) + _pb_field(2, raw)
    obj = _proto.decode(body)
    assert obj is not None
    assert (obj.kind, obj.name, obj.namespace, obj.labels) == ("ClusterRoleBinding", "db", "prod", {"app": "web"})
    assert _proto.rbac_fields(obj) == {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}


@given(st.binary(max_size=300))
def test_protobuf_garbage_never_raises(data: bytes) -> None:
    _proto.decode(_proto.MAGIC + data)
    _proto.decode(data)


@given(st.binary(max_size=200))
def test_exec_frames_garbage(data: bytes) -> None:
    exit_code(data)
    parse_resize(data)


def test_exit_code_and_resize() -> None:
    assert exit_code(b'{"status":"Success"}') == 0
    assert exit_code(json.dumps({"status": "Failure", "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}).encode()) == 3
    assert parse_resize(b'{"Width":120,"Height":40}') == (120, 40)
    assert parse_resize(b'{"Width":0,"Height":40}') is None


@given(st.lists(st.sampled_from(["plain", "alice@example.com", "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE", "a\"b", "é", "password=hunter2", "123-45-6789", "x\\u0040y"]), max_size=6))
def test_fast_path_matches_full_walk(values: list[str]) -> None:
    bm = masker()
    doc = json.dumps({"kind": "Pod", "metadata": {"name": "p", "labels": {f"k{i}": v for i, v in enumerate(values)}}, "items": values}).encode()
    fast, _ = bm.mask_document(doc)
    bm._triggers = None  # force the full walk (uncached)
    slow, _ = bm._mask_document(doc)
    assert json.loads(fast) == json.loads(slow)


@given(
    st.lists(st.sampled_from(["plain", "alice@example.com", "AKIAIOSFODNN7EXAMPLE", "a\"b", "é", "password=hunter2", "x\\u0040y", ""]), max_size=5),
    st.sampled_from(["all", "rules", "none"]),
)
def test_env_fast_path_matches_full_walk(values: list[str], mask_env: str) -> None:
    """Documents with env values / ConfigMaps take the Kubernetes-only pass when
    their raw bytes hold nothing for the generic masker: same result as the walk."""
    bm = masker(mask_env=mask_env, configmap_keys=["*pass*"])
    env = [{"name": f"V{i}", "value": v} for i, v in enumerate(values)]
    pod = {"kind": "Pod", "metadata": {"name": "p", "labels": {"a": values[0] if values else "x"}}, "spec": {"containers": [{"name": "c", "env": env}]}}
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {f"pass{i}": v for i, v in enumerate(values)} | {"other": "v"}}
    for doc in (pod, cm, {"kind": "List", "items": [pod, cm]}):
        raw = json.dumps(doc).encode()
        fast, fc = bm.mask_document(raw)
        triggers = bm._triggers
        bm._triggers = None  # force the full walk (uncached)
        slow, sc = bm._mask_document(raw)
        bm._triggers = triggers
        assert json.loads(fast) == json.loads(slow)
        assert fc == sc


def test_cached_documents_same_result_and_counts() -> None:
    bm = masker()
    pod = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "hunter2"}]}]}}
    raw = json.dumps(pod).encode()
    first, c1 = bm.mask_document(raw)
    c1["mutated"] = 1  # callers may keep or change their counts
    second, c2 = bm.mask_document(raw)
    assert first == second and b"hunter2" not in second
    assert c2 == {"kubernetes_env": 1}


@pytest.mark.parametrize("depth", [900, 3000, 100_000])
def test_objects_nested_too_deep_to_parse_are_still_masked(depth: int) -> None:
    """A custom resource nested deeper than Python's parser or the walk go
    (a user can store one to break every read of a list holding it): the
    tolerant key scan replaces a Secret's data and secret-named values, the
    content rules the rest; no exception reaches the request."""
    secret = {"kind": "Secret", "data": {"token": base64.b64encode(b"hunter2-b64").decode()}}
    inner = {"spec": {"db_password": "opaque-3318", "note": "password=hunter2"}, "items": [secret]}
    data = b"[" * depth + json.dumps(inner).encode() + b"]" * depth
    out, counts = masker().mask_document(data)
    assert out.startswith(b"[" * depth) and out.endswith(b"]" * depth)
    for clear in (b"opaque-3318", b"hunter2", base64.b64encode(b"hunter2-b64")):
        assert clear not in out
    assert counts


def _laughs(levels: int, extra: str = "") -> bytes:
    """"Billion laughs": each list holds nine aliases of the one before (a
    few hundred bytes; 9**levels strings if expanded)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return (extra + "\n".join(lines)).encode()


def test_yaml_aliases_of_collections_make_the_body_opaque() -> None:
    """A YAML request body with an alias of a mapping or sequence is not
    decoded (every walk, str() or recording of the graph would visit 9**n
    nodes on the event loop: seconds at n=7, hours at n=10): opaque, and
    judged as such; an alias of a scalar is kept; JSON is unchanged."""
    bomb = _laughs(9, "kind: Pod\nspec:\n  containers: []\n")
    for ctype, raw in (("application/yaml", bomb), ("application/apply-patch+yaml", _laughs(1))):
        body, opaque = decode_body(ctype, raw)
        decoded = body is not None
        del body  # (never shown by a failing assert: its repr is the expansion)
        assert opaque and not decoded
    assert cats("POST", "/api/v1/namespaces/a/pods", None, opaque_body=True) == {"opaque_pod_spec"}
    # an RBAC object that could not be read may grant anything
    assert cats(
        "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", None, opaque_body=True
    ) == {"rbac_change", "cluster_admin"}
    assert decode_body("application/yaml", b"a: &x 1\nb: *x\nc: [1, 2]\n") == (
        {"a": 1, "b": 1, "c": [1, 2]}, False
    )
    pod = b'{"kind": "Pod", "spec": {"containers": [{"securityContext": {"privileged": true}}]}}'
    body, opaque = decode_body("application/apply-patch+yaml", pod)
    assert not opaque and cats("PATCH", "/api/v1/namespaces/a/pods/p", body) == {"privileged_pod"}


def test_delete_body_dry_run() -> None:
    from protocols.kubernetes.proxy import delete_dry_run

    assert delete_dry_run({"kind": "DeleteOptions", "dryRun": ["All"]})
    assert not delete_dry_run({"kind": "DeleteOptions"})
    assert not delete_dry_run({"dryRun": []}) and not delete_dry_run({"dryRun": ["All", "x"]})
    assert not delete_dry_run({"dryRun": "All"}) and not delete_dry_run(None) and not delete_dry_run([])
    # an older API server matched keys in any case, the last one winning
    assert not delete_dry_run({"dryRun": ["All"], "dryrun": []})


def test_protobuf_fields_given_twice_read_as_go_reads_them() -> None:
    """A message field given twice is merged, a string's last value wins."""
    meta = _pb_field(1, _pb_field(1, b"first") + _pb_field(11, _pb_field(1, b"a") + _pb_field(2, b"1")))
    meta += _pb_field(1, _pb_field(1, b"second") + _pb_field(11, _pb_field(1, b"b") + _pb_field(2, b"2")))
    refs = _pb_field(3, _pb_field(2, b"ClusterRole") + _pb_field(3, b"view")) + _pb_field(3, _pb_field(3, b"cluster-admin"))
    body = _proto.MAGIC + _pb_field(1, _pb_field(2, b"ClusterRoleBinding")) + _pb_field(2, meta + refs)
    obj = _proto.decode(body)
    assert obj is not None and obj.name == "second" and obj.labels == {"a": "1", "b": "2"}
    assert _proto.rbac_fields(obj) == {"roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}}


def test_yaml_bodies_read_with_the_api_server_s_words() -> None:
    body, opaque = decode_body("application/apply-patch+yaml", b"spec: {replicas: 0o0}\n")
    assert body == {"spec": {"replicas": 0}} and not opaque
    path = "/apis/apps/v1/namespaces/prod/deployments/web"
    assert "scale_to_zero" in cats("PATCH", path, body, protected_namespaces=["prod"])
    body, _ = decode_body("application/yaml", b"spec: {containers: [{securityContext: {privileged: Y}}]}\n")
    assert "privileged_pod" in cats("POST", "/api/v1/namespaces/a/pods", body)
    assert decode_body("application/yaml", b"a: 'y'\nb: '0o0'\n")[0] == {"a": "y", "b": "0o0"}


def test_table_cells_under_a_secret_column_are_masked() -> None:
    bm = masker()
    cols = [{"name": "Name"}, {"name": "Password"}, {"name": "API Token"}, {"name": "Secrets"}]
    doc = {"kind": "Table", "columnDefinitions": cols, "rows": [{"cells": ["app", "tbl-pw-1", "tok-1", 1]}]}
    out, counts = bm.mask_document(json.dumps(doc).encode())
    assert b"tbl-pw-1" not in out and b"tok-1" not in out and counts
    assert json.loads(out)["rows"][0]["cells"][0] == "app" and json.loads(out)["rows"][0]["cells"][3] == 1
    # a watch: the first event says the columns, the next ones do not
    lines = bm.lines()
    first = {"type": "ADDED", "object": doc}
    later = {"type": "ADDED", "object": {**doc, "columnDefinitions": [], "rows": [{"cells": ["b", "tbl-pw-2", "tok-2", 0]}]}}
    got, _ = lines.feed((json.dumps(first) + "\n" + json.dumps(later) + "\n").encode())
    assert b"tbl-pw-1" not in got and b"tbl-pw-2" not in got and b"tok-2" not in got
    # a Table without such a column passes as it came
    plain = json.dumps({"kind": "Table", "columnDefinitions": [{"name": "Name"}], "rows": [{"cells": ["x"]}]}).encode()
    assert bm.mask_document(plain) == (plain, {})


def test_large_table_with_a_secret_column_is_masked() -> None:
    import asyncio

    bm = masker()
    rows = [{"cells": [f"user-{i}", f"big-pw-{i:06d}"], "object": {"kind": "PartialObjectMetadata", "metadata": {"name": f"user-{i}"}}} for i in range(4000)]
    doc = json.dumps({"kind": "Table", "columnDefinitions": [{"name": "Name"}, {"name": "Password"}], "rows": rows}).encode()
    assert len(doc) > 256 * 1024
    out, counts = asyncio.run(bm.mask_large_document(doc))
    assert b"big-pw-" not in out and counts.get("secret_key_value") == 4000
