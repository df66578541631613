"""An action's declared parameters, and the typed values a request's pairs give by them.

The kernel's half of parameter parsing, below the API layer: each product's
action table declares ``Param``s, and ``parse_params`` checks every shape (type,
required, bounds, choices) after authentication, before any handler. Decoding
the request's bytes into pairs is ``api.params``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.secret import SECRET_PARAMETERS, Secret

ParamType = Literal["str", "int", "bool", "secret", "enum"]


@dataclass(frozen=True)
class Param:
    """One declared parameter of an action."""

    name: str
    type: ParamType = "str"
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] = ()
    min_value: int | None = None
    max_value: int | None = None
    # Beyond this, InvalidParameter. Fields with a rule of their own (names,
    # passwords, descriptions) keep the default, the request's own bound, so
    # that their rule, with its own error code, is what refuses them.
    max_length: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.name in SECRET_PARAMETERS and self.type != "secret":
            raise ValueError(f"{self.name} must be declared type='secret'")


@dataclass(frozen=True)
class ParamSpec:
    params: tuple[Param, ...] = field(default_factory=tuple)

    def names(self) -> list[str]:
        return [p.name for p in self.params]


def _invalid(name: str) -> ApiError:
    return ApiError(errors.INVALID_PARAMETER, name=name)


def _convert(param: Param, raw: str) -> Any:
    if len(raw) > param.max_length:
        raise _invalid(param.name)
    if param.type == "secret":
        return Secret(raw)
    if param.type == "str":
        return raw
    if param.type == "bool":
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise _invalid(param.name)
        return lowered == "true"
    if param.type == "int":
        if not re.fullmatch(r"-?[0-9]{1,18}", raw):
            raise _invalid(param.name)
        value = int(raw)
        if (param.min_value is not None and value < param.min_value) or (
            param.max_value is not None and value > param.max_value
        ):
            raise _invalid(param.name)
        return value
    if param.type == "enum":
        if raw not in param.choices:
            raise _invalid(param.name)
        return raw
    raise AssertionError(param.type)  # pragma: no cover


def parse_params(spec: ParamSpec, values: Mapping[str, str]) -> dict[str, Any]:
    """Typed values for every declared parameter; unknown parameters are ignored.

    A required parameter that is absent or empty is ``MissingParameter``; an
    optional one that is empty counts as absent.
    """
    parsed: dict[str, Any] = {}
    for param in spec.params:
        raw = values.get(param.name)
        if raw is None or raw == "":
            if param.required:
                raise ApiError(errors.MISSING_PARAMETER, name=param.name)
            parsed[param.name] = param.default
            continue
        parsed[param.name] = _convert(param, raw)
    return parsed
