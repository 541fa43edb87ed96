"""A small JSONPath subset for masking rules.

Supported: ``$`` (root), ``.name``, ``['name']`` / ``["name"]``, ``[N]``,
``[*]`` / ``.*`` (any child) and ``..name`` / ``..*`` (descendant at any depth).
Filters and slices are not supported. Paths are matched while walking a
document: a walker keeps a set of states per node (an NFA over the steps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""\.\.(?P<desc>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\.(?P<key>[A-Za-z0-9_$@-]+|\*)"""
    r"""|\[(?:(?P<idx>-?[0-9]+)|(?P<star>\*)|'(?P<sq>[^']*)'|"(?P<dq>[^"]*)")\]"""
)


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "key" | "any" | "index" | "desc"
    key: str | int | None = None


def parse_path(path: str) -> tuple[Step, ...]:
    if not path.startswith("$"):
        raise ValueError(f"JSON path must start with '$': {path!r}")
    steps: list[Step] = []
    i = 1
    while i < len(path):
        m = _TOKEN.match(path, i)
        if m is None:
            raise ValueError(f"unsupported JSON path syntax at offset {i}: {path!r}")
        if m.group("desc") is not None:
            d = m.group("desc")
            steps.append(Step("desc", None if d == "*" else d))
        elif m.group("key") is not None:
            k = m.group("key")
            steps.append(Step("any") if k == "*" else Step("key", k))
        elif m.group("idx") is not None:
            steps.append(Step("index", int(m.group("idx"))))
        elif m.group("star") is not None:
            steps.append(Step("any"))
        else:
            steps.append(Step("key", m.group("sq") if m.group("sq") is not None else m.group("dq")))
        i = m.end()
    if not steps:
        raise ValueError("JSON path '$' would mask the whole document; use a narrower path")
    return tuple(steps)


State = tuple[int, int]  # (path number, step index)


class PathSet:
    """Several parsed paths, each tagged with the rule id it belongs to."""

    def __init__(self, paths: list[tuple[str, tuple[Step, ...]]]) -> None:
        self.paths = paths

    def __bool__(self) -> bool:
        return bool(self.paths)

    def start(self) -> frozenset[State]:
        return frozenset((n, 0) for n in range(len(self.paths)))

    def child(
        self, states: frozenset[State], key: str | int
    ) -> tuple[frozenset[State], str | None]:
        """States after stepping into ``key``; second item: rule id if a path ends here."""
        out: set[State] = set()
        hit: str | None = None
        for n, i in states:
            rule_id, steps = self.paths[n]
            if i >= len(steps):
                continue
            step = steps[i]
            advanced = False
            if step.kind == "key":
                advanced = key == step.key
            elif step.kind == "any":
                advanced = True
            elif step.kind == "index":
                advanced = key == step.key
            else:  # desc
                out.add((n, i))
                advanced = step.key is None or key == step.key
            if advanced:
                if i + 1 == len(steps):
                    hit = hit or rule_id
                else:
                    out.add((n, i + 1))
        return frozenset(out), hit
