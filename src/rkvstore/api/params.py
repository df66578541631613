"""From raw bytes to typed action parameters.

Two steps: ``decode_pairs`` bounds and decodes what arrived (before any
signature check), and ``parse_params`` turns the pairs into typed values by
an action's declared spec (after authentication, before any handler).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.secret import SECRET_PARAMETERS, Secret

ParamType = Literal["str", "int", "bool", "secret", "enum"]


def decode_pairs(raw: bytes, *, max_bytes: int, max_parameters: int) -> list[tuple[str, str]]:
    """Decode ``application/x-www-form-urlencoded`` bytes, keeping empty values."""
    if len(raw) > max_bytes:
        raise ApiError(errors.REQUEST_TOO_LARGE, limit=str(max_bytes))
    if not raw:
        return []
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=max_parameters,
            separator="&",
        )
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise ApiError(errors.INVALID_ENCODING) from exc
    except ValueError as exc:  # parse_qsl's max_num_fields
        raise ApiError(errors.TOO_MANY_PARAMETERS, limit=str(max_parameters)) from exc
    for key, value in pairs:
        # A password's own rule refuses a control character in it, with its own
        # code (api.md §3); any other value may not hold a NUL.
        if _has_control(key) or ("\x00" in value and key not in SECRET_PARAMETERS):
            raise ApiError(errors.INVALID_ENCODING)
    return pairs


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


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


def merge_pairs(*groups: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The query's and the body's parameters as one mapping; a name may come once only.

    A repeated name is ambiguous: the signature covers every copy, and no two
    readers of the request may be allowed to see different values.
    """
    merged: dict[str, str] = {}
    for group in groups:
        for key, value in group:
            if key in merged:
                raise ApiError(errors.DUPLICATE_PARAMETER, name=printable(key))
            merged[key] = value
    return merged


def printable(text: str) -> str:
    """At most 64 characters, each non-printable one as ``?``: safe in a message or a log."""
    return "".join(c if c.isprintable() else "?" for c in text[:64])
