"""The RAM policy language (api.md §5): parse a document once, evaluate it often.

Pure: no I/O and no clock; the caller puts ``acs:CurrentTime`` in the context.

Choices api.md leaves open:

- Element names, ``Effect`` values and condition operators are case-sensitive, as
  in Alibaba's grammar. An element the grammar does not have (a typo such as
  ``"Conditions"``) and a key repeated in one JSON object make the document
  malformed: silently dropping them could widen an Allow or void a Deny.
- Condition keys are case-insensitive, in the policy and in the context
  (``acs:sourceip`` is ``acs:SourceIp``). A document stored from now on
  (``validate_policy``: CreatePolicy, CreatePolicyVersion) may name only the keys
  a request to rkvstore carries, ``CONDITION_KEYS``; any other key, a typo such as
  ``"acs:SourceIp "`` included, is ``MalformedPolicyDocument``, since a condition
  on a key no request carries would silently never (or always) hold.
- A key absent from the request matches no value: a positive operator does not
  hold, a negated one (``StringNot*``, ``NumericNotEquals``, ``DateNotEquals``,
  ``NotIpAddress``) does. So a Deny guarded by a negated operator applies to a
  request without the key. A context value that cannot be read as the operator's
  type counts as absent. There are no ``...IfExists`` operators: RAM documents none.
- Several values for one key: a positive operator holds when any value matches, a
  negated one when none does.
- ``Date*`` values are ISO-8601 (no offset means UTC) or epoch seconds;
  ``IpAddress`` values are addresses (one host) or CIDR blocks (host bits allowed);
  an IPv4-mapped IPv6 source address counts as its IPv4 address.
- Wildcards are matched in linear time without regular expressions, so that no
  pattern a tenant writes can make evaluation slow.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any, Final, Literal

from rkvstore import errors
from rkvstore.errors import ApiError

Effect = Literal["Allow", "Deny"]
Decision = Literal["Allow", "ExplicitDeny", "ImplicitDeny"]

MAX_DOCUMENT_LENGTH: Final = 6144


@dataclass(frozen=True)
class Condition:
    operator: str
    key: str  # as written; compared case-insensitively
    values: tuple[str, ...]  # normalised for the operator (see _Family.render)


@dataclass(frozen=True)
class Statement:
    effect: Effect
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]
    conditions: tuple[Condition, ...]  # all must hold


@dataclass(frozen=True)
class Policy:
    version: str
    statements: tuple[Statement, ...]


# --- wildcards


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """Whether ``pattern`` (``*`` any run, ``?`` one character) matches all of ``text``."""
    if ignore_case:
        return _glob(_folded(pattern), _folded(text))
    return _glob(pattern, text)


@lru_cache(maxsize=4096)
def _folded(text: str) -> tuple[str, ...]:
    # Fold character by character, so that "?" still stands for one character.
    return tuple(c.casefold() for c in text)


def _glob(pattern: Sequence[str], text: Sequence[str]) -> bool:
    # Greedy matching that backtracks only to the last "*": O(len(pattern) * len(text)).
    p = t = 0
    star, resume = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] == "*":
            star, resume = p, t
            p += 1
        elif p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            p += 1
            t += 1
        elif star >= 0:
            resume += 1
            p, t = star + 1, resume
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


# --- values: one reader per operator family, for policy values and context values alike

_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_Address = IPv4Address | IPv6Address
_Network = IPv4Network | IPv6Network


def _text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float | Decimal | IPv4Address | IPv6Address):
        return str(value)
    return None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if not isinstance(value, str) or not _NUMBER_TEXT.fullmatch(value):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif (seconds := _number(value)) is not None:
        try:
            return datetime.fromtimestamp(float(seconds), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def _truth(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@lru_cache(maxsize=1024)
def _network(value: Any) -> _Network | None:
    if not isinstance(value, str):
        return None
    try:
        return ip_network(value, strict=False)
    except ValueError:
        return None


def _address(value: Any) -> _Address | None:
    if isinstance(value, str):
        try:
            value = ip_address(value)
        except ValueError:
            return None
    if isinstance(value, IPv6Address) and value.ipv4_mapped is not None:
        return value.ipv4_mapped
    return value if isinstance(value, IPv4Address | IPv6Address) else None


@dataclass(frozen=True)
class _Family:
    kind: str  # what a policy value must be, for the error message
    parse: Callable[[Any], Any]  # a policy value (JSON or normalised) -> comparable, or None
    render: Callable[[Any], str]  # comparable -> the normalised value kept in Condition
    read_context: Callable[[Any], Any]  # a context value -> comparable, or None


_STRING = _Family("a string", _text, str, _text)
_NUMERIC = _Family("a number", _number, str, _number)
_DATE = _Family("an ISO-8601 date or epoch seconds", _instant, datetime.isoformat, _instant)
_BOOL = _Family("true or false", _truth, lambda b: "true" if b else "false", _truth)
_IP = _Family("an IP address or CIDR block", _network, str, _address)


def _like(actual: str, pattern: str) -> bool:
    return _glob(pattern, actual)


def _equal_ignoring_case(actual: str, expected: str) -> bool:
    return actual.casefold() == expected.casefold()


def _within(actual: _Address, network: _Network) -> bool:
    return actual in network  # False when the IP versions differ


_Test = Callable[[Any, Any], bool]
# operator -> (family, test(context value, policy value), negated)
_OPERATORS: Final[dict[str, tuple[_Family, _Test, bool]]] = {
    "StringEquals": (_STRING, operator.eq, False),
    "StringNotEquals": (_STRING, operator.eq, True),
    "StringEqualsIgnoreCase": (_STRING, _equal_ignoring_case, False),
    "StringNotEqualsIgnoreCase": (_STRING, _equal_ignoring_case, True),
    "StringLike": (_STRING, _like, False),
    "StringNotLike": (_STRING, _like, True),
    "NumericEquals": (_NUMERIC, operator.eq, False),
    "NumericNotEquals": (_NUMERIC, operator.eq, True),
    "NumericLessThan": (_NUMERIC, operator.lt, False),
    "NumericLessThanEquals": (_NUMERIC, operator.le, False),
    "NumericGreaterThan": (_NUMERIC, operator.gt, False),
    "NumericGreaterThanEquals": (_NUMERIC, operator.ge, False),
    "DateEquals": (_DATE, operator.eq, False),
    "DateNotEquals": (_DATE, operator.eq, True),
    "DateLessThan": (_DATE, operator.lt, False),
    "DateLessThanEquals": (_DATE, operator.le, False),
    "DateGreaterThan": (_DATE, operator.gt, False),
    "DateGreaterThanEquals": (_DATE, operator.ge, False),
    "Bool": (_BOOL, operator.eq, False),
    "IpAddress": (_IP, _within, False),
    "NotIpAddress": (_IP, _within, True),
}
CONDITION_OPERATORS: Final = frozenset(_OPERATORS)
# What every request carries (services.context.CallContext.condition_context; api.md §5).
CONDITION_KEYS: Final = frozenset({"acs:SourceIp", "acs:SecureTransport", "acs:CurrentTime"})
_KNOWN_KEYS: Final = frozenset(key.casefold() for key in CONDITION_KEYS)


# --- parsing

_POLICY_ELEMENTS: Final = frozenset({"Version", "Statement"})
_STATEMENT_ELEMENTS: Final = frozenset(
    {"Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
)


def _malformed(reason: str) -> ApiError:
    return ApiError(errors.MALFORMED_POLICY_DOCUMENT, reason=reason)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _malformed(f'The policy document repeats the key "{key}".')
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def parse_policy(document: str) -> Policy:
    """Parse and check a policy document; ``MalformedPolicyDocument`` says what is wrong."""
    if len(document) > MAX_DOCUMENT_LENGTH:
        raise _malformed(f"The policy document is longer than {MAX_DOCUMENT_LENGTH} characters.")
    try:
        tree = json.loads(
            document,
            object_pairs_hook=_unique_keys,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_no_constant,
        )
    except (ValueError, RecursionError):
        raise _malformed("The policy document is not valid JSON.") from None
    if not isinstance(tree, dict):
        raise _malformed("The policy document must be a JSON object.")
    _only_elements(tree, _POLICY_ELEMENTS)
    if tree.get("Version") != "1":
        raise _malformed('The policy Version must be "1".')
    if "Statement" not in tree or tree["Statement"] == []:
        raise _malformed("Add a Statement element to the policy.")
    items = tree["Statement"]
    items = items if isinstance(items, list) else [items]
    if not all(isinstance(item, dict) for item in items):
        raise _malformed("The Statement element must be an object or a list of objects.")
    return Policy("1", tuple(_statement(item) for item in items))


def validate_policy(document: str) -> Policy:
    """``parse_policy``, and the rules a document must meet to be stored from now on.

    Documents stored before a rule existed are still read by ``parse_policy``: a
    stored document must never fail at evaluation time.
    """
    policy = parse_policy(document)
    for statement in policy.statements:
        for condition in statement.conditions:
            if condition.key.casefold() not in _KNOWN_KEYS:
                raise _malformed(f'The condition key "{condition.key}" is not supported.')
    return policy


def _only_elements(obj: dict[str, Any], known: frozenset[str]) -> None:
    for name in obj:
        if name not in known:
            raise _malformed(f'The policy element "{name}" is not supported.')


def _statement(raw: dict[str, Any]) -> Statement:
    _only_elements(raw, _STATEMENT_ELEMENTS)
    effect = raw.get("Effect")
    if effect != "Allow" and effect != "Deny":
        raise _malformed('The Effect element must be "Allow" or "Deny".')
    actions, not_actions = _either(raw, "Action", "NotAction")
    resources, not_resources = _either(raw, "Resource", "NotResource")
    conditions = _conditions(raw["Condition"]) if "Condition" in raw else ()
    return Statement(
        "Allow" if effect == "Allow" else "Deny",
        actions,
        not_actions,
        resources,
        not_resources,
        conditions,
    )


def _either(
    raw: dict[str, Any], name: str, not_name: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    has, has_not = name in raw, not_name in raw
    if has == has_not:
        article = "an" if name[0] in "AEIOU" else "a"
        raise _malformed(
            f"A policy statement cannot have both {name} and {not_name}."
            if has
            else f"Add {article} {name} or {not_name} element to the policy statement."
        )
    element = name if has else not_name
    value = raw[element]
    patterns = value if isinstance(value, list) else [value]
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise _malformed(
            f"The {element} element must be a non-empty string"
            " or a non-empty list of non-empty strings."
        )
    return (tuple(patterns), ()) if has else ((), tuple(patterns))


def _conditions(raw: Any) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        raise _malformed("The Condition element must be an object.")
    conditions = []
    for name, block in raw.items():
        if name not in _OPERATORS:
            raise _malformed(f'The condition operator "{name}" is not supported.')
        if not isinstance(block, dict):
            raise _malformed(f'The condition operator "{name}" must map condition keys to values.')
        for key, value in block.items():
            if not key:
                raise _malformed("A condition key must not be empty.")
            conditions.append(Condition(name, key, _condition_values(name, key, value)))
    return tuple(conditions)


def _condition_values(name: str, key: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str | bool | Decimal) for v in items):
        raise _malformed(
            f'The values of condition key "{key}" must be strings, numbers, booleans'
            " or a non-empty list of them."
        )
    family = _OPERATORS[name][0]
    values = []
    for item in items:
        parsed = family.parse(item)
        if parsed is None:
            raise _malformed(
                f'The {name} condition on "{key}" has a value that is not {family.kind}.'
            )
        values.append(family.render(parsed))
    return tuple(values)


# --- evaluation


def evaluate(
    policies: Iterable[Policy], action: str, resource: str, context: Mapping[str, Any]
) -> Decision:
    """Decide ``action`` on ``resource``: any matching Deny wins, else any matching Allow."""
    facts = {str(key).casefold(): value for key, value in context.items()}
    allowed = False
    for policy in policies:
        for statement in policy.statements:
            if allowed and statement.effect == "Allow":
                continue  # only a Deny can still change the answer
            if _applies(statement, action, resource, facts):
                if statement.effect == "Deny":
                    return "ExplicitDeny"
                allowed = True
    return "Allow" if allowed else "ImplicitDeny"


def _applies(statement: Statement, action: str, resource: str, facts: dict[str, Any]) -> bool:
    if not _names_action(statement, action):
        return False
    if statement.resources:
        if not any(wildcard_match(p, resource) for p in statement.resources):
            return False
    elif any(wildcard_match(p, resource) for p in statement.not_resources):
        return False
    return all(_holds(condition, facts) for condition in statement.conditions)


def _names_action(statement: Statement, action: str) -> bool:
    if statement.actions:
        return any(wildcard_match(p, action, ignore_case=True) for p in statement.actions)
    return not any(wildcard_match(p, action, ignore_case=True) for p in statement.not_actions)


def _holds(condition: Condition, facts: dict[str, Any]) -> bool:
    spec = _OPERATORS.get(condition.operator)
    if spec is None:
        return False
    family, test, negated = spec
    actual = family.read_context(facts.get(condition.key.casefold()))
    # A key absent from the request (or a value not of the operator's type) matches
    # no value, so a negated operator holds: a Deny with NotIpAddress, StringNotEquals…
    # applies to a request without the key. Alibaba's RAM pages (Policy elements,
    # Conditional operators, Policy evaluation process; AlibabaCloudDocs/ram,
    # intl.en-US/Policy Management/Policy language/) do not say what an absent key
    # does; this is the rule of the IAM policy language that RAM's grammar follows:
    # https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html
    # ("If the key that you specify in a policy condition is not present in the
    # request context, the values do not match and the condition is false. If the
    # policy condition requires that the key is not matched, such as StringNotLike
    # …, and the right key is not present, the condition is true.")
    matched = actual is not None and any(
        value is not None and test(actual, value)
        for value in (family.parse(v) for v in condition.values)
    )
    return not matched if negated else matched


# --- one action, one request, many resources (a listing filtered by permission)


@dataclass(frozen=True)
class ResourceRule:
    """A statement that applies to one action in one request: only its resources are left."""

    effect: Effect
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]

    def covers(self, resource: str) -> bool:
        if self.resources:
            return any(wildcard_match(p, resource) for p in self.resources)
        return not any(wildcard_match(p, resource) for p in self.not_resources)


def resource_rules(
    policies: Iterable[Policy], action: str, context: Mapping[str, Any]
) -> tuple[ResourceRule, ...]:
    """The statements that apply to ``action`` in ``context``, whatever the resource.

    The action and the conditions are the same for every resource of one request, so
    ``decide_resource(rules, r)`` is ``evaluate(policies, action, r, context)`` for every
    ``r``; a listing tests them once, and only resources remain (see ``iam.visibility``).
    """
    facts = {str(key).casefold(): value for key, value in context.items()}
    return tuple(
        ResourceRule(statement.effect, statement.resources, statement.not_resources)
        for policy in policies
        for statement in policy.statements
        if _names_action(statement, action)
        and all(_holds(condition, facts) for condition in statement.conditions)
    )


def decide_resource(rules: Iterable[ResourceRule], resource: str) -> Decision:
    """``evaluate`` on the rules of one action and request: any Deny wins, else any Allow."""
    allowed = False
    for rule in rules:
        if (rule.effect == "Deny" or not allowed) and rule.covers(resource):
            if rule.effect == "Deny":
                return "ExplicitDeny"
            allowed = True
    return "Allow" if allowed else "ImplicitDeny"
