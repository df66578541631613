"""A listing's permission filter decides as ``evaluate`` does (issue 10), over random input.

Two reductions carry DescribeInstances' RAM filter into SQL, each checked here
against the evaluation it replaces: the statements that apply to one action in
one request (``resource_rules`` + ``decide_resource`` = ``evaluate``), and the
patterns an id must match once the ARN's fixed prefix is consumed (``remainders``).
The SQL each remainder becomes is checked on real databases in
``tests/integration/test_listings.py``.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import column

from rkvstore.iam.policy import (
    ResourceRule,
    decide_resource,
    evaluate,
    parse_policy,
    resource_rules,
    wildcard_match,
)
from rkvstore.iam.visibility import id_condition, remainders
from tests.unit.test_policy_laws import policy_sets, requests

LAWS = settings(database=None, deadline=None, max_examples=500)
PREFIX = "acs:kvstore:cn-hangzhou:1234567890123456:instance/"
# Small alphabets, so that patterns and texts meet often.
PATTERN_CHARS = "ab:/*?%_[\u00e9"
TEXT_CHARS = "ab:/%_[\u00e9"


@LAWS
@given(policy_sets, requests)
def test_the_rules_of_a_request_decide_every_resource_as_evaluate(
    docs: list[list[dict[str, Any]]], request: Any
) -> None:
    policies = [parse_policy(json.dumps({"Version": "1", "Statement": d})) for d in docs]
    rules = resource_rules(policies, request.action, request.context)
    assert decide_resource(rules, request.resource) == evaluate(
        policies, request.action, request.resource, request.context
    )


@LAWS
@given(
    st.text(PATTERN_CHARS, max_size=8),
    st.text(TEXT_CHARS, max_size=5),
    st.text(TEXT_CHARS, max_size=6),
)
def test_a_pattern_matches_prefix_and_id_iff_a_remainder_matches_the_id(
    pattern: str, prefix: str, rest: str
) -> None:
    whole = wildcard_match(pattern, prefix + rest)
    assert whole == any(wildcard_match(r, rest) for r in remainders(pattern, prefix))


@LAWS
@given(st.text(TEXT_CHARS + "*?", max_size=12), st.text(TEXT_CHARS, max_size=12))
def test_the_arn_prefix_of_instances_reduces_as_a_short_one_does(pattern: str, rest: str) -> None:
    full = "acs:kvstore:*:*:instance/" + pattern
    assert wildcard_match(full, PREFIX + rest) == any(
        wildcard_match(r, rest) for r in remainders(full, PREFIX)
    )


def _words(alphabet: str, longest: int) -> list[str]:
    return ["".join(w) for n in range(longest + 1) for w in itertools.product(alphabet, repeat=n)]


def test_every_small_pattern_reduces_exactly() -> None:
    """Exhaustively, in a small scope: every pattern over ``a*?`` up to 5 characters,
    every prefix and rest over ``ab`` up to 3 (where random draws rarely reach)."""
    texts = _words("ab", 3)
    for pattern in _words("a*?", 5):
        for prefix in texts:
            rests = remainders(pattern, prefix)
            for rest in texts:
                expected = wildcard_match(pattern, prefix + rest)
                assert expected == any(wildcard_match(r, rest) for r in rests), (pattern, prefix)


def test_common_patterns_reduce_to_little() -> None:
    assert remainders("*", PREFIX) == {"*"}
    assert remainders("acs:kvstore:*:*:instance/*", PREFIX) >= {"*"}
    assert remainders(PREFIX + "r-abc", PREFIX) == {"r-abc"}
    assert remainders(PREFIX + "r-a*", PREFIX) == {"r-a*"}
    assert remainders("acs:kvstore:cn-beijing:*:instance/*", PREFIX) == frozenset()
    assert remainders("acs:ram:*", PREFIX) == frozenset()


def test_policies_for_everything_or_nothing_need_no_condition_on_ids() -> None:
    ids = column("instance_id")
    allow_all = [ResourceRule("Allow", ("*",), ())]
    assert id_condition(allow_all, PREFIX, ids, "sqlite") is True
    assert id_condition([], PREFIX, ids, "postgresql") is False
    deny_all = [*allow_all, ResourceRule("Deny", ("acs:kvstore:*",), ())]
    assert id_condition(deny_all, PREFIX, ids, "sqlite") is False
    deny_one = [*allow_all, ResourceRule("Deny", (PREFIX + "r-1",), ())]
    assert str(id_condition(deny_one, PREFIX, ids, "sqlite")) == "instance_id != :instance_id_1"
    # Only SQLite and PostgreSQL are known to match as the policy language does.
    assert id_condition(allow_all, PREFIX, ids, "mysql") is None
