"""Secrets are a type, not a string: they never print themselves."""

from __future__ import annotations

import hashlib
from typing import Final

MASK: Final = "******"


class Secret:
    """A secret value. ``str``/``repr`` show ``******``; ``reveal()`` is explicit."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def sha256_hex(self) -> str:
        return hashlib.sha256(self._value.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return NotImplemented

    def __hash__(self) -> int:
        return id(self)

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


# Parameter names whose values are secrets wherever they appear (api.md §2).
SECRET_PARAMETERS: Final = frozenset(
    {
        "AccountPassword",
        "OldAccountPassword",
        "NewAccountPassword",
        "NewPassword",
        "Password",
        "AccessKeySecret",
        "AdminPassword",
        "TlsClientKey",
        "SentinelPassword",
        "SecurityToken",
        "SecretData",  # KMS (docs/kms.md §7)
    }
)
