"""Serialising answers: JSON by default, XML on ``Format=XML``, errors always JSON."""

from __future__ import annotations

import json
import re
from typing import Any
from xml.etree import ElementTree

import pytest

from rkvstore import errors
from rkvstore.api import render
from rkvstore.errors import ApiError

REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
ERROR_KEYS = {"RequestId", "HostId", "Code", "Message", "Recommend"}

DESCRIBE_ACCOUNTS: dict[str, Any] = {
    "PageNumber": 1,
    "PageSize": 30,
    "TotalCount": 2,
    "Accounts": {
        "Account": [
            {
                "AccountName": "demo",
                "AccountDescription": "测试 <&> \"'",
                "AccountStatus": "Available",
                "AccountType": "Normal",
                "InstanceId": "r-1",
                "DatabasePrivileges": {
                    "DatabasePrivilege": [{"AccountPrivilege": "RoleReadWrite"}]
                },
            },
            {
                "AccountName": "other",
                "AccountDescription": None,
                "AccountStatus": "Unavailable",
                "AccountType": "Normal",
                "InstanceId": "r-1",
                "DatabasePrivileges": {
                    "DatabasePrivilege": [
                        {"AccountPrivilege": "RoleReadOnly"},
                        {"AccountPrivilege": "RoleRepl"},
                    ]
                },
            },
        ]
    },
    "Ids": {"Id": ["a", "b", "c"]},
    "Single": {"Item": [{"Name": "only"}]},
    "Flag": True,
    "Off": False,
    "Ratio": 0.5,
}


def _parse_xml(body: bytes) -> ElementTree.Element:
    """Our own output, not untrusted input: the standard library parser is fine here."""
    return ElementTree.fromstring(body)  # noqa: S314


def _json(response: Any) -> dict[str, Any]:
    data = json.loads(response.body.decode("utf-8"))
    assert isinstance(data, dict)
    return data


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def assert_xml_matches(element: ElementTree.Element, value: Any, where: str) -> None:
    """``element`` holds exactly ``value``, lists as repeated elements."""
    if isinstance(value, dict):
        assert (element.text or "").strip() == "", where
        expected_tags = [k for k, v in value.items() if not (isinstance(v, list) and not v)]
        assert sorted({child.tag for child in element}) == sorted(expected_tags), where
        for key, item in value.items():
            found = element.findall(key)
            if isinstance(item, list):
                assert len(found) == len(item), f"{where}/{key}"
                for i, (child, sub) in enumerate(zip(found, item, strict=True)):
                    assert_xml_matches(child, sub, f"{where}/{key}[{i}]")
            else:
                assert len(found) == 1, f"{where}/{key}"
                assert_xml_matches(found[0], item, f"{where}/{key}")
    else:
        assert len(element) == 0, where
        expected = "" if value is None else _scalar(value)
        assert (element.text or "") == expected, where


def test_new_request_id_is_an_upper_case_uuid() -> None:
    ids = {render.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for request_id in ids:
        assert REQUEST_ID.match(request_id), request_id


@pytest.mark.parametrize("fmt", ["JSON", "json", "", "yaml", "XMLX"])
def test_success_json(fmt: str) -> None:
    request_id = render.new_request_id()
    response = render.success("DescribeAccounts", request_id, DESCRIBE_ACCOUNTS, fmt)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    assert response.headers["x-acs-request-id"] == request_id
    assert _json(response) == {"RequestId": request_id, **DESCRIBE_ACCOUNTS}
    assert "测试".encode() in response.body  # UTF-8, not \u escapes


def test_success_json_empty_body_has_request_id() -> None:
    request_id = render.new_request_id()
    response = render.success("ResetAccountPassword", request_id, {}, "JSON")
    assert _json(response) == {"RequestId": request_id}
    assert REQUEST_ID.match(_json(response)["RequestId"])


@pytest.mark.parametrize("fmt", ["XML", "xml", "Xml"])
def test_success_xml(fmt: str) -> None:
    request_id = render.new_request_id()
    response = render.success("DescribeAccounts", request_id, DESCRIBE_ACCOUNTS, fmt)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml;charset=utf-8"
    assert response.headers["x-acs-request-id"] == request_id
    assert response.body.startswith(b"<?xml")
    root = _parse_xml(response.body)
    assert root.tag == "DescribeAccountsResponse"
    assert root.findtext("RequestId") == request_id
    assert REQUEST_ID.match(root.findtext("RequestId") or "")
    # the same content as the JSON answer
    as_json = _json(render.success("DescribeAccounts", request_id, DESCRIBE_ACCOUNTS, "JSON"))
    assert_xml_matches(root, as_json, root.tag)
    accounts = root.findall("Accounts/Account")
    assert [a.findtext("AccountName") for a in accounts] == ["demo", "other"]
    assert accounts[0].findtext("AccountDescription") == "测试 <&> \"'"
    privileges = accounts[1].findall("DatabasePrivileges/DatabasePrivilege/AccountPrivilege")
    assert [p.text for p in privileges] == ["RoleReadOnly", "RoleRepl"]
    assert [e.text for e in root.findall("Ids/Id")] == ["a", "b", "c"]
    assert root.findtext("Flag") == "true"
    assert root.findtext("Off") == "false"


def test_success_xml_empty_body() -> None:
    request_id = render.new_request_id()
    response = render.success("ResetAccountPassword", request_id, {}, "XML")
    root = _parse_xml(response.body)
    assert root.tag == "ResetAccountPasswordResponse"
    assert [child.tag for child in root] == ["RequestId"]
    assert root.findtext("RequestId") == request_id


def _error_body(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json;charset=utf-8"
    body = _json(response)
    assert REQUEST_ID.match(body["RequestId"])
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    assert isinstance(body["HostId"], str)
    assert body["HostId"]
    assert isinstance(body["Recommend"], str)
    return body


@pytest.mark.parametrize(
    ("err", "status", "code", "message"),
    [
        pytest.param(
            ApiError(errors.MISSING_PARAMETER, name="InstanceId"),
            400,
            "MissingParameter",
            'The input parameter "InstanceId" that is mandatory for processing this request '
            "is not supplied.",
            id="400",
        ),
        pytest.param(
            ApiError(errors.ACCESS_KEY_NOT_FOUND),
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
            id="404",
        ),
        pytest.param(
            ApiError(errors.INTERNAL_ERROR),
            500,
            "InternalError",
            "The request processing has failed due to some unknown error.",
            id="500",
        ),
        pytest.param(
            ApiError(errors.SERVICE_UNAVAILABLE),
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
            id="503",
        ),
    ],
)
def test_error(err: ApiError, status: int, code: str, message: str) -> None:
    request_id = render.new_request_id()
    response = render.error(request_id, err)
    assert response.status_code == status
    body = _error_body(response)
    assert set(body) == ERROR_KEYS
    assert body["RequestId"] == request_id
    assert (body["Code"], body["Message"]) == (code, message)
    assert "x-acs-retry-after" not in response.headers


def test_error_passes_extra_headers_through() -> None:
    request_id = render.new_request_id()
    err = ApiError(errors.THROTTLING_USER, headers={"x-acs-retry-after": "1500"})
    response = render.error(request_id, err)
    assert response.status_code == 400
    assert response.headers["x-acs-retry-after"] == "1500"
    assert response.headers["x-acs-request-id"] == request_id
    body = _error_body(response)
    assert set(body) == ERROR_KEYS
    assert (body["Code"], body["Message"]) == (
        "Throttling.User",
        "Request was denied due to user flow control.",
    )


def test_error_access_denied_detail() -> None:
    detail = {
        "AuthAction": "kvstore:ResetAccountPassword",
        "AuthPrincipalType": "SubUser",
        "AuthPrincipalDisplayName": "alice",
        "AuthPrincipalOwnerId": "1234567890123456",
        "NoPermissionType": "ImplicitDeny",
        "PolicyType": "AccountLevelIdentityBasedPolicy",
    }
    request_id = render.new_request_id()
    response = render.error(request_id, ApiError(errors.FORBIDDEN_RAM, detail=detail))
    assert response.status_code == 403
    body = _error_body(response)
    assert set(body) == ERROR_KEYS | {"AccessDeniedDetail"}
    assert body["AccessDeniedDetail"] == detail
    assert (body["Code"], body["Message"]) == (
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource, or this API doesn't "
        "support RAM.",
    )


def test_error_message_keeps_non_ascii_and_colon() -> None:
    err = ApiError(errors.SIGNATURE_DOES_NOT_MATCH, sts="POST&%2F&A%3D测")
    response = render.error(render.new_request_id(), err)
    body = _error_body(response)
    assert body["Code"] == "SignatureDoesNotMatch"
    assert body["Message"] == (
        "Specified signature is not matched with our calculation. "
        "server string to sign is:POST&%2F&A%3D测"
    )


def test_xml_answer_with_control_characters_still_parses() -> None:
    """A value may hold characters XML 1.0 cannot carry; the answer must stay XML."""
    response = render.success(
        "DescribeAccounts", "R", {"AccountDescription": "a\x01b\x1fc\td"}, "XML"
    )
    root = ElementTree.fromstring(response.body)  # noqa: S314 - our own answer
    assert root.findtext("AccountDescription") == "a\ufffdb\ufffdc\td"
