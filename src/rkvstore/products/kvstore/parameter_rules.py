"""The Redis parameters ModifyInstanceConfig may set (README, "Instance parameters").

An allow-list: each parameter with its value rule, its ``CheckingCode`` as
DescribeParameters shows it, and a description. Pure functions: a value either
comes back as the text ``CONFIG SET`` gets, or the ``ApiError`` the contract
names is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors

EVICTION_POLICIES: Final = (
    "volatile-lru",
    "allkeys-lru",
    "volatile-lfu",
    "allkeys-lfu",
    "volatile-random",
    "allkeys-random",
    "volatile-ttl",
    "noeviction",
)
# Redis 6.2/7.0's keyspace notification classes (notify.c), K/E being where they go.
KEYSPACE_CLASSES: Final = "g$lshzxetmdA"
KEYSPACE_CHANNELS: Final = "KE"
_INTEGER: Final = re.compile(r"-?[0-9]{1,12}")


@dataclass(frozen=True)
class Parameter:
    name: str
    checking_code: str
    description: str
    check: Callable[[str], bool]


def _integer(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return bool(_INTEGER.fullmatch(value)) and low <= int(value) <= high

    return check


def _keyspace_events(value: str) -> bool:
    """Empty (off), or K and/or E with at least one event class, no other character."""
    if value == "":
        return True
    allowed = set(KEYSPACE_CLASSES + KEYSPACE_CHANNELS)
    chars = set(value)
    return (
        chars <= allowed
        and bool(chars & set(KEYSPACE_CHANNELS))
        and bool(chars & set(KEYSPACE_CLASSES))
    )


ALLOWED: Final[dict[str, Parameter]] = {
    p.name: p
    for p in (
        Parameter(
            "maxmemory-policy",
            "[" + "|".join(EVICTION_POLICIES) + "]",
            "Which keys are evicted when the node reaches maxmemory.",
            lambda value: value in EVICTION_POLICIES,
        ),
        Parameter(
            "timeout",
            "[0-100000]",
            "Seconds after which an idle client connection is closed; 0 never closes it.",
            _integer(0, 100_000),
        ),
        Parameter(
            "notify-keyspace-events",
            "[K|E][g$lshzxetmdA]* or empty",
            "Which keyspace events are published: K and/or E, then the event classes; "
            "empty turns notifications off.",
            _keyspace_events,
        ),
        Parameter(
            "hz",
            "[1-500]",
            "How often per second the node runs its background tasks.",
            _integer(1, 500),
        ),
    )
}
NAMES: Final = tuple(ALLOWED)


def _shown(name: str) -> str:
    """A name from the request, safe in a message: 64 characters, non-printables as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in name[:64])


def parse_config(text: str) -> dict[str, str]:
    """ModifyInstanceConfig's ``Config``: a JSON object of allow-listed names and valid values.

    A value may be a JSON string or number (Terraform sends strings, Alibaba's
    examples numbers); it is checked as the text Redis would get.
    """
    try:
        document: Any = json.loads(text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise ApiError(
            kvstore_errors.INVALID_PARAMETERS_FORMAT, name="Config", rule="must be a JSON object"
        )
    values: dict[str, str] = {}
    for name, raw in document.items():
        parameter = ALLOWED.get(name)
        if parameter is None:
            raise ApiError(
                kvstore_errors.PARAMETER_NOT_SUPPORTED, name=_shown(name), allowed=", ".join(NAMES)
            )
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise ApiError(
                kvstore_errors.INVALID_PARAMETERS_FORMAT,
                name=name,
                rule=f"must be a string or an integer in {parameter.checking_code}",
            )
        value = str(raw)
        if not parameter.check(value):
            raise ApiError(
                kvstore_errors.INVALID_PARAMETERS_FORMAT,
                name=name,
                rule=f"must be in {parameter.checking_code}",
            )
        values[name] = value
    return values


def config_json(values: dict[str, str]) -> str:
    """The instance's parameters as ``Config`` answers them: a JSON object of strings."""
    return json.dumps({name: values[name] for name in NAMES if name in values}, sort_keys=True)
