"""Request risk: method scores, path rules with globs, normalization."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopd.config import RiskSection
from hoopd.model import Verdict
from protocols.http.config import PathRule
from protocols.http.risk import HttpRiskScorer, glob_to_regex, normalize_path, split_target


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


def test_split_target() -> None:
    assert split_target("/a?b=c") == ("/a", "b=c")
    assert split_target("http://h:1/x?y") == ("/x", "y")
    assert split_target("*") == ("*", "")
