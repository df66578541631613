"""From raw bytes to typed parameters: ``decode_pairs``, ``parse_params``, ``merge_pairs``."""

from __future__ import annotations

from typing import Any

import pytest

from rkvstore.api.params import decode_pairs, merge_pairs
from rkvstore.config import Settings
from rkvstore.errors import ApiError
from rkvstore.secret import MASK, Secret
from rkvstore.services.params import Param, ParamSpec, parse_params

MAX_BYTES = 64 * 1024
MAX_PARAMETERS = 200
LIMITS: dict[str, int] = {"max_bytes": MAX_BYTES, "max_parameters": MAX_PARAMETERS}

ENCODING_MESSAGE = "The request is not valid UTF-8 URL-encoded text."


def _missing(name: str) -> str:
    return (
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied."
    )


def _invalid(name: str) -> str:
    return f'The specified parameter "{name}" is not valid.'


def assert_api_error(err: ApiError, code: str, status: int, message: str) -> None:
    assert (err.code, err.http_status, err.message) == (code, status, message)
    assert err.spec.code == code
    assert err.spec.http_status == status


def test_limits_are_the_settings_defaults() -> None:
    assert Settings.model_fields["max_request_bytes"].default == MAX_BYTES
    assert Settings.model_fields["max_parameters"].default == MAX_PARAMETERS


# --------------------------------------------------------------------------- decode_pairs


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(b"", [], id="empty"),
        pytest.param(b"A=1", [("A", "1")], id="one"),
        pytest.param(
            b"SignatureType=&A=1&B",
            [("SignatureType", ""), ("A", "1"), ("B", "")],
            id="blank-values-kept",
        ),
        pytest.param(b"a=x+y&b=x%20y", [("a", "x y"), ("b", "x y")], id="plus-and-%20-are-space"),
        pytest.param(b"a=%2B%26%3D%25", [("a", "+&=%")], id="escaped-specials"),
        pytest.param(b"a=%E6%B5%8B%E8%AF%95", [("a", "测试")], id="utf8-escapes"),
        pytest.param("a=测试".encode(), [("a", "测试")], id="raw-utf8"),
        pytest.param(b"a=%e6%b5%8b", [("a", "测")], id="lower-case-escapes"),
        pytest.param(b"b=2&a=1&b=3", [("b", "2"), ("a", "1"), ("b", "3")], id="order-and-repeats"),
        pytest.param(b"a=1;b=2", [("a", "1;b=2")], id="semicolon-is-no-separator"),
        pytest.param(b"a=b=c", [("a", "b=c")], id="first-equals-splits"),
        pytest.param(b"Tag.1.Key=k", [("Tag.1.Key", "k")], id="flattened-list"),
        pytest.param(b"a=~*", [("a", "~*")], id="unreserved"),
    ],
)
def test_decode_pairs(raw: bytes, expected: list[tuple[str, str]]) -> None:
    assert decode_pairs(raw, **LIMITS) == expected


def test_decode_pairs_size_limit() -> None:
    at_limit = b"a=" + b"x" * (MAX_BYTES - 2)
    assert decode_pairs(at_limit, **LIMITS) == [("a", "x" * (MAX_BYTES - 2))]
    for raw in (at_limit + b"x", b"a=" + b"x" * 100_000, b"\xff" * (MAX_BYTES + 1)):
        with pytest.raises(ApiError) as info:
            decode_pairs(raw, **LIMITS)
        assert_api_error(
            info.value,
            "RequestEntityTooLarge",
            413,
            "The query string or body is larger than 65536 bytes.",
        )


def test_decode_pairs_parameter_limit() -> None:
    at_limit = "&".join(f"P{i}={i}" for i in range(MAX_PARAMETERS)).encode()
    assert len(decode_pairs(at_limit, **LIMITS)) == MAX_PARAMETERS
    for raw in (at_limit + b"&X=1", b"&".join([b"A="] * 1000)):
        with pytest.raises(ApiError) as info:
            decode_pairs(raw, **LIMITS)
        assert_api_error(
            info.value,
            "InvalidParameter.TooMany",
            400,
            "The request has more than 200 parameters.",
        )


def test_decode_pairs_limits_are_parameters() -> None:
    with pytest.raises(ApiError) as info:
        decode_pairs(b"a=1&b=2&c=3", max_bytes=100, max_parameters=2)
    assert_api_error(
        info.value, "InvalidParameter.TooMany", 400, "The request has more than 2 parameters."
    )
    with pytest.raises(ApiError) as info:
        decode_pairs(b"a=12345", max_bytes=6, max_parameters=2)
    assert_api_error(
        info.value,
        "RequestEntityTooLarge",
        413,
        "The query string or body is larger than 6 bytes.",
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"a=%FF", id="escape-ff"),
        pytest.param(b"%FF=1", id="escape-ff-in-key"),
        pytest.param(b"a=%C3%28", id="escape-bad-continuation"),
        pytest.param(b"a=%C3", id="escape-truncated-sequence"),
        pytest.param(b"a=%C0%AF", id="escape-overlong"),
        pytest.param(b"a=%ED%A0%80", id="escape-surrogate"),
        pytest.param(b"a=%F4%90%80%80", id="escape-beyond-unicode"),
        pytest.param(b"a=\xff", id="raw-ff"),
        pytest.param(b"\xc3=1", id="raw-truncated-in-key"),
        pytest.param(b"a=\xed\xa0\x80", id="raw-surrogate"),
        pytest.param(b"a=%00", id="escaped-nul-in-value"),
        pytest.param(b"a=x\x00y", id="raw-nul-in-value"),
        pytest.param(b"%00=1", id="escaped-nul-in-key"),
        pytest.param(b"a\x00=1", id="raw-nul-in-key"),
        pytest.param(b"a%01=1", id="control-in-key"),
        pytest.param(b"a%0A=1", id="newline-in-key"),
        pytest.param(b"a%7F=1", id="del-in-key"),
    ],
)
def test_decode_pairs_rejects_bad_encoding(raw: bytes) -> None:
    with pytest.raises(ApiError) as info:
        decode_pairs(raw, **LIMITS)
    assert_api_error(info.value, "InvalidParameter.Encoding", 400, ENCODING_MESSAGE)


# --------------------------------------------------------------------------- parse_params

PRIVILEGES = ("RoleReadOnly", "RoleReadWrite", "RoleRepl")
SPEC = ParamSpec(
    (
        Param("InstanceId", required=True),
        Param("AccountPassword", type="secret", required=True),
        Param("PageSize", type="int", default=30, min_value=1, max_value=100),
        Param("DryRun", type="bool", default=False),
        Param("AccountPrivilege", type="enum", choices=PRIVILEGES, default="RoleReadWrite"),
        Param("AccountDescription", max_length=256),
    )
)
REQUIRED = {"InstanceId": "r-1", "AccountPassword": "Secret_pass_1"}


def _parse(**extra: str) -> dict[str, Any]:
    return parse_params(SPEC, {**REQUIRED, **extra})


def test_parse_params_defaults_and_unknown_parameters() -> None:
    parsed = parse_params(SPEC, {**REQUIRED, "OwnerId": "1", "SourceBiz": "SDK", "RegionId": "x"})
    assert list(parsed) == SPEC.names()
    assert parsed["InstanceId"] == "r-1"
    assert parsed["PageSize"] == 30
    assert parsed["DryRun"] is False
    assert parsed["AccountPrivilege"] == "RoleReadWrite"
    assert parsed["AccountDescription"] is None


def test_parse_params_optional_empty_is_absent() -> None:
    parsed = _parse(PageSize="", DryRun="", AccountPrivilege="", AccountDescription="")
    assert parsed["PageSize"] == 30
    assert parsed["DryRun"] is False
    assert parsed["AccountPrivilege"] == "RoleReadWrite"
    assert parsed["AccountDescription"] is None


@pytest.mark.parametrize("name", ["InstanceId", "AccountPassword"])
@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
def test_parse_params_missing_required(name: str, empty: bool) -> None:
    values = dict(REQUIRED)
    if empty:
        values[name] = ""
    else:
        del values[name]
    with pytest.raises(ApiError) as info:
        parse_params(SPEC, values)
    assert_api_error(info.value, "MissingParameter", 400, _missing(name))


def test_parse_params_missing_message_literal() -> None:
    with pytest.raises(ApiError) as info:
        parse_params(SPEC, {"AccountPassword": "x"})
    assert info.value.message == (
        'The input parameter "InstanceId" that is mandatory for processing this request '
        "is not supplied."
    )


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("30", 30), ("100", 100), ("007", 7)])
def test_parse_params_int(raw: str, expected: int) -> None:
    value = _parse(PageSize=raw)["PageSize"]
    assert value == expected
    assert type(value) is int


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "1.5",
        "1e2",
        "0x10",
        " 1",
        "1 ",
        "+1",
        "--1",
        "1,000",
        "ten",
        "9" * 19,
        "0",
        "101",
        "-1",
        "-100",
        "999999999999999999",
    ],
)
def test_parse_params_bad_int(raw: str) -> None:
    with pytest.raises(ApiError) as info:
        _parse(PageSize=raw)
    assert_api_error(info.value, "InvalidParameter", 400, _invalid("PageSize"))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("tRuE", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
    ],
)
def test_parse_params_bool(raw: str, expected: bool) -> None:
    assert _parse(DryRun=raw)["DryRun"] is expected


@pytest.mark.parametrize("raw", ["yes", "no", "1", "0", "t", "f", " true", "true ", "truee"])
def test_parse_params_bad_bool(raw: str) -> None:
    with pytest.raises(ApiError) as info:
        _parse(DryRun=raw)
    assert_api_error(info.value, "InvalidParameter", 400, _invalid("DryRun"))


@pytest.mark.parametrize("raw", PRIVILEGES)
def test_parse_params_enum(raw: str) -> None:
    assert _parse(AccountPrivilege=raw)["AccountPrivilege"] == raw


@pytest.mark.parametrize("raw", ["rolereadwrite", "ROLEREADONLY", "RoleReadWrite ", "Super", "*"])
def test_parse_params_bad_enum(raw: str) -> None:
    with pytest.raises(ApiError) as info:
        _parse(AccountPrivilege=raw)
    assert_api_error(info.value, "InvalidParameter", 400, _invalid("AccountPrivilege"))


def test_parse_params_max_length() -> None:
    assert _parse(AccountDescription="d" * 256)["AccountDescription"] == "d" * 256
    with pytest.raises(ApiError) as info:
        _parse(AccountDescription="d" * 257)
    assert_api_error(info.value, "InvalidParameter", 400, _invalid("AccountDescription"))
    # By default a value may be as long as a request may be: a field's own rule
    # (with its own error code) is what refuses it, not the parser.
    long_secret = "S" * (64 * 1024)
    value = parse_params(
        ParamSpec((Param("AccountPassword", "secret"),)), {"AccountPassword": long_secret}
    )
    assert len(value["AccountPassword"]) == 64 * 1024
    too_long = "S" * 4097
    with pytest.raises(ApiError) as info:
        parse_params(
            ParamSpec((Param("AccountPassword", "secret", max_length=4096),)),
            {"AccountPassword": too_long},
        )
    assert_api_error(info.value, "InvalidParameter", 400, _invalid("AccountPassword"))
    assert too_long not in str(info.value)


def test_parse_params_secret() -> None:
    plaintext = "Secret_pass_1"
    value = _parse()["AccountPassword"]
    assert isinstance(value, Secret)
    assert value.reveal() == plaintext
    assert str(value) == MASK == "******"
    assert f"{value}" == MASK
    assert MASK in repr(value)
    assert plaintext not in repr(value)
    assert plaintext not in repr(_parse())
    assert plaintext not in str(_parse())


def test_secret_parameter_must_be_declared_secret() -> None:
    for name in (
        "AccountPassword",
        "NewAccountPassword",
        "OldAccountPassword",
        "Password",
        "AccessKeySecret",
    ):
        with pytest.raises(ValueError, match=f"{name} must be declared type='secret'"):
            Param(name)
        assert Param(name, type="secret").type == "secret"


# --------------------------------------------------------------------------- merge_pairs


def test_merge_pairs_empty() -> None:
    assert merge_pairs() == {}
    assert merge_pairs([], []) == {}


@pytest.mark.parametrize(
    "groups",
    [
        [[("a", "1"), ("b", "2"), ("a", "3")]],  # twice in one group
        [[("a", "q")], [("a", "f")]],  # once in the query, once in the body
        [[("a", "1")], [], [("b", "2"), ("a", "3")]],
    ],
)
def test_a_repeated_name_is_refused(groups: list[list[tuple[str, str]]]) -> None:
    """Issue 9: the signature covers every copy; no two readers may see different values."""
    with pytest.raises(ApiError) as info:
        merge_pairs(*groups)
    err = info.value
    assert (err.http_status, err.code, err.message) == (
        400,
        "InvalidParameter.Duplicate",
        'The parameter "a" is given more than once.',
    )


def test_groups_merge_when_no_name_repeats() -> None:
    assert merge_pairs([("a", "q"), ("b", "q")], [("c", "f")]) == {"a": "q", "b": "q", "c": "f"}


def test_merge_pairs_keeps_blank_values() -> None:
    assert merge_pairs([("SignatureType", "")]) == {"SignatureType": ""}
    assert merge_pairs([("a", "q")], [("b", "")]) == {"a": "q", "b": ""}
