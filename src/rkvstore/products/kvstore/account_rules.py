"""Account rules (api.md §3, "Validation rules"): names, passwords, descriptions, privileges.

Pure functions: each either returns or raises the ``ApiError`` the contract
names, so a rule and its error code live in one place.
"""

from __future__ import annotations

import re
from typing import Final

from rkvstore.domain.accounts import DEFAULT_USER, MANAGEMENT_USER
from rkvstore.domain.privileges import (
    PRIVILEGE_READ_ONLY,
    PRIVILEGE_READ_WRITE,
    PRIVILEGE_REPL,
)
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.secret import Secret

RESERVED_NAMES: Final = frozenset(
    {
        "default",
        "root",
        "admin",
        "administrator",
        "redis",
        "tair",
        "kvstore",
        "system",
        "sys",
        "replicator",
        "monitor",
        MANAGEMENT_USER,
    }
)

ACCOUNT_NAME_MAX: Final = 100
_ACCOUNT_NAME: Final = re.compile(r"[a-z][a-z0-9_]*")

PASSWORD_MIN: Final = 8
PASSWORD_MAX: Final = 32
PASSWORD_SPECIALS: Final = "!@#$%^&*()_+-="  # noqa: S105 - an alphabet, not a password
_UPPER: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER: Final = frozenset("abcdefghijklmnopqrstuvwxyz")
_DIGITS: Final = frozenset("0123456789")
_SPECIALS: Final = frozenset(PASSWORD_SPECIALS)
_PASSWORD_CLASSES: Final = (_UPPER, _LOWER, _DIGITS, _SPECIALS)
PASSWORD_ALPHABET: Final = _UPPER | _LOWER | _DIGITS | _SPECIALS
PASSWORD_CLASSES_REQUIRED: Final = 3

DESCRIPTION_MIN: Final = 2
DESCRIPTION_MAX: Final = 256
# "Letters" are ASCII letters; "Chinese characters" are the CJK Unified
# Ideographs block. Character classes are spelled out so that no other Unicode
# letter or digit (é, ٣, full-width A) slips through ``\w``-style matching.
_CJK: Final = "\u4e00-\u9fff"
_DESCRIPTION: Final = re.compile(rf"[A-Za-z{_CJK}][A-Za-z0-9{_CJK}_\-]*")
_URL_PREFIXES: Final = ("http://", "https://")

PRIVILEGES: Final = (PRIVILEGE_READ_ONLY, PRIVILEGE_READ_WRITE, PRIVILEGE_REPL)
DEFAULT_PRIVILEGE: Final = PRIVILEGE_READ_WRITE


# --------------------------------------------------------------------------- names


def is_default_account(name: str, instance_id: str) -> bool:
    """The instance's own accounts: Redis's ``default`` user and the one named after the ID."""
    return name in (DEFAULT_USER, instance_id)


def check_account_name(name: str) -> None:
    """1-100 characters: a lower-case letter, then lower-case letters, digits and ``_``."""
    if not 1 <= len(name) <= ACCOUNT_NAME_MAX or not _ACCOUNT_NAME.fullmatch(name):
        raise ApiError(kvstore_errors.ACCOUNT_NAME_FORMAT)


def check_creatable_name(name: str, instance_id: str) -> None:
    """A name CreateAccount may use: well formed, not reserved, not a default account.

    The instance ID (``r-…``) is not a well-formed name, but api.md lists it as
    a default account that "cannot be created" with ``Forbid``; so default
    accounts are refused before the format is checked.
    """
    if is_default_account(name, instance_id):
        raise ApiError(kvstore_errors.ACCOUNT_NAME_FORBID)
    check_account_name(name)
    if name in RESERVED_NAMES:
        raise ApiError(kvstore_errors.ACCOUNT_NAME_FORBID)


def check_addressable_name(name: str, instance_id: str) -> None:
    """A name Describe/ResetAccountPassword/Modify* may address: a default account or well formed.

    Whether the account exists is the caller's question (``NotFound``).
    """
    if not is_default_account(name, instance_id):
        check_account_name(name)


# DeleteAccount and GrantAccountPrivilege may change exactly the names CreateAccount may use.
check_modifiable_name = check_creatable_name


# --------------------------------------------------------------------------- passwords


def password_is_valid(value: str) -> bool:
    """8-32 characters from the alphabet, at least three of the four classes."""
    if not PASSWORD_MIN <= len(value) <= PASSWORD_MAX:
        return False
    chars = set(value)
    if not chars <= PASSWORD_ALPHABET:
        return False
    classes = sum(1 for cls in _PASSWORD_CLASSES if chars & cls)
    return classes >= PASSWORD_CLASSES_REQUIRED


def check_password(password: Secret) -> None:
    """AccountPassword, NewAccountPassword and CreateInstance's Password."""
    if not password_is_valid(password.reveal()):
        raise ApiError(kvstore_errors.ACCOUNT_PASSWORD_FORMAT)


# --------------------------------------------------------------------------- descriptions


def check_description(text: str) -> None:
    """2-256 characters from letters, digits, Chinese, ``_`` and ``-``; starts with a letter."""
    if (
        not DESCRIPTION_MIN <= len(text) <= DESCRIPTION_MAX
        or text.lower().startswith(_URL_PREFIXES)
        or not _DESCRIPTION.fullmatch(text)
    ):
        raise ApiError(kvstore_errors.ACCOUNT_DESCRIPTION_FORMAT)


# --------------------------------------------------------------------------- privileges


def check_privilege_for_create(privilege: str) -> None:
    if privilege not in PRIVILEGES:
        raise ApiError(kvstore_errors.ACCOUNT_PRIVILEGE_MALFORMED)


def check_privilege_for_grant(privilege: str) -> None:
    if privilege not in PRIVILEGES:
        raise ApiError(kvstore_errors.ACCOUNT_PRIVILEGE_FORMAT)


def super_account(instance_id: str, name: str, password_sha256: str) -> dict[str, object]:
    """A default account's row (``default``, the instance ID's): type and privilege Super."""
    return {
        "instance_id": instance_id,
        "name": name,
        "password_sha256": password_sha256,
        "privilege": "Super",
        "account_type": "Super",
        "description": "",
    }
