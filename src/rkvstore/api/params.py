"""From raw bytes to parameter pairs: the HTTP-level half of parameter parsing.

``decode_pairs`` bounds and decodes what arrived (before any signature check)
and ``merge_pairs`` joins the query's and the body's; turning the pairs into
typed values by an action's declared spec is ``services.params.parse_params``
(after authentication, before any handler).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import parse_qsl

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.secret import SECRET_PARAMETERS


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
