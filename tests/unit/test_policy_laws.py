"""The laws of policy evaluation, over random policies from a small vocabulary.

The vocabulary is small on purpose, so that statements match requests often and
every decision occurs; ``test_the_generator_reaches_*`` proves that it does.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import Phase, event, find, given, settings
from hypothesis import strategies as st

from rkvstore.iam.policy import Decision, Policy, evaluate, parse_policy, wildcard_match

ACCOUNT = "1234567890123456"
ACTIONS = (
    "kvstore:DescribeAccounts",
    "kvstore:DescribeInstances",
    "kvstore:ResetAccountPassword",
    "kvstore:CreateAccount",
    "ram:CreateUser",
)
ACTION_PATTERNS = (
    *ACTIONS,
    "*",
    "kvstore:*",
    "kvstore:Describe*",
    "kvstore:describe*",
    "KVSTORE:CREATEACCOUNT",
    "kvstore:?esetAccount*",
    "ram:*",
)
RESOURCES = (
    f"acs:kvstore:cn-hangzhou:{ACCOUNT}:instance/r-a",
    f"acs:kvstore:cn-hangzhou:{ACCOUNT}:instance/r-b",
    f"acs:ram:*:{ACCOUNT}:user/alice",
)
RESOURCE_PATTERNS = (
    *RESOURCES,
    "*",
    "acs:kvstore:*:*:instance/*",
    f"acs:kvstore:cn-hangzhou:{ACCOUNT}:instance/r-?",
    "acs:kvstore:*:*:instance/R-A",  # resources are case-sensitive: never matches
)
CONDITIONS: tuple[dict[str, Any], ...] = (
    {},
    {"IpAddress": {"acs:SourceIp": "10.0.0.0/8"}},
    {"NotIpAddress": {"acs:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}},
    {"StringLike": {"acs:SourceIp": "192.168.*"}},
    {"Bool": {"acs:SecureTransport": "true"}},
    {"DateLessThan": {"acs:CurrentTime": "2026-01-01T00:00:00Z"}},
    {"StringEquals": {"acs:NoSuchKey": "x"}},
    {"IpAddress": {"acs:sourceip": "10.0.0.0/8"}, "Bool": {"ACS:SecureTransport": False}},
)
CONTEXTS: tuple[dict[str, Any], ...] = (
    {},
    {"acs:SourceIp": "10.1.2.3", "acs:SecureTransport": True, "acs:CurrentTime": 1735689600.0},
    {"acs:SourceIp": "192.168.0.7", "acs:SecureTransport": False, "acs:CurrentTime": 1798761600.0},
    {"acs:SourceIp": "2001:db8::1", "acs:SecureTransport": True, "acs:CurrentTime": 1798761600.0},
)

LAWS = settings(database=None, deadline=None, max_examples=400)
# Finding one example is enough; shrinking it would only cost time.
SEARCH = settings(database=None, deadline=None, max_examples=5000, phases=[Phase.generate])

Doc = list[dict[str, Any]]  # one policy's statements, as JSON


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict[str, Any]


def statements(effect: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        chosen = effect or draw(st.sampled_from(("Allow", "Deny")))
        actions = draw(st.lists(st.sampled_from(ACTION_PATTERNS), min_size=1, max_size=3))
        resources = draw(st.lists(st.sampled_from(RESOURCE_PATTERNS), min_size=1, max_size=3))
        negate_action = draw(st.integers(0, 4)) == 0
        negate_resource = draw(st.integers(0, 4)) == 0
        statement: dict[str, Any] = {
            "Effect": chosen,
            "NotAction" if negate_action else "Action": actions,
            "NotResource" if negate_resource else "Resource": resources,
        }
        if draw(st.booleans()):  # half of the statements hold unconditionally
            statement["Condition"] = draw(st.sampled_from(CONDITIONS))
        return statement

    return build()


policy_sets = st.lists(st.lists(statements(), min_size=1, max_size=4), max_size=3)
requests = st.builds(
    Request,
    action=st.sampled_from((*ACTIONS, "ecs:DescribeInstances")),
    resource=st.sampled_from(RESOURCES),
    context=st.sampled_from(CONTEXTS),
)


def compile_policies(docs: list[Doc]) -> list[Policy]:
    return [parse_policy(json.dumps({"Version": "1", "Statement": d})) for d in docs]


def decide(docs: list[Doc], request: Request) -> Decision:
    return evaluate(compile_policies(docs), request.action, request.resource, request.context)


def with_statement(docs: list[Doc], statement: dict[str, Any], data: st.DataObject) -> list[Doc]:
    """``docs`` with ``statement`` added: as a policy of its own, or inside one."""
    into = data.draw(st.integers(0, len(docs)), label="into")
    if into == len(docs):
        return [*docs, [statement]]
    target = list(docs[into])
    target.insert(data.draw(st.integers(0, len(target)), label="at"), statement)
    return [*docs[:into], target, *docs[into + 1 :]]


def reference_match(pattern: str, text: str, ignore_case: bool) -> bool:
    """A regular-expression oracle for the wildcard matcher."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    flags = re.DOTALL | (re.IGNORECASE if ignore_case else 0)
    return re.fullmatch(regex, text, flags) is not None


def action_clause_matches(statement: dict[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(reference_match(p, action, True) for p in statement["Action"])
    return not any(reference_match(p, action, True) for p in statement["NotAction"])


# --- the laws


@LAWS
@given(docs=policy_sets, deny=statements("Deny"), request=requests, data=st.data())
def test_adding_a_deny_never_turns_a_deny_into_an_allow(
    docs: list[Doc], deny: dict[str, Any], request: Request, data: st.DataObject
) -> None:
    before = decide(docs, request)
    after = decide(with_statement(docs, deny, data), request)
    event(f"{before} -> {after}")
    assert after in (before, "ExplicitDeny")  # hence a deny stays a deny


@LAWS
@given(docs=policy_sets, allow=statements("Allow"), request=requests, data=st.data())
def test_adding_an_allow_never_turns_an_allow_into_a_deny(
    docs: list[Doc], allow: dict[str, Any], request: Request, data: st.DataObject
) -> None:
    before = decide(docs, request)
    after = decide(with_statement(docs, allow, data), request)
    event(f"{before} -> {after}")
    assert after == before or (before, after) == ("ImplicitDeny", "Allow")


@LAWS
@given(docs=policy_sets, request=requests)
def test_no_statement_matching_the_action_is_an_implicit_deny(
    docs: list[Doc], request: Request
) -> None:
    unrelated = [[s for s in d if not action_clause_matches(s, request.action)] for d in docs]
    unrelated = [d for d in unrelated if d]
    event(f"{sum(map(len, unrelated))} statements left")
    assert decide(unrelated, request) == "ImplicitDeny"


@LAWS
@given(docs=policy_sets, request=requests, data=st.data())
def test_the_order_of_statements_and_policies_does_not_matter(
    docs: list[Doc], request: Request, data: st.DataObject
) -> None:
    flat = data.draw(st.permutations([s for d in docs for s in d]), label="order")
    cuts = sorted(data.draw(st.lists(st.integers(1, max(len(flat), 1)), max_size=3)))
    bounds = [0, *cuts, len(flat)]
    regrouped = [flat[a:b] for a, b in itertools.pairwise(bounds) if flat[a:b]]
    decision = decide(docs, request)
    event(decision)
    assert decide(regrouped, request) == decision


@LAWS
@given(
    pattern=st.text("aAb*?[.\\", max_size=8),
    text=st.text("abAB[.\\*?", max_size=10),
    ignore_case=st.booleans(),
)
def test_wildcards_agree_with_a_regular_expression(
    pattern: str, text: str, ignore_case: bool
) -> None:
    expected = reference_match(pattern, text, ignore_case)
    event("match" if expected else "no match")
    assert wildcard_match(pattern, text, ignore_case=ignore_case) is expected


# --- the laws are not vacuous: the generator reaches every case they speak of

scenarios = st.tuples(policy_sets, requests)


@pytest.mark.parametrize("decision", ["Allow", "ExplicitDeny", "ImplicitDeny"])
def test_the_generator_reaches_every_decision(decision: Decision) -> None:
    find(scenarios, lambda s: decide(*s) == decision, settings=SEARCH)


def test_the_generator_reaches_a_deny_that_overrides_an_allow() -> None:
    def overridden(case: tuple[list[Doc], dict[str, Any], Request]) -> bool:
        docs, deny, request = case
        return decide(docs, request) == "Allow" and decide([*docs, [deny]], request) != "Allow"

    find(st.tuples(policy_sets, statements("Deny"), requests), overridden, settings=SEARCH)


def test_the_generator_reaches_an_allow_that_grants() -> None:
    def granted(case: tuple[list[Doc], dict[str, Any], Request]) -> bool:
        docs, allow, request = case
        return decide(docs, request) == "ImplicitDeny" and decide([*docs, [allow]], request) == (
            "Allow"
        )

    find(st.tuples(policy_sets, statements("Allow"), requests), granted, settings=SEARCH)


@pytest.mark.parametrize("holds", [True, False])
def test_the_generator_reaches_conditions_that_hold_and_fail(holds: bool) -> None:
    def decided_by_condition(case: tuple[dict[str, Any], Request]) -> bool:
        statement, request = case
        if not statement.get("Condition"):
            return False
        bare = {k: v for k, v in statement.items() if k != "Condition"}
        if decide([[bare]], request) == "ImplicitDeny":
            return False  # the condition is not what decides
        return (decide([[statement]], request) != "ImplicitDeny") is holds

    find(st.tuples(statements(), requests), decided_by_condition, settings=SEARCH)


def test_the_no_match_law_keeps_statements() -> None:
    def kept(case: tuple[list[Doc], Request]) -> bool:
        docs, request = case
        return sum(not action_clause_matches(s, request.action) for d in docs for s in d) >= 2

    find(scenarios, kept, settings=SEARCH)
