"""``risk.rules`` patterns see the query as the backend reads it: escapes
decoded (``+`` as a space), and lower-cased for deny/review/mask rules as
the path is. Before, ``POST /api/refunds?force=%74rue`` (every framework
reads ``force=true``) passed a ``force=true`` deny pattern to the upstream."""

from __future__ import annotations

import pytest

from tests.http.conftest import Env, raw_request


def _post(env: Env, target: str) -> bytes:
    return raw_request(env, "POST", target, body=b"{}")


@pytest.mark.parametrize(
    "target",
    [
        "/api/refunds?force=true",
        "/api/refunds?force=%74rue",
        "/api/refunds?%66orce=true",
        "/api/refunds?id=1&force=%2574rue",  # decoded twice by some backends
        "/api/refunds?id=1&force=TRUE",
    ],
)
def test_query_pattern_matches_what_the_backend_reads(env: Env, target: str) -> None:
    before = len(env.upstream.requests)
    data = _post(env, target)
    assert data.startswith(b"HTTP/1.1 403"), (target, data)
    assert b'"error":"denied"' in data
    assert len(env.upstream.requests) == before


def test_other_queries_pass(env: Env) -> None:
    data = _post(env, "/api/refunds?force=false&note=true")
    assert data.startswith(b"HTTP/1.1 200"), data


def test_query_readings_and_allow_rules() -> None:
    from hoopd.config import RiskSection
    from hoopd.model import Verdict
    from protocols.http.risk import HttpRiskScorer

    scorer = HttpRiskScorer(
        (),
        RiskSection.model_validate(
            {
                "rules": [
                    {"pattern": r"^GET /pub\?page=\d+$", "action": "allow", "id": "pages"},
                    {"pattern": r"q=drop table", "action": "deny", "id": "drop"},
                ]
            }
        ),
    )
    assert scorer.assess("GET", "/pub", "GET /pub?page=2").rule_verdicts == {"pages": Verdict.ALLOW}
    # an allow holds only when every reading matches it
    assert scorer.assess("GET", "/pub", "GET /pub?page=2%26x=1").rule_verdicts == {}
    assert scorer.assess("GET", "/x", "GET /x?q=DROP+TABLE").rule_verdicts == {"drop": Verdict.DENY}
    assert scorer.assess("GET", "/x", "GET /x?q=drop%20table").rule_verdicts == {
        "drop": Verdict.DENY
    }
