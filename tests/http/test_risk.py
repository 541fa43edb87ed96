"""Request risk: method scores, path rules with globs, normalization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopd.config import RiskSection
from hoopd.model import Verdict
from protocols.http.config import PathRule
from protocols.http.risk import (
    HttpRiskScorer,
    glob_to_regex,
    normalize_path,
    rule_paths,
    split_target,
)


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../../etc", "/etc"),
        ("//admin//x", "/admin/x"),
        ("/%61dmin", "/admin"),
        ("/a%2fb", "/a%2Fb"),
        ("/a/b/", "/a/b/"),
        ("/a/b/..", "/a/"),
        ("/%%361dmin", "/%2561dmin"),  # decoding must not make a new escape
        ("/%2%62", "/%252b"),
        ("/100%", "/100%25"),
    ],
)
def test_normalize_path(raw: str, norm: str) -> None:
    assert normalize_path(raw) == norm


@given(st.text("ab./%2fF6", max_size=30))
def test_normalize_is_idempotent_and_has_no_dot_segments(tail: str) -> None:
    once = normalize_path("/" + tail)
    assert normalize_path(once) == once
    assert "/../" not in once + "/" and "/./" not in once + "/" and "//" not in once


@pytest.mark.parametrize(
    ("glob", "path", "hit"),
    [
        ("/api/**", "/api", True),
        ("/api/**", "/api/", True),
        ("/api/**", "/api/v1/x", True),
        ("/api/**", "/apix", False),
        ("/api/*/items", "/api/v1/items", True),
        ("/api/*/items", "/api/v1/v2/items", False),
        ("/a/**/z", "/a/b/c/z", True),
        ("/file.json", "/fileXjson", False),
    ],
)
def test_glob(glob: str, path: str, hit: bool) -> None:
    import re

    assert bool(re.match(glob_to_regex(glob), path)) is hit


def test_scorer_rules_and_categories() -> None:
    risk = RiskSection.model_validate(
        {"rules": [{"match": "delete", "action": "review"}, {"pattern": r"\?force=1", "action": "deny"}]}
    )
    scorer = HttpRiskScorer(
        (
            PathRule(method="POST", path="/admin/**", action=Verdict.DENY),
            PathRule(method=("PUT", "PATCH"), path="/cfg/*", action=Verdict.REVIEW, id="cfg"),
        ),
        risk,
    )
    a = scorer.assess("GET", "/admin/x", "GET /admin/x")
    assert a.score == 0 and not a.rule_verdicts
    a = scorer.assess("POST", "/admin/x", "POST /admin/x")
    assert a.rule_verdicts == {"http:POST /admin/**": Verdict.DENY}
    a = scorer.assess("PATCH", "/cfg/a", "PATCH /cfg/a")
    assert a.rule_verdicts == {"cfg": Verdict.REVIEW} and "write" in a.categories
    a = scorer.assess("DELETE", "/x", "DELETE /x?force=1")
    assert a.rule_verdicts == {"delete": Verdict.REVIEW, r"pattern:\?force=1": Verdict.DENY}
    assert a.score == 50


@pytest.mark.parametrize(
    ("raw", "readings"),
    [
        ("/admin/users", ("/admin/users",)),
        ("/admin;x/users", ("/admin;x/users", "/admin/users")),
        ("/api/..;/admin", ("/api/..;/admin", "/admin")),
        ("/admin%2Fusers", ("/admin%2Fusers", "/admin/users")),
        ("/api/..%5Cadmin", ("/api/..%5Cadmin", "/admin")),
        ("/%2561dmin", ("/%2561dmin", "/%61dmin", "/admin")),
    ],
)
def test_rule_paths(raw: str, readings: tuple[str, ...]) -> None:
    assert rule_paths(normalize_path(raw)) == readings


def test_rules_fail_closed_on_every_reading_of_the_path() -> None:
    risk = RiskSection.model_validate(
        {
            "rules": [
                {"pattern": "^GET /secret/", "action": "deny"},
                {"pattern": "^DELETE /tmp/", "action": "allow"},
            ]
        }
    )
    scorer = HttpRiskScorer(
        (
            PathRule(path="/admin/**", action=Verdict.DENY, id="admin"),
            PathRule(method="DELETE", path="/scratch/**", action=Verdict.ALLOW, id="scratch"),
        ),
        risk,
    )

    def verdicts(method: str, raw: str) -> dict[str, Verdict]:
        npath = normalize_path(raw)
        return scorer.assess(method, npath, f"{method} {npath}?q=1").rule_verdicts

    for raw in ("/admin;x/users", "/api/..;/admin", "/ADMIN/users", "/admin%2Fx", "/%2561dmin"):
        assert verdicts("GET", raw) == {"admin": Verdict.DENY}, raw
    for raw in ("/secret;x/a", "/SECRET/a", "/x%2F..%2Fsecret/a"):
        assert verdicts("GET", raw) == {"pattern:^GET /secret/": Verdict.DENY}, raw
    # allow only when every reading is allowed
    assert verdicts("DELETE", "/scratch/a;v=1") == {"scratch": Verdict.ALLOW}
    assert verdicts("DELETE", "/scratch/..;/admin") == {"admin": Verdict.DENY}
    assert verdicts("DELETE", "/scratch%2F..%2Fdb") == {}
    assert verdicts("DELETE", "/SCRATCH/a") == {}
    assert verdicts("DELETE", "/tmp/a") == {"pattern:^DELETE /tmp/": Verdict.ALLOW}
    assert verdicts("DELETE", "/tmp/..;/db") == {}


def test_split_target() -> None:
    assert split_target("/a?b=c") == ("/a", "b=c")
    assert split_target("http://h:1/x?y") == ("/x", "y")
    assert split_target("*") == ("*", "")
