"""A Deny must never silently not apply (issue 9, finding 2).

(a) A condition key rkvstore does not know — a typo such as ``"acs:SourceIp "`` or
``"acs:SourceIpAddress"`` — is refused when the document is stored
(``MalformedPolicyDocument``); the keys it knows match in any letter case.
(b) A key absent from the request (or whose value is not of the operator's type)
matches no value: a positive operator does not hold, a negated one
(``StringNot*``, ``NumericNotEquals``, ``DateNotEquals``, ``NotIpAddress``) does,
so a Deny guarded by a negated operator applies.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.policy import CONDITION_OPERATORS, Decision, evaluate, parse_policy

RESET = "kvstore:ResetAccountPassword"
ARN = "acs:kvstore:cn-hangzhou:1234567890123456:instance/r-a"
KNOWN = {"acs:SourceIp", "acs:SecureTransport", "acs:CurrentTime"}
# A request as rkvstore builds it (CallContext.condition_context).
REQUEST = {"acs:SourceIp": "192.0.2.7", "acs:SecureTransport": False, "acs:CurrentTime": 1.8e9}

# operator -> a policy value of its type; the negated ones are the second half of each family.
POSITIVE = {
    "StringEquals": "x",
    "StringEqualsIgnoreCase": "x",
    "StringLike": "x*",
    "NumericEquals": 1,
    "NumericLessThan": 1,
    "NumericLessThanEquals": 1,
    "NumericGreaterThan": 1,
    "NumericGreaterThanEquals": 1,
    "DateEquals": "2026-01-01T00:00:00Z",
    "DateLessThan": "2026-01-01T00:00:00Z",
    "DateLessThanEquals": "2026-01-01T00:00:00Z",
    "DateGreaterThan": "2026-01-01T00:00:00Z",
    "DateGreaterThanEquals": "2026-01-01T00:00:00Z",
    "Bool": "true",
    "IpAddress": "10.0.0.0/8",
}
NEGATED = {
    "StringNotEquals": "x",
    "StringNotEqualsIgnoreCase": "x",
    "StringNotLike": "x*",
    "NumericNotEquals": 1,
    "DateNotEquals": "2026-01-01T00:00:00Z",
    "NotIpAddress": "10.0.0.0/8",
}


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def stmt(effect: str = "Allow", condition: dict[str, Any] | None = None) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": effect, "Action": "*", "Resource": "*"}
    if condition is not None:
        st["Condition"] = condition
    return st


def decide(documents: list[str], context: dict[str, Any]) -> Decision:
    return evaluate([parse_policy(d) for d in documents], RESET, ARN, context)


def refused(document: str) -> ApiError:
    from rkvstore.iam.policy import validate_policy

    with pytest.raises(ApiError) as caught:
        validate_policy(document)
    return caught.value


# --------------------------------------------------------------------------- (a) unknown keys


def test_the_operators_under_test_are_every_operator() -> None:
    assert set(POSITIVE) | set(NEGATED) == CONDITION_OPERATORS


def test_the_known_keys_are_what_a_request_carries() -> None:
    from rkvstore.iam.policy import CONDITION_KEYS

    assert set(CONDITION_KEYS) == KNOWN == set(REQUEST)


@pytest.mark.parametrize(
    "key",
    [
        "acs:SourceIp ",  # a trailing space
        " acs:SourceIp",
        "acs:SourceIpAddress",
        "acs:Source_Ip",
        "acs:SecureTransports",
        "acs:CurrentTimes",
        "SourceIp",
        "acs:MFAPresent",  # an Alibaba key that no request to rkvstore carries
        "kvstore:Tag",
        "ecs:tag/team",
    ],
)
def test_an_unknown_condition_key_is_refused(key: str) -> None:
    error = refused(doc(stmt("Deny", {"NotIpAddress": {key: "10.0.0.0/8"}})))
    assert error.spec is errors.MALFORMED_POLICY_DOCUMENT
    assert (error.code, error.http_status) == ("MalformedPolicyDocument", 400)
    assert error.message == f'The condition key "{key}" is not supported.'


def test_an_unknown_key_in_any_statement_or_block_is_refused() -> None:
    good = stmt("Allow", {"Bool": {"acs:SecureTransport": "true"}})
    bad = stmt(
        "Deny",
        {"IpAddress": {"acs:SourceIp": "10.0.0.0/8"}, "StringEquals": {"acs:Typo": "x"}},
    )
    assert refused(doc(good, bad)).message == 'The condition key "acs:Typo" is not supported.'


@pytest.mark.parametrize(
    "key", ["acs:sourceip", "ACS:SOURCEIP", "Acs:SourceIP", "acs:SourceIp", "acs:Sourceip"]
)
def test_a_known_key_in_another_letter_case_is_accepted_and_applies(key: str) -> None:
    from rkvstore.iam.policy import validate_policy

    deny = doc(stmt("Deny", {"NotIpAddress": {key: "10.0.0.0/8"}}))
    validate_policy(deny)  # accepted
    allow = doc(stmt())
    assert decide([allow, deny], REQUEST) == "ExplicitDeny"
    assert decide([allow, deny], {**REQUEST, "acs:SourceIp": "10.1.2.3"}) == "Allow"


def test_every_operator_accepts_every_known_key_in_a_new_document() -> None:
    from rkvstore.iam.policy import validate_policy

    for operator, value in {**POSITIVE, **NEGATED}.items():
        for key in KNOWN:
            validate_policy(doc(stmt("Deny", {operator: {key: value}})))


@pytest.mark.parametrize(
    "operator", ["StringNotEqualsIfExists", "NotIpAddressIfExists", "BoolIfExists"]
)
def test_if_exists_operators_are_not_part_of_ram_and_are_refused(operator: str) -> None:
    # Alibaba's RAM documents no ...IfExists operators (Policy elements; Conditional operators).
    error = refused(doc(stmt("Deny", {operator: {"acs:SourceIp": "10.0.0.0/8"}})))
    assert error.message == f'The condition operator "{operator}" is not supported.'


def test_a_stored_document_with_an_unknown_key_still_evaluates() -> None:
    # Documents stored before keys were checked must never fail at evaluation.
    legacy = doc(stmt("Allow", {"StringEquals": {"acs:Typo": "x"}}))
    assert decide([legacy], REQUEST) == "ImplicitDeny"


# --------------------------------------------------------------------------- (b) absent keys


@pytest.mark.parametrize("operator", sorted(NEGATED))
def test_a_deny_with_a_negated_operator_on_an_absent_key_applies(operator: str) -> None:
    allow = doc(stmt())
    deny = doc(stmt("Deny", {operator: {"acs:SourceIp": NEGATED[operator]}}))
    without = {k: v for k, v in REQUEST.items() if k != "acs:SourceIp"}
    assert decide([allow, deny], without) == "ExplicitDeny"
    assert decide([allow, deny], {}) == "ExplicitDeny"


@pytest.mark.parametrize("operator", sorted(POSITIVE))
def test_a_positive_operator_on_an_absent_key_does_not_hold(operator: str) -> None:
    allow = doc(stmt("Allow", {operator: {"acs:SourceIp": POSITIVE[operator]}}))
    deny = doc(stmt(), stmt("Deny", {operator: {"acs:SourceIp": POSITIVE[operator]}}))
    assert decide([allow], {}) == "ImplicitDeny"
    assert decide([deny], {}) == "Allow"


@pytest.mark.parametrize("operator", sorted(NEGATED))
def test_an_allow_with_a_negated_operator_on_an_absent_key_allows(operator: str) -> None:
    allow = doc(stmt("Allow", {operator: {"acs:SourceIp": NEGATED[operator]}}))
    assert decide([allow], {}) == "Allow"


@pytest.mark.parametrize(
    ("operator", "value", "unreadable"),
    [
        ("NotIpAddress", "10.0.0.0/8", "not-an-ip"),
        ("NotIpAddress", "10.0.0.0/8", 167772161),
        ("NumericNotEquals", 1, "one"),
        ("NumericNotEquals", 1, True),
        ("DateNotEquals", "2026-01-01", "soon"),
        ("StringNotEquals", "x", ["a", "b"]),
        ("StringNotEquals", "x", None),
        ("StringNotLike", "x*", {"a": 1}),
    ],
)
def test_a_value_of_the_wrong_type_counts_as_absent(
    operator: str, value: Any, unreadable: Any
) -> None:
    key = "acs:SourceIp"
    deny = doc(stmt(), stmt("Deny", {operator: {key: value}}))
    assert decide([deny], {key: unreadable}) == "ExplicitDeny", (operator, unreadable)
    positive = operator.replace("Not", "", 1)
    allow = doc(stmt("Allow", {positive: {key: value}}))
    assert decide([allow], {key: unreadable}) == "ImplicitDeny", (positive, unreadable)


def test_an_absent_key_fails_only_the_conditions_on_it() -> None:
    # Several keys: each condition is decided on its own, then all must hold (AND).
    deny = doc(
        stmt(),
        stmt(
            "Deny",
            {
                "NotIpAddress": {"acs:SourceIp": "10.0.0.0/8"},
                "Bool": {"acs:SecureTransport": "false"},
            },
        ),
    )
    assert decide([deny], {"acs:SecureTransport": False}) == "ExplicitDeny"
    assert decide([deny], {"acs:SecureTransport": True}) == "Allow"
    assert decide([deny], {}) == "Allow"  # Bool on an absent key does not hold


def test_a_present_key_is_decided_as_before() -> None:
    deny = doc(stmt(), stmt("Deny", {"NotIpAddress": {"acs:SourceIp": "10.0.0.0/8"}}))
    assert decide([deny], {"acs:SourceIp": "192.0.2.1"}) == "ExplicitDeny"
    assert decide([deny], {"acs:SourceIp": "10.0.0.1"}) == "Allow"
