"""A large list is masked a slice at a time (``protocols.kubernetes._slices``):
the result is byte for byte what masking the whole document gives, and the
event loop keeps serving other sessions meanwhile."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from masking.config import MaskingConfig
from masking.engine import build_masker
from protocols.kubernetes._slices import mask_sliced
from protocols.kubernetes.bodies import LAST_APPLIED, BodyMasker


def body_masker(**config: Any) -> BodyMasker:
    cfg = MaskingConfig.model_validate({"recognizers": {"personal": True}, **config})
    return BodyMasker(build_masker(cfg, b"k" * 32), configmap_keys=["db_*"])


MASKERS = [
    body_masker(),
    body_masker(kubernetes_secrets="mask"),
    body_masker(rules=[{"id": "ssn-col", "fields": ["ssn"]}]),
]

text = st.sampled_from(
    ["plain", "ann@example.com", "4111 1111 1111 1111", "10.1.2.3", "caf\u00e9", "a\u0040b.c",
     "password=hunter2", "", "db: postgres://u:pw@h/x"]
)  # fmt: skip
scalar = st.one_of(text, st.integers(-5, 10**17), st.booleans(), st.none())
env = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["MODE", "DB_PASSWORD"]), "value": text}),
    max_size=2,
)


@st.composite
def item(draw: st.DrawFn) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": draw(text)}}
    if draw(st.booleans()):
        obj["kind"] = draw(st.sampled_from(["Pod", "Secret", "ConfigMap", "Other"]))
    shape = draw(st.sampled_from(["pod", "data", "free", "applied"]))
    if shape == "pod":
        obj["spec"] = {"containers": [{"name": "c", "env": draw(env)}]}
    elif shape == "data":
        values = draw(
            st.dictionaries(st.sampled_from(["db_url", "motd", "ssn", "color"]), text, max_size=3)
        )
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    elif shape == "applied":
        inner = {"kind": "Secret", "data": {"motd": base64.b64encode(draw(text).encode()).decode()}}
        obj["metadata"]["annotations"] = {LAST_APPLIED: json.dumps(inner)}
    else:
        obj["extra"] = draw(
            st.dictionaries(st.sampled_from(["a", "ssn", "note"]), scalar, max_size=3)
        )
    return obj


@st.composite
def list_document(draw: st.DrawFn) -> bytes:
    key = draw(st.sampled_from(["items", "rows"]))
    kind = draw(st.sampled_from(["PodList", "SecretList", "ConfigMapList", "Table", "List"]))
    members: list[tuple[str, Any]] = [
        ("kind", kind),
        ("apiVersion", "v1"),
        ("metadata", {"resourceVersion": "7", "note": draw(text)}),
        (key, draw(st.lists(item(), max_size=6))),
    ]
    order = draw(st.permutations(members))
    if draw(st.booleans()):
        order = members  # the API server's order (kind first) most of the time
    indent = draw(st.sampled_from([None, 1]))
    return json.dumps(dict(order), indent=indent, ensure_ascii=draw(st.booleans())).encode()


@settings(max_examples=300, deadline=None)
@given(list_document(), st.sampled_from(range(len(MASKERS))))
def test_sliced_is_the_whole_document_masked(doc: bytes, which: int) -> None:
    bm = MASKERS[which]
    sliced = asyncio.run(mask_sliced(bm, doc))
    whole = bm.mask_document(doc)
    kind_first = doc.find(b'"kind"') < min(
        i for i in (doc.find(b'"items"'), doc.find(b'"rows"')) if i >= 0
    )
    if kind_first:
        assert sliced is not None
    if sliced is not None:
        assert sliced == whole


def test_shapes_it_does_not_slice_fall_back() -> None:
    bm = MASKERS[0]
    for doc in (
        b"[1, 2]",
        b'{"kind": "Pod"}',
        b'{"items": 3}',
        b'{"items": [], "items": []}',
        b"{",
        b'{"a":1} x',
    ):
        assert asyncio.run(mask_sliced(bm, doc)) is None, doc
    paths = body_masker(rules=[{"id": "p", "json_paths": ["$.items[0].x"]}])
    assert asyncio.run(mask_sliced(paths, b'{"kind":"List","items":[{"x":"y"}]}')) is None


def test_the_loop_goes_on_while_a_large_list_is_masked() -> None:
    """4 MB of pods whose every value needs masking: masked whole, the loop
    would be held for the whole time (about 2 s here); sliced, a ticker
    running beside it never waits more than a few slices."""
    bm = MASKERS[0]
    pods = [
        {
            "metadata": {"name": f"pod-{i}", "annotations": {"owner": f"user{i}@example.com"}},
            "spec": {
                "containers": [{"name": "c", "env": [{"name": "DB_PASSWORD", "value": f"pw{i}"}]}]
            },
            "status": {"podIP": f"10.0.{i % 250}.{i % 200}"},
        }
        for i in range(20000)
    ]
    doc = json.dumps(
        {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
    ).encode()

    async def run() -> tuple[float, float, tuple[bytes, dict[str, int]]]:
        gaps: list[float] = []
        done = False

        async def ticker() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.perf_counter()
        result = await bm.mask_large_document(doc)
        took = time.perf_counter() - started
        done = True
        await task
        return took, max(gaps), result

    took, worst, (out, counts) = asyncio.run(run())
    assert counts["kubernetes_env"] == 20000 and counts["email"] == 20000
    assert b"user7@example.com" not in out and b"pw7" not in out
    assert took > 0.5  # (otherwise the check below says nothing)
    assert worst < 0.25 * took, (worst, took)
