"""The account validation rules of api.md §3, each at its edges: code, message and status."""

from __future__ import annotations

import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.products.kvstore import account_rules as accounts
from rkvstore.products.kvstore import errors
from rkvstore.products.kvstore.account_rules import (
    PRIVILEGES,
    RESERVED_NAMES,
    check_account_name,
    check_addressable_name,
    check_creatable_name,
    check_description,
    check_modifiable_name,
    check_password,
    check_privilege_for_create,
    check_privilege_for_grant,
    is_default_account,
)
from rkvstore.secret import Secret

INSTANCE_ID = "r-bp1zxszhcgatnx2b0f"
OTHER_INSTANCE_ID = "r-uf6ckfbcqwn7mn1i5s"
SPECIALS = "!@#$%^&*()_+-="


def raises_api_error(spec: ErrorSpec, call: Callable[[], None]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    err = caught.value
    assert (err.code, err.message, err.http_status) == (spec.code, spec.message, spec.http_status)
    return err


# --------------------------------------------------------------------------- the catalogue


@pytest.mark.parametrize(
    ("spec", "code", "message"),
    [
        (
            errors.ACCOUNT_NAME_FORMAT,
            "InvalidAccountName.Format",
            "Specified AccountName is not valid.",
        ),
        (
            errors.ACCOUNT_NAME_FORBID,
            "InvalidAccountName.Forbid",
            "Specified AccountName is a keyword.",
        ),
        (
            errors.ACCOUNT_PASSWORD_FORMAT,
            "InvalidAccountPassword.Format",
            "Specified AccountPassword is not valid.",
        ),
        (
            errors.ACCOUNT_DESCRIPTION_FORMAT,
            "InvalidAccountDescription.Format",
            "Specified AccountDescription is not valid.",
        ),
        (
            errors.ACCOUNT_PRIVILEGE_MALFORMED,
            "InvalidAccountPrivilege.Malformed",
            "Specified AccountPrivilege is not valid.",
        ),
        (
            errors.ACCOUNT_PRIVILEGE_FORMAT,
            "InvalidAccountPrivilege.Format",
            "Specified AccountPrivilege is not valid.",
        ),
    ],
)
def test_the_errors_these_rules_raise_are_the_contracts(
    spec: ErrorSpec, code: str, message: str
) -> None:
    assert (spec.code, spec.message, spec.http_status) == (code, message, 400)


# --------------------------------------------------------------------------- passwords


def check(password: str) -> None:
    check_password(Secret(password))


def bad_password(password: str) -> ApiError:
    return raises_api_error(errors.ACCOUNT_PASSWORD_FORMAT, lambda: check(password))


@pytest.mark.parametrize("length", [8, 9, 31, 32])
def test_a_password_of_8_to_32_characters_is_valid(length: int) -> None:
    check(("Aa1!" * 9)[:length])


@pytest.mark.parametrize("length", [0, 1, 7, 33, 64])
def test_a_password_shorter_than_8_or_longer_than_32_is_invalid(length: int) -> None:
    bad_password(("Aa1!" * 16)[:length])


@pytest.mark.parametrize(
    "password",
    [
        "abcdefgh",
        "ABCDEFGH",
        "12345678",
        "!@#$%^&*",
        "abcdEFGH",
        "abcd1234",
        "ABCD1234",
        "abcd!@#$",
        "ABCD!@#$",
        "1234!@#$",
    ],
)
def test_one_or_two_character_classes_are_not_enough(password: str) -> None:
    bad_password(password)


@pytest.mark.parametrize("password", ["abcdEF12", "abcdEF!@", "abcd12!@", "ABCD12!@", "abCD12!@"])
def test_three_or_four_character_classes_are_enough(password: str) -> None:
    check(password)


@pytest.mark.parametrize("special", list(SPECIALS))
def test_each_allowed_special_character_is_a_class_of_its_own(special: str) -> None:
    check("Abcdefg" + special)  # upper, lower and this special: three classes only with it
    check("abcdef1" + special)
    check(special * 6 + "A1")


@pytest.mark.parametrize(
    "char",
    [
        " ",
        ".",
        "~",
        "é",
        "中",
        "\t",
        "\x00",
        "\n",
        "\x7f",
        "\u00a0",
        "\uff11",
        "\uff21",
    ]  # full-width 1 and A
    + [c for c in string.punctuation if c not in SPECIALS],
)
def test_any_other_character_makes_a_password_invalid(char: str) -> None:
    bad_password("Abcd" + char + "ef1!")
    bad_password("Abcdef1!" + char)
    bad_password(char + "Abcdef1!")


def test_the_rejected_password_is_not_in_the_error() -> None:
    err = bad_password("nouppercase1")
    assert "nouppercase1" not in str(err)
    assert "nouppercase1" not in repr(err.args)


_ALLOWED = string.ascii_letters + string.digits + SPECIALS
_SUPERSET = (
    _ALLOWED + string.punctuation + " \t\n\r\x00\x7féü中文\u00a0\u4e00\U0001f600\uff21\uff11"
)


def _oracle(password: str) -> bool:
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, SPECIALS]
    return (
        8 <= len(password) <= 32
        and all(c in _ALLOWED for c in password)
        and sum(any(c in cls for c in password) for cls in classes) >= 3
    )


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.text(alphabet=_SUPERSET, max_size=40),
        st.text(alphabet=_ALLOWED, min_size=6, max_size=34),
        st.text(alphabet=_ALLOWED + "é. ~\t", min_size=7, max_size=33),
    )
)
def test_a_password_passes_exactly_when_it_has_8_to_32_allowed_characters_of_3_classes(
    password: str,
) -> None:
    try:
        check(password)
        passed = True
    except ApiError as err:
        assert err.code == "InvalidAccountPassword.Format"
        passed = False
    assert passed == _oracle(password)


# --------------------------------------------------------------------------- account names


@pytest.mark.parametrize(
    "name", ["a", "a" * 100, "z9", "ab_c", "a_", "a1_2_3", "x" + "0" * 99, "readonly_user"]
)
def test_a_well_formed_name_is_valid(name: str) -> None:
    check_account_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 101,
        "Abc",  # upper-case start
        "aBc",  # upper case anywhere
        "1abc",  # digit start
        "_abc",
        "ab-c",
        "ab.c",
        "ab c",
        "abc\n",  # a trailing newline must not sneak past "$"
        "é",
        "aé",
        "a中",
        "a\x00",
        "\uff41bc",  # full-width a
    ],
)
def test_a_malformed_name_is_invalid(name: str) -> None:
    raises_api_error(errors.ACCOUNT_NAME_FORMAT, lambda: check_account_name(name))
    raises_api_error(errors.ACCOUNT_NAME_FORMAT, lambda: check_creatable_name(name, INSTANCE_ID))


def test_the_reserved_names_are_the_contracts_plus_the_management_user() -> None:
    assert MANAGEMENT_USER == "rkvstore_mgmt"
    assert {
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
        "rkvstore_mgmt",
    } == RESERVED_NAMES


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_a_reserved_name_cannot_be_created(name: str) -> None:
    check_account_name(name)  # well formed: the refusal is Forbid, not Format
    raises_api_error(errors.ACCOUNT_NAME_FORBID, lambda: check_creatable_name(name, INSTANCE_ID))


@pytest.mark.parametrize("name", ["roots", "admin1", "my_redis", "sys_", "monitor_ro", "rkvstore"])
def test_a_name_that_only_contains_a_reserved_word_can_be_created(name: str) -> None:
    check_creatable_name(name, INSTANCE_ID)


@pytest.mark.parametrize("name", ["default", INSTANCE_ID])
def test_the_default_accounts_cannot_be_created(name: str) -> None:
    raises_api_error(errors.ACCOUNT_NAME_FORBID, lambda: check_creatable_name(name, INSTANCE_ID))


def test_another_instances_id_is_just_a_malformed_name() -> None:
    raises_api_error(
        errors.ACCOUNT_NAME_FORMAT, lambda: check_creatable_name(OTHER_INSTANCE_ID, INSTANCE_ID)
    )


def test_the_default_accounts_are_default_and_the_instance_id() -> None:
    assert is_default_account("default", INSTANCE_ID)
    assert is_default_account(INSTANCE_ID, INSTANCE_ID)
    assert not is_default_account(OTHER_INSTANCE_ID, INSTANCE_ID)
    assert not is_default_account("Default", INSTANCE_ID)
    assert not is_default_account(MANAGEMENT_USER, INSTANCE_ID)
    assert not is_default_account("app", INSTANCE_ID)


@pytest.mark.parametrize("name", ["default", INSTANCE_ID, "app", "root", MANAGEMENT_USER])
def test_the_default_accounts_and_well_formed_names_are_addressable(name: str) -> None:
    check_addressable_name(name, INSTANCE_ID)  # existence is the caller's question


@pytest.mark.parametrize("name", ["", "App", OTHER_INSTANCE_ID, "a" * 101])
def test_a_malformed_name_is_not_addressable(name: str) -> None:
    raises_api_error(errors.ACCOUNT_NAME_FORMAT, lambda: check_addressable_name(name, INSTANCE_ID))


@pytest.mark.parametrize("name", ["default", INSTANCE_ID, *sorted(RESERVED_NAMES)])
def test_default_and_reserved_accounts_cannot_be_deleted_or_regranted(name: str) -> None:
    raises_api_error(errors.ACCOUNT_NAME_FORBID, lambda: check_modifiable_name(name, INSTANCE_ID))


def test_a_custom_account_can_be_deleted_or_regranted_and_a_bad_name_is_format() -> None:
    check_modifiable_name("app", INSTANCE_ID)
    raises_api_error(errors.ACCOUNT_NAME_FORMAT, lambda: check_modifiable_name("App", INSTANCE_ID))


# --------------------------------------------------------------------------- descriptions


def bad_description(text: str) -> None:
    raises_api_error(errors.ACCOUNT_DESCRIPTION_FORMAT, lambda: check_description(text))


@pytest.mark.parametrize(
    "text",
    [
        "ab",
        "a" * 256,
        "中文",
        "中文描述_for-app",
        "a-b_c",
        "A1",
        "httpd_cache",  # starts with "http", not with a URL scheme
        "https_x",
        "\u4e00\u9fff",  # both ends of the CJK Unified Ideographs block
        "z\u4e00",
        "Order-Service_2024",
    ],
)
def test_a_well_formed_description_is_valid(text: str) -> None:
    check_description(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a",
        "中",
        "a" * 257,
        "中" * 257,
        "1abc",
        "_abc",
        "-abc",
        "http://x",
        "https://x",
        "HTTP://x",
        "a b",
        "ab ",
        "a.b",
        "a/b",
        "a:b",
        "a\tb",
        "ab\n",
        "éa",
        "aé",
        "\u3400a",  # CJK Extension A: not in the decided block
        "a\ua000",  # just past U+9FFF
        "\uff21b",  # full-width A
        "a\u0661",  # Arabic-Indic digit one
        "a\x00",
    ],
)
def test_a_malformed_description_is_invalid(text: str) -> None:
    bad_description(text)


# --------------------------------------------------------------------------- privileges


def test_the_privileges_and_the_default() -> None:
    assert PRIVILEGES == ("RoleReadOnly", "RoleReadWrite", "RoleRepl")
    assert accounts.DEFAULT_PRIVILEGE == "RoleReadWrite"


@pytest.mark.parametrize("privilege", PRIVILEGES)
def test_each_privilege_can_be_created_and_granted(privilege: str) -> None:
    check_privilege_for_create(privilege)
    check_privilege_for_grant(privilege)


@pytest.mark.parametrize(
    "privilege",
    [
        "",
        "Super",
        "RoleAdmin",
        "roleReadOnly",
        "RoleReadonly",
        "ROLEREADWRITE",
        " RoleRepl",
        "RoleRepl ",
        "read-only",
    ],
)
def test_an_unknown_privilege_is_malformed_on_create_and_format_on_grant(privilege: str) -> None:
    raises_api_error(
        errors.ACCOUNT_PRIVILEGE_MALFORMED, lambda: check_privilege_for_create(privilege)
    )
    raises_api_error(errors.ACCOUNT_PRIVILEGE_FORMAT, lambda: check_privilege_for_grant(privilege))
