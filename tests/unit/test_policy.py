"""The RAM policy language: parsing, wildcards, decisions and every condition operator."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.policy import (
    CONDITION_OPERATORS,
    MAX_DOCUMENT_LENGTH,
    Condition,
    Decision,
    Policy,
    Statement,
    evaluate,
    parse_policy,
    wildcard_match,
)
from rkvstore.products import SYSTEM_POLICIES

ACCOUNT = "1234567890123456"
ARN_A = f"acs:kvstore:cn-hangzhou:{ACCOUNT}:instance/r-a"
ARN_B = f"acs:kvstore:cn-hangzhou:{ACCOUNT}:instance/r-b"
RESET = "kvstore:ResetAccountPassword"
NEW_YEAR_2026 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # 1767225600


def stmt(effect: Any = "Allow", **elements: Any) -> dict[str, Any]:
    """A statement; Action and Resource are "*" unless it names them or their Not- form."""
    if "NotAction" not in elements:
        elements.setdefault("Action", "*")
    if "NotResource" not in elements:
        elements.setdefault("Resource", "*")
    return {"Effect": effect, **elements}


def doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def decide(
    documents: str | list[str],
    action: str = RESET,
    resource: str = ARN_A,
    context: dict[str, Any] | None = None,
) -> Decision:
    docs = [documents] if isinstance(documents, str) else documents
    return evaluate([parse_policy(d) for d in docs], action, resource, context or {})


def malformed(document: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_policy(document)
    return caught.value


# --- parsing: what is accepted


def test_a_statement_parses_into_its_parts() -> None:
    policy = parse_policy(
        doc(
            {
                "Effect": "Deny",
                "Action": ["kvstore:Describe*", RESET],
                "Resource": ARN_A,
                "Condition": {
                    "IpAddress": {"acs:SourceIp": ["10.0.0.0/8", "192.168.1.7"]},
                    "Bool": {"acs:SecureTransport": True},
                },
            }
        )
    )
    assert policy == Policy(
        "1",
        (
            Statement(
                effect="Deny",
                actions=("kvstore:Describe*", RESET),
                not_actions=(),
                resources=(ARN_A,),
                not_resources=(),
                conditions=(
                    Condition("IpAddress", "acs:SourceIp", ("10.0.0.0/8", "192.168.1.7/32")),
                    Condition("Bool", "acs:SecureTransport", ("true",)),
                ),
            ),
        ),
    )


def test_a_single_statement_object_and_single_strings_are_accepted() -> None:
    policy = parse_policy(
        '{"Statement": {"Effect": "Allow", "NotAction": "ram:*", "NotResource": "acs:ram:*"},'
        ' "Version": "1"}'
    )
    (statement,) = policy.statements
    assert (statement.actions, statement.not_actions) == ((), ("ram:*",))
    assert (statement.resources, statement.not_resources) == ((), ("acs:ram:*",))
    assert statement.conditions == ()


def test_an_empty_condition_block_is_no_condition() -> None:
    # Alibaba's own examples carry "Condition": {}.
    assert parse_policy(doc(stmt(Condition={}))).statements[0].conditions == ()
    assert parse_policy(doc(stmt(Condition={"StringEquals": {}}))).statements[0].conditions == ()


@pytest.mark.parametrize(
    ("operator", "value", "normalised"),
    [
        ("StringEquals", "abc", ("abc",)),
        ("StringEquals", 5, ("5",)),
        ("StringEquals", 1.50, ("1.5",)),
        ("StringEquals", True, ("true",)),
        ("StringEquals", ["a", 2, False], ("a", "2", "false")),
        ("NumericEquals", "10", ("10",)),
        ("NumericEquals", [1.5, "-2e3"], ("1.5", "-2E+3")),
        ("DateLessThan", "2026-01-01T00:00:00Z", ("2026-01-01T00:00:00+00:00",)),
        ("DateLessThan", "2026-01-01T08:00:00+08:00", ("2026-01-01T00:00:00+00:00",)),
        ("DateLessThan", "2026-01-01", ("2026-01-01T00:00:00+00:00",)),
        ("DateLessThan", 1767225600, ("2026-01-01T00:00:00+00:00",)),
        ("DateLessThan", "1767225600", ("2026-01-01T00:00:00+00:00",)),
        ("Bool", "TRUE", ("true",)),
        ("Bool", [False, "false"], ("false", "false")),
        ("IpAddress", "10.1.2.3/8", ("10.0.0.0/8",)),
        ("IpAddress", "2001:db8::/32", ("2001:db8::/32",)),
        ("NotIpAddress", "::1", ("::1/128",)),
    ],
)
def test_condition_values_of_every_json_type_are_accepted(
    operator: str, value: Any, normalised: tuple[str, ...]
) -> None:
    policy = parse_policy(doc(stmt(Condition={operator: {"acs:Key": value}})))
    assert policy.statements[0].conditions == (Condition(operator, "acs:Key", normalised),)


def test_a_document_of_the_maximum_length_is_accepted() -> None:
    document = doc(stmt())
    document += " " * (MAX_DOCUMENT_LENGTH - len(document))
    assert len(document) == MAX_DOCUMENT_LENGTH
    assert parse_policy(document).statements


def test_every_documented_operator_is_known() -> None:
    numeric = (
        "Equals",
        "NotEquals",
        "LessThan",
        "LessThanEquals",
        "GreaterThan",
        "GreaterThanEquals",
    )
    assert set(CONDITION_OPERATORS) == {
        "StringEquals",
        "StringNotEquals",
        "StringEqualsIgnoreCase",
        "StringNotEqualsIgnoreCase",
        "StringLike",
        "StringNotLike",
        *(f"Numeric{n}" for n in numeric),
        *(f"Date{n}" for n in numeric),
        "Bool",
        "IpAddress",
        "NotIpAddress",
    }


# --- parsing: what is refused, and with which message

NOT_JSON = "The policy document is not valid JSON."
NOT_OBJECT = "The policy document must be a JSON object."
BAD_VERSION = 'The policy Version must be "1".'
NO_STATEMENT = "Add a Statement element to the policy."
BAD_STATEMENT = "The Statement element must be an object or a list of objects."
BAD_EFFECT = 'The Effect element must be "Allow" or "Deny".'
NO_ACTION = "Add an Action or NotAction element to the policy statement."
BOTH_ACTIONS = "A policy statement cannot have both Action and NotAction."
NO_RESOURCE = "Add a Resource or NotResource element to the policy statement."
BOTH_RESOURCES = "A policy statement cannot have both Resource and NotResource."
STRINGS = " element must be a non-empty string or a non-empty list of non-empty strings."
VALUES = (
    'The values of condition key "k" must be strings, numbers, booleans'
    " or a non-empty list of them."
)


def _cond(operator: str, value: Any) -> str:
    return doc(stmt(Condition={operator: {"k": value}}))


def _value_error(operator: str, kind: str) -> str:
    return f'The {operator} condition on "k" has a value that is not {kind}.'


IP, DATE = "an IP address or CIDR block", "an ISO-8601 date or epoch seconds"
ACTION_ONLY = {"Effect": "Allow", "Action": "*"}
RESOURCE_ONLY = {"Effect": "Allow", "Resource": "*"}

MALFORMED: list[tuple[str, str, str]] = [
    ("not JSON", "Version: 1", NOT_JSON),
    ("empty", "", NOT_JSON),
    ("trailing text", doc(stmt()) + " x", NOT_JSON),
    ("NaN", '{"Version": "1", "Statement": [], "x": NaN}', NOT_JSON),
    ("unclosed", '{"Version": "1", "Statement": [', NOT_JSON),
    ("deeply nested", "[" * 3000 + "]" * 3000, NOT_JSON),
    ("list", "[]", NOT_OBJECT),
    ("string", '"policy"', NOT_OBJECT),
    ("null", "null", NOT_OBJECT),
    ("no Version", json.dumps({"Statement": [stmt()]}), BAD_VERSION),
    ("Version 2", json.dumps({"Version": "2", "Statement": [stmt()]}), BAD_VERSION),
    ("numeric Version", json.dumps({"Version": 1, "Statement": [stmt()]}), BAD_VERSION),
    ("AWS Version", json.dumps({"Version": "2012-10-17", "Statement": [stmt()]}), BAD_VERSION),
    ("no Statement", '{"Version": "1"}', NO_STATEMENT),
    ("empty Statement", '{"Version": "1", "Statement": []}', NO_STATEMENT),
    ("Statement string", '{"Version": "1", "Statement": "Allow"}', BAD_STATEMENT),
    ("Statement null", '{"Version": "1", "Statement": null}', BAD_STATEMENT),
    ("Statement of strings", '{"Version": "1", "Statement": ["Allow"]}', BAD_STATEMENT),
    ("no Effect", doc({"Action": "*", "Resource": "*"}), BAD_EFFECT),
    ("lower-case Effect", doc(stmt("allow")), BAD_EFFECT),
    ("other Effect", doc(stmt("Permit")), BAD_EFFECT),
    ("list Effect", doc(stmt(["Allow"])), BAD_EFFECT),
    ("no Action", doc(RESOURCE_ONLY), NO_ACTION),
    ("Action and NotAction", doc(stmt(Action="*", NotAction="ram:*")), BOTH_ACTIONS),
    ("no Resource", doc(ACTION_ONLY), NO_RESOURCE),
    ("Resource and NotResource", doc(stmt(Resource="*", NotResource=ARN_A)), BOTH_RESOURCES),
    ("numeric Action", doc(stmt(Action=5)), "The Action" + STRINGS),
    ("mixed Action list", doc(stmt(Action=["kvstore:*", 5])), "The Action" + STRINGS),
    ("empty Action list", doc(stmt(Action=[])), "The Action" + STRINGS),
    ("empty Action", doc(stmt(Action="")), "The Action" + STRINGS),
    ("nested NotAction", doc(stmt(NotAction=[["a"]])), "The NotAction" + STRINGS),
    ("object Resource", doc(stmt(Resource={})), "The Resource" + STRINGS),
    ("null in NotResource", doc(stmt(NotResource=[None])), "The NotResource" + STRINGS),
    (
        "unknown element",
        json.dumps({"Version": "1", "Id": "x", "Statement": [stmt()]}),
        'The policy element "Id" is not supported.',
    ),
    (
        "misspelt Condition",
        doc(stmt(Conditions={})),
        'The policy element "Conditions" is not supported.',
    ),
    (
        "lower-case element",
        doc({"effect": "Allow", "Action": "*", "Resource": "*"}),
        'The policy element "effect" is not supported.',
    ),
    (
        "repeated key",
        '{"Version": "1", "Statement": {"Effect": "Allow", "Effect": "Deny",'
        ' "Action": "*", "Resource": "*"}}',
        'The policy document repeats the key "Effect".',
    ),
    ("Condition list", doc(stmt(Condition=[])), "The Condition element must be an object."),
    (
        "unknown operator",
        _cond("StringEqual", "x"),
        'The condition operator "StringEqual" is not supported.',
    ),
    (
        "lower-case operator",
        _cond("stringequals", "x"),
        'The condition operator "stringequals" is not supported.',
    ),
    (
        "AWS-only operator",
        _cond("ArnLike", "x"),
        'The condition operator "ArnLike" is not supported.',
    ),
    (
        "operator to a string",
        doc(stmt(Condition={"StringEquals": "x"})),
        'The condition operator "StringEquals" must map condition keys to values.',
    ),
    (
        "empty key",
        doc(stmt(Condition={"StringEquals": {"": "x"}})),
        "A condition key must not be empty.",
    ),
    ("null value", _cond("StringEquals", None), VALUES),
    ("object value", _cond("StringEquals", {"a": "b"}), VALUES),
    ("empty value list", _cond("StringEquals", []), VALUES),
    ("nested value list", _cond("StringEquals", [["a"]]), VALUES),
    ("not an IP", _cond("IpAddress", "10.0.0.300"), _value_error("IpAddress", IP)),
    ("prefix too long", _cond("NotIpAddress", "10.0.0.0/33"), _value_error("NotIpAddress", IP)),
    ("numeric IP", _cond("IpAddress", 167772160), _value_error("IpAddress", IP)),
    (
        "IP in a list",
        _cond("IpAddress", ["10.0.0.0/8", "localhost"]),
        _value_error("IpAddress", IP),
    ),
    ("not a date", _cond("DateLessThan", "tomorrow"), _value_error("DateLessThan", DATE)),
    (
        "month 13",
        _cond("DateGreaterThan", "2026-13-01T00:00:00Z"),
        _value_error("DateGreaterThan", DATE),
    ),
    ("boolean date", _cond("DateEquals", True), _value_error("DateEquals", DATE)),
    ("date out of range", _cond("DateEquals", 1e20), _value_error("DateEquals", DATE)),
    ("not a number", _cond("NumericEquals", "ten"), _value_error("NumericEquals", "a number")),
    ("NaN string", _cond("NumericLessThan", "NaN"), _value_error("NumericLessThan", "a number")),
    ("boolean number", _cond("NumericEquals", False), _value_error("NumericEquals", "a number")),
    ("hex number", _cond("NumericEquals", "0x10"), _value_error("NumericEquals", "a number")),
    ("yes", _cond("Bool", "yes"), _value_error("Bool", "true or false")),
    ("numeric Bool", _cond("Bool", 1), _value_error("Bool", "true or false")),
    (
        "too long",
        doc(stmt(Action=["kvstore:Describe" + "x" * 20] * 300)),
        "The policy document is longer than 6144 characters.",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_a_malformed_document_is_refused(document: str, message: str) -> None:
    err = malformed(document)
    assert err.spec is errors.MALFORMED_POLICY_DOCUMENT
    assert (err.code, err.http_status, err.message) == ("MalformedPolicyDocument", 400, message)
    assert str(err) == f"MalformedPolicyDocument: {message}"


def test_one_character_over_the_limit_is_refused() -> None:
    document = doc(stmt())
    document += " " * (MAX_DOCUMENT_LENGTH + 1 - len(document))
    assert malformed(document).message == "The policy document is longer than 6144 characters."


def test_the_error_is_in_the_catalogue() -> None:
    spec = errors.CATALOGUE.by_code["MalformedPolicyDocument"]
    assert spec is errors.MALFORMED_POLICY_DOCUMENT
    assert spec.http_status == 400


# --- wildcards


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("*", "", True),
        ("*", "kvstore:DescribeAccounts", True),
        ("**", "x", True),
        ("?", "", False),
        ("?", "a", True),
        ("?", "ab", False),
        ("*?", "", False),
        ("*?", "x", True),
        ("a*b", "ab", True),
        ("a*b", "a-x-b", True),
        ("a*b", "a-x-bc", False),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("abc", "abcd", False),
        ("bcd", "abcd", False),
        ("*a*a*a*b", "aaaaab", True),
        ("*a*a*a*b", "aaaaaa", False),
        ("r-[ab]", "r-a", False),
        ("r-[ab]", "r-[ab]", True),
        ("r-[!a]", "r-b", False),
        ("a.c", "abc", False),
        ("a.c", "a.c", True),
        ("a+", "aa", False),
        ("(a|b)", "a", False),
        ("(a|b)", "(a|b)", True),
        ("^a$", "a", False),
        ("a\\b", "a\\b", True),
        ("a\\*", "a\\xyz", True),
        ("x*", "x\ny", True),
        ("Abc", "abc", False),
    ],
)
def test_wildcards(pattern: str, text: str, matches: bool) -> None:
    assert wildcard_match(pattern, text) is matches


def test_ignoring_case_folds_both_sides_character_by_character() -> None:
    assert wildcard_match("kvstore:describe*", "kvstore:DescribeAccounts", ignore_case=True)
    assert wildcard_match("KVSTORE:?ESET*", "kvstore:ResetAccountPassword", ignore_case=True)
    assert not wildcard_match("kvstore:describe*", "kvstore:DescribeAccounts")
    assert wildcard_match("?", "ß", ignore_case=True)  # still one character


def test_no_pattern_makes_matching_slow() -> None:
    started = time.monotonic()
    assert not wildcard_match("*a" * 100 + "b", "a" * 2000)
    assert time.monotonic() - started < 5  # a backtracking regex would not finish


# --- decisions


def test_actions_match_case_insensitively() -> None:
    policy = doc(stmt(Action="kvstore:describe*"))
    assert decide(policy, "kvstore:DescribeAccounts") == "Allow"
    assert decide(policy, "KVSTORE:DESCRIBEINSTANCES") == "Allow"
    assert decide(policy, RESET) == "ImplicitDeny"
    assert decide(doc(stmt(Action="KVSTORE:RESETACCOUNTPASSWORD")), RESET) == "Allow"


def test_resources_match_case_sensitively() -> None:
    assert decide(doc(stmt(Resource=ARN_A)), resource=ARN_A) == "Allow"
    assert decide(doc(stmt(Resource=ARN_A.upper())), resource=ARN_A) == "ImplicitDeny"
    assert decide(doc(stmt(Resource=ARN_A.replace("r-a", "R-A"))), resource=ARN_A) == "ImplicitDeny"


def test_wildcards_in_actions_and_resources() -> None:
    policy = doc(stmt(Action="kvstore:?esetAccount*", Resource="acs:kvstore:*:*:instance/r-?"))
    assert decide(policy, RESET, ARN_A) == "Allow"
    assert decide(policy, RESET, ARN_B) == "Allow"
    assert decide(policy, RESET, ARN_A + "x") == "ImplicitDeny"
    assert decide(policy, "kvstore:ResetPassword", ARN_A) == "ImplicitDeny"
    assert decide(doc(stmt(Resource="acs:kvstore:*:*:instance/r-[ab]")), resource=ARN_A) == (
        "ImplicitDeny"
    )
    assert decide(doc(stmt(Action="kvstore:Reset.ccountPassword")), RESET) == "ImplicitDeny"


def test_one_instance_only() -> None:
    policy = doc(stmt(Action=[RESET, "kvstore:DescribeAccounts"], Resource=ARN_A))
    assert decide(policy, RESET, ARN_A) == "Allow"
    assert decide(policy, "kvstore:DescribeAccounts", ARN_A) == "Allow"
    assert decide(policy, RESET, ARN_B) == "ImplicitDeny"
    assert decide(policy, "kvstore:CreateAccount", ARN_A) == "ImplicitDeny"


def test_not_action_matches_every_action_not_listed() -> None:
    policy = doc(stmt(NotAction=["kvstore:Create*", "kvstore:delete*"]))
    assert decide(policy, RESET) == "Allow"
    assert decide(policy, "ram:CreateUser") == "Allow"
    assert decide(policy, "kvstore:CreateAccount") == "ImplicitDeny"
    assert decide(policy, "kvstore:DeleteAccount") == "ImplicitDeny"


def test_not_resource_matches_every_resource_not_listed() -> None:
    policy = doc({"Effect": "Allow", "Action": "*", "NotResource": [ARN_B, "acs:ram:*"]})
    assert decide(policy, resource=ARN_A) == "Allow"
    assert decide(policy, resource=ARN_B) == "ImplicitDeny"
    assert decide(policy, resource=f"acs:ram:*:{ACCOUNT}:user/alice") == "ImplicitDeny"


def test_a_deny_with_not_action_denies_everything_else() -> None:
    deny_but_describe = doc({"Effect": "Deny", "NotAction": "kvstore:Describe*", "Resource": "*"})
    allow_all = doc(stmt())
    assert decide([allow_all, deny_but_describe], RESET) == "ExplicitDeny"
    assert decide([allow_all, deny_but_describe], "kvstore:DescribeAccounts") == "Allow"


def test_an_explicit_deny_beats_an_allow_across_policies_in_any_order() -> None:
    allow = doc(stmt(Action="kvstore:*"))
    deny = doc(stmt("Deny", Action=RESET, Resource=ARN_A))
    for policies in ([allow, deny], [deny, allow]):
        assert decide(policies, RESET, ARN_A) == "ExplicitDeny"
        assert decide(policies, RESET, ARN_B) == "Allow"
    assert decide(doc(stmt(), stmt("Deny")), RESET) == "ExplicitDeny"
    assert decide(doc(stmt("Deny"), stmt()), RESET) == "ExplicitDeny"


def test_no_matching_allow_is_an_implicit_deny() -> None:
    assert evaluate([], RESET, ARN_A, {}) == "ImplicitDeny"
    assert decide(doc(stmt(Action="kvstore:Describe*")), RESET) == "ImplicitDeny"
    assert decide(doc(stmt("Deny", Action="kvstore:Describe*")), RESET) == "ImplicitDeny"


def test_system_policies() -> None:
    assert set(SYSTEM_POLICIES) == {
        "AliyunActionTrailFullAccess",
        "AliyunActionTrailReadOnlyAccess",
        "AliyunKvstoreFullAccess",
        "AliyunKvstoreReadOnlyAccess",
        "AliyunKMSSecretAdminAccess",
        "AliyunKMSSecretUserAccess",
    }
    description, full = SYSTEM_POLICIES["AliyunKvstoreFullAccess"]
    assert description and json.loads(full) == {
        "Version": "1",
        "Statement": [{"Effect": "Allow", "Action": "kvstore:*", "Resource": "*"}],
    }
    description, read_only = SYSTEM_POLICIES["AliyunKvstoreReadOnlyAccess"]
    assert description and json.loads(read_only)["Statement"][0]["Action"] == "kvstore:Describe*"
    for action in (RESET, "kvstore:CreateAccount", "kvstore:DescribeAccounts"):
        assert decide(full, action, ARN_B) == "Allow"
    assert decide(full, "ram:CreateUser", f"acs:ram:*:{ACCOUNT}:user/*") == "ImplicitDeny"
    assert decide(read_only, "kvstore:DescribeAccounts") == "Allow"
    assert decide(read_only, "kvstore:DescribeInstances", ARN_B) == "Allow"
    for action in (RESET, "kvstore:CreateAccount", "kvstore:DeleteAccount", "ram:ListUsers"):
        assert decide(read_only, action) == "ImplicitDeny"
    assert decide([read_only, full], RESET) == "Allow"


def test_a_hand_built_statement_never_fails_at_evaluation_time() -> None:
    odd = Statement("Allow", ("*",), (), ("*",), (), (Condition("NoSuchOperator", "k", ("v",)),))
    assert evaluate([Policy("1", (odd,))], RESET, ARN_A, {"k": "v"}) == "ImplicitDeny"
    bad_value = Statement("Allow", ("*",), (), ("*",), (), (Condition("IpAddress", "k", ("x",)),))
    assert evaluate([Policy("1", (bad_value,))], RESET, ARN_A, {"k": "10.0.0.1"}) == "ImplicitDeny"


# --- conditions: every operator, both ways

MOMENT = NEW_YEAR_2026
CONDITIONS: list[tuple[str, str, Any, Any, bool]] = [
    # operator, key, policy value(s), context value, holds
    ("StringEquals", "kvstore:Tag", "abc", "abc", True),
    ("StringEquals", "kvstore:Tag", "abc", "ABC", False),
    ("StringNotEquals", "kvstore:Tag", "abc", "abd", True),
    ("StringNotEquals", "kvstore:Tag", "abc", "abc", False),
    ("StringEqualsIgnoreCase", "kvstore:Tag", "abc", "ABC", True),
    ("StringEqualsIgnoreCase", "kvstore:Tag", "abc", "abd", False),
    ("StringNotEqualsIgnoreCase", "kvstore:Tag", "abc", "abd", True),
    ("StringNotEqualsIgnoreCase", "kvstore:Tag", "abc", "ABC", False),
    ("StringLike", "acs:SourceIp", "192.168.*", "192.168.1.9", True),
    ("StringLike", "acs:SourceIp", "192.168.*", "10.0.0.1", False),
    ("StringLike", "acs:SourceIp", "10.0.0.?", "10.0.0.7", True),
    ("StringLike", "acs:SourceIp", "10.0.0.?", "10.0.0.17", False),
    ("StringNotLike", "acs:SourceIp", "192.168.*", "10.0.0.1", True),
    ("StringNotLike", "acs:SourceIp", "192.168.*", "192.168.1.9", False),
    ("NumericEquals", "kvstore:Count", "10", 10, True),
    ("NumericEquals", "kvstore:Count", 10, "10.0", True),
    ("NumericEquals", "kvstore:Count", "10", 11, False),
    ("NumericNotEquals", "kvstore:Count", 10, 11, True),
    ("NumericNotEquals", "kvstore:Count", 10, 10.0, False),
    ("NumericLessThan", "kvstore:Count", 10, 9.5, True),
    ("NumericLessThan", "kvstore:Count", 10, 10, False),
    ("NumericLessThanEquals", "kvstore:Count", 10, 10, True),
    ("NumericLessThanEquals", "kvstore:Count", 10, 10.001, False),
    ("NumericGreaterThan", "kvstore:Count", "0.1", 0.2, True),
    ("NumericGreaterThan", "kvstore:Count", "0.1", 0.1, False),
    ("NumericGreaterThanEquals", "kvstore:Count", 10, "10", True),
    ("NumericGreaterThanEquals", "kvstore:Count", 10, 9, False),
    ("DateEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, True),
    ("DateEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT + 1, False),
    ("DateNotEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT + 1, True),
    ("DateNotEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, False),
    ("DateLessThan", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT - 1, True),
    ("DateLessThan", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, False),
    ("DateLessThanEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, True),
    ("DateLessThanEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT + 1, False),
    ("DateGreaterThan", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT + 1, True),
    ("DateGreaterThan", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, False),
    ("DateGreaterThanEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT, True),
    ("DateGreaterThanEquals", "acs:CurrentTime", "2026-01-01T00:00:00Z", MOMENT - 1, False),
    ("Bool", "acs:SecureTransport", "true", True, True),
    ("Bool", "acs:SecureTransport", "true", False, False),
    ("Bool", "acs:SecureTransport", False, False, True),
    ("Bool", "acs:SecureTransport", False, True, False),
    ("IpAddress", "acs:SourceIp", "10.0.0.0/8", "10.1.2.3", True),
    ("IpAddress", "acs:SourceIp", "10.0.0.0/8", "11.0.0.1", False),
    ("IpAddress", "acs:SourceIp", "192.168.1.7", "192.168.1.7", True),
    ("IpAddress", "acs:SourceIp", "192.168.1.7", "192.168.1.8", False),
    ("IpAddress", "acs:SourceIp", "2001:db8::/32", "2001:db8:1::5", True),
    ("IpAddress", "acs:SourceIp", "2001:db8::/32", "2001:db9::5", False),
    ("IpAddress", "acs:SourceIp", "10.0.0.0/8", "::ffff:10.1.2.3", True),
    ("IpAddress", "acs:SourceIp", "::/0", "10.1.2.3", False),
    ("NotIpAddress", "acs:SourceIp", "10.0.0.0/8", "11.0.0.1", True),
    ("NotIpAddress", "acs:SourceIp", "10.0.0.0/8", "10.1.2.3", False),
]


@pytest.mark.parametrize(
    ("operator", "key", "value", "actual", "holds"),
    CONDITIONS,
    ids=[f"{c[0]}-{c[3]}-{'holds' if c[4] else 'fails'}" for c in CONDITIONS],
)
def test_condition(operator: str, key: str, value: Any, actual: Any, holds: bool) -> None:
    allow = doc(stmt(Condition={operator: {key: value}}))
    assert decide(allow, context={key: actual}) == ("Allow" if holds else "ImplicitDeny")
    deny = doc(stmt("Deny", Condition={operator: {key: value}}))
    assert decide([doc(stmt()), deny], context={key: actual}) == (
        "ExplicitDeny" if holds else "Allow"
    )


def test_every_operator_is_tested_both_ways() -> None:
    outcomes = {(c[0], c[4]) for c in CONDITIONS}
    assert outcomes == {(o, h) for o in CONDITION_OPERATORS for h in (True, False)}


def test_current_time_as_a_datetime_or_an_epoch_in_the_policy() -> None:
    before_2026 = doc(stmt(Condition={"DateLessThan": {"acs:CurrentTime": "2026-01-01T00:00:00Z"}}))
    late_2025 = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert decide(before_2026, context={"acs:CurrentTime": late_2025}) == "Allow"
    assert decide(before_2026, context={"acs:CurrentTime": late_2025.replace(tzinfo=None)}) == (
        "Allow"
    )
    assert decide(before_2026, context={"acs:CurrentTime": datetime(2026, 1, 1, 8, 0, 1)}) == (
        "ImplicitDeny"
    )
    epoch = doc(stmt(Condition={"DateLessThan": {"acs:CurrentTime": int(NEW_YEAR_2026)}}))
    assert decide(epoch, context={"acs:CurrentTime": late_2025}) == "Allow"
    assert decide(epoch, context={"acs:CurrentTime": NEW_YEAR_2026 + 60}) == "ImplicitDeny"


def test_secure_transport_as_a_string_in_the_context() -> None:
    https_only = doc(stmt(Condition={"Bool": {"acs:SecureTransport": "true"}}))
    assert decide(https_only, context={"acs:SecureTransport": "True"}) == "Allow"
    assert decide(https_only, context={"acs:SecureTransport": "false"}) == "ImplicitDeny"


def test_an_absent_key_fails_a_positive_condition_and_passes_a_negated_one() -> None:
    # Issue 9: a negated operator on an absent key holds (test_policy_conditions.py).
    for operator, key, value, _, _ in CONDITIONS:
        allow = doc(stmt(Condition={operator: {key: value}}))
        expected = "Allow" if "Not" in operator else "ImplicitDeny"
        assert decide(allow, context={"acs:Other": "x"}) == expected, operator


def test_a_deny_whose_negated_condition_key_is_absent_applies() -> None:
    allow = doc(stmt())
    deny_outside = doc(stmt("Deny", Condition={"NotIpAddress": {"acs:SourceIp": "10.0.0.0/8"}}))
    assert decide([allow, deny_outside], context={"acs:SourceIp": "192.168.0.1"}) == "ExplicitDeny"
    assert decide([allow, deny_outside], context={"acs:SourceIp": "10.0.0.1"}) == "Allow"
    assert decide([allow, deny_outside], context={}) == "ExplicitDeny"


def test_a_context_value_of_the_wrong_type_counts_as_absent() -> None:
    cases: list[tuple[str, str, Any, Any]] = [
        ("IpAddress", "acs:SourceIp", "10.0.0.0/8", "not-an-ip"),
        ("NotIpAddress", "acs:SourceIp", "10.0.0.0/8", "not-an-ip"),
        ("NotIpAddress", "acs:SourceIp", "10.0.0.0/8", 167772161),
        ("NumericNotEquals", "kvstore:Count", 1, "one"),
        ("NumericLessThan", "kvstore:Count", 1, True),
        ("NumericLessThan", "kvstore:Count", 1, float("nan")),
        ("DateNotEquals", "acs:CurrentTime", "2026-01-01", "soon"),
        ("Bool", "acs:SecureTransport", "false", "no"),
        ("StringNotEquals", "kvstore:Tag", "x", ["a", "b"]),
        ("StringNotEquals", "kvstore:Tag", "x", None),
    ]
    for operator, key, value, actual in cases:
        allow = doc(stmt(Condition={operator: {key: value}}))
        expected = "Allow" if "Not" in operator else "ImplicitDeny"
        assert decide(allow, context={key: actual}) == expected, (operator, actual)


def test_keys_are_case_insensitive_on_both_sides() -> None:
    lower = doc(stmt(Condition={"IpAddress": {"acs:sourceip": "10.0.0.0/8"}}))
    upper = doc(stmt(Condition={"IpAddress": {"ACS:SOURCEIP": "10.0.0.0/8"}}))
    for policy in (lower, upper):
        assert decide(policy, context={"acs:SourceIp": "10.0.0.1"}) == "Allow"
        assert decide(policy, context={"Acs:sourceIP": "10.0.0.1"}) == "Allow"
        assert decide(policy, context={"acs:SourceIp": "11.0.0.1"}) == "ImplicitDeny"


def test_several_values_for_one_key_are_alternatives() -> None:
    either = doc(stmt(Condition={"IpAddress": {"acs:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}}))
    assert decide(either, context={"acs:SourceIp": "10.9.9.9"}) == "Allow"
    assert decide(either, context={"acs:SourceIp": "2001:db8::7"}) == "Allow"
    assert decide(either, context={"acs:SourceIp": "172.16.0.1"}) == "ImplicitDeny"
    like = doc(stmt(Condition={"StringLike": {"acs:SourceIp": ["192.168.*", "10.*"]}}))
    assert decide(like, context={"acs:SourceIp": "10.0.0.1"}) == "Allow"
    assert decide(like, context={"acs:SourceIp": "172.16.0.1"}) == "ImplicitDeny"


def test_a_negated_operator_with_several_values_must_match_none() -> None:
    neither = doc(stmt(Condition={"NotIpAddress": {"acs:SourceIp": ["10.0.0.0/8", "::1"]}}))
    assert decide(neither, context={"acs:SourceIp": "172.16.0.1"}) == "Allow"
    assert decide(neither, context={"acs:SourceIp": "10.0.0.1"}) == "ImplicitDeny"
    assert decide(neither, context={"acs:SourceIp": "::1"}) == "ImplicitDeny"
    not_equal = doc(stmt(Condition={"StringNotEquals": {"kvstore:Tag": ["a", "b"]}}))
    assert decide(not_equal, context={"kvstore:Tag": "c"}) == "Allow"
    assert decide(not_equal, context={"kvstore:Tag": "b"}) == "ImplicitDeny"


def test_several_keys_and_operators_must_all_hold() -> None:
    conditions = {
        "IpAddress": {"acs:SourceIp": "10.0.0.0/8"},
        "Bool": {"acs:SecureTransport": "true"},
        "DateLessThan": {"acs:CurrentTime": "2026-01-01T00:00:00Z"},
    }
    policy = doc(stmt(Condition=conditions))
    good = {"acs:SourceIp": "10.0.0.1", "acs:SecureTransport": True, "acs:CurrentTime": 0.0}
    assert decide(policy, context=good) == "Allow"
    for key, bad in (
        ("acs:SourceIp", "11.0.0.1"),
        ("acs:SecureTransport", False),
        ("acs:CurrentTime", NEW_YEAR_2026),
    ):
        assert decide(policy, context={**good, key: bad}) == "ImplicitDeny", key
        missing = {k: v for k, v in good.items() if k != key}
        assert decide(policy, context=missing) == "ImplicitDeny", key
    two_keys = doc(stmt(Condition={"StringEquals": {"kvstore:A": "1", "kvstore:B": "2"}}))
    assert decide(two_keys, context={"kvstore:A": "1", "kvstore:B": "2"}) == "Allow"
    assert decide(two_keys, context={"kvstore:A": "1", "kvstore:B": "1"}) == "ImplicitDeny"
