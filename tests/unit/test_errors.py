"""The error catalogue holds api.md's codes, HTTP statuses and messages, word for word."""

from __future__ import annotations

import pytest

from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.products import CATALOGUE

# api.md §2 "Common errors", copied verbatim: (HTTP, code, message).
COMMON_ERRORS: list[tuple[int, str, str]] = [
    (
        400,
        "MissingParameter",
        'The input parameter "<Name>" that is mandatory for processing this request is not '
        "supplied.",
    ),
    (400, "InvalidParameter", 'The specified parameter "<Name>" is not valid.'),
    (400, "MissingSignature", "The request signature does not conform to Aliyun standards."),
    (400, "IncompleteSignature", "The request signature does not conform to Aliyun standards."),
    (400, "SignatureNonceUsed", "Specified signature nonce was used already."),
    (400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."),
    (400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."),
    (404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."),
    (403, "Forbidden.AccessKeyDisabled", "The Access Key is disabled."),
    (
        403,
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource, or this API doesn't "
        "support RAM.",
    ),
    (
        404,
        "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method.",
    ),
    (400, "InvalidVersion", "Specified parameter Version is not valid."),
    (404, "InvalidInstanceId.NotFound", "The specified instance is not found."),
    (400, "IncorrectDBInstanceState", "Current DB instance state does not support this operation."),
    (400, "TaskExists", "Specified task have existed."),
    (400, "Throttling.User", "Request was denied due to user flow control."),
    (503, "ServiceUnavailable", "The request has failed due to a temporary failure of the server."),
    (500, "InternalError", "The request processing has failed due to some unknown error."),
]
SIGNATURE_MISMATCH_PREFIX = (
    "Specified signature is not matched with our calculation. server string to sign is:"
)

# api.md §3 and §4: the action errors whose message api.md spells out.
ACTION_ERRORS: list[tuple[int, str, str]] = [
    (400, "InvalidEngineVersion.Format", "Current EngineVersion does not support operations."),
    (400, "InvalidAccountName.Format", "Specified AccountName is not valid."),
    (400, "InvalidAccountName.Forbid", "Specified AccountName is a keyword."),
    (400, "InvalidAccountPassword.Format", "Specified AccountPassword is not valid."),
    (403, "AccountLimitExceeded", "Exceeding the allowed amount of account."),
    (400, "InvalidAccountPassword.NotMatch", "The old password is incorrect."),
    (400, "DryRunOperation", "Request validation has been passed with DryRun flag set."),
]
# api.md names these with a status but no message.
ACTION_ERROR_STATUSES: list[tuple[int, str]] = [
    (404, "InvalidAccountName.NotFound"),
    (400, "InvalidAccountName.Duplicate"),
    (400, "InvalidAccountDescription.Format"),
    (400, "InvalidAccountPrivilege.Malformed"),
    (400, "InvalidAccountPrivilege.Format"),
]


def _spec(code: str) -> ErrorSpec:
    assert code in CATALOGUE.by_code, f"{code} is not in the catalogue"
    spec = CATALOGUE.by_code[code]
    assert spec.code == code
    return spec


def _rendered(spec: ErrorSpec, api_md_message: str) -> tuple[str, str]:
    """The message ``ApiError`` builds, and what api.md says it is, for a sample name."""
    if "<Name>" in api_md_message:
        return ApiError(spec, name="PageSize").message, api_md_message.replace("<Name>", "PageSize")
    return ApiError(spec).message, api_md_message


@pytest.mark.parametrize(
    ("status", "code", "message"), COMMON_ERRORS, ids=[c for _, c, _ in COMMON_ERRORS]
)
def test_common_error(status: int, code: str, message: str) -> None:
    spec = _spec(code)
    assert spec.http_status == status
    built, expected = _rendered(spec, message)
    assert built == expected
    err = ApiError(spec, name="PageSize") if "<Name>" in message else ApiError(spec)
    assert (err.code, err.http_status) == (code, status)
    assert str(err) == f"{code}: {expected}"


def test_signature_does_not_match() -> None:
    spec = _spec("SignatureDoesNotMatch")
    assert spec.http_status == 400
    assert spec.message.startswith(SIGNATURE_MISMATCH_PREFIX)
    err = ApiError(spec, sts="POST&%2F&A%3D1")
    assert err.message == SIGNATURE_MISMATCH_PREFIX + "POST&%2F&A%3D1"
    # the legacy SDK splits the message at ':' and crashes without one
    assert ":" in err.message
    assert (err.code, err.http_status) == ("SignatureDoesNotMatch", 400)


@pytest.mark.parametrize(
    ("status", "code", "message"), ACTION_ERRORS, ids=[c for _, c, _ in ACTION_ERRORS]
)
def test_action_error(status: int, code: str, message: str) -> None:
    spec = _spec(code)
    assert (spec.http_status, spec.message) == (status, message)
    assert ApiError(spec).message == message


@pytest.mark.parametrize(
    ("status", "code"), ACTION_ERROR_STATUSES, ids=[c for _, c in ACTION_ERROR_STATUSES]
)
def test_action_error_status(status: int, code: str) -> None:
    spec = _spec(code)
    assert spec.http_status == status
    assert spec.message


def test_no_error_answers_with_a_redirect_or_success() -> None:
    for spec in CATALOGUE.by_code.values():
        assert 400 <= spec.http_status <= 599, spec
