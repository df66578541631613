"""The official SDKs against a live ``rkvstore serve``: answers and authentication errors.

Every test runs with three clients: the new SDK with V3 signing, the new SDK
with V1 signing (``signature_algorithm="v2"``), and the legacy SDK. Errors are
checked the way an application sees them: the SDK's own exception type, its
code, the api.md §2 message, the HTTP status and the RequestId.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from contextlib import AbstractContextManager

import pytest

from tests.api.sdk_clients import (
    LEGACY,
    NEW_V1,
    NEW_V3,
    REGION,
    SDK_KINDS,
    SdkCaller,
    SdkError,
    error_type,
    fix_nonce,
    read_error,
    shift_clock,
)
from tests.conftest import LiveServer, remember_secret

# tests/conftest.py's start_server leaves its server.out handle to the garbage
# collector; with filterwarnings=error that ResourceWarning fails the first test
# to set up live_server. Only that one warning is let through.

REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

# api.md §2
SIGNATURE_MISMATCH = (
    "Specified signature is not matched with our calculation. server string to sign is:"
)
NONCE_USED = "Specified signature nonce was used already."
TIMESTAMP_EXPIRED = "Specified time stamp or date value is expired."
ACCESS_KEY_NOT_FOUND = "Specified access key is not found."
ACTION_NOT_FOUND = "Specified api is not found, please check your url and method."
# What aliyunsdkcore substitutes for SignatureDoesNotMatch when the server's string
# to sign (after the ":") equals its own, i.e. when only the secret is wrong.
LEGACY_WRONG_SECRET = (
    "The AccessKeySecret is incorrect. Please check your AccessKeyId and AccessKeySecret."
)


def missing(name: str) -> str:
    return (
        f'The input parameter "{name}" that is mandatory for processing this request '
        "is not supplied."
    )


def invalid(name: str) -> str:
    return f'The specified parameter "{name}" is not valid.'


@pytest.fixture(params=SDK_KINDS)
def sdk(request: pytest.FixtureRequest, live_server: LiveServer) -> SdkCaller:
    return SdkCaller(
        request.param,
        live_server.endpoint,
        live_server.access_key_id,
        live_server.access_key_secret,
    )


def _with_key(sdk: SdkCaller, access_key_id: str, access_key_secret: str) -> SdkCaller:
    return SdkCaller(sdk.kind, sdk.endpoint, access_key_id, access_key_secret)


def check_error(
    sdk: SdkCaller,
    exc: BaseException,
    *,
    code: str,
    http_status: int,
    message: str,
    message_is_prefix: bool = False,
) -> SdkError:
    """The SDK's own exception, carrying the right code, message, status and RequestId."""
    assert isinstance(exc, error_type(sdk.kind)), f"{sdk.kind}: {type(exc)}"
    err = read_error(sdk.kind, exc)
    assert err.code == code, err
    assert err.http_status == http_status, err
    assert REQUEST_ID.match(err.request_id), err
    if sdk.is_legacy:
        # ServerException(code, message, http_status, request_id): the server's Message as is.
        if message_is_prefix:
            assert err.message.startswith(message), err
        else:
            assert err.message == message, err
        return err
    # The new SDK: "code: <status>, <Message> request id: <RequestId>", the body in data.
    assert err.body is not None
    assert err.message.startswith(f"code: {http_status}, {message}"), err
    assert err.message.endswith(f" request id: {err.request_id}"), err
    assert err.body["RequestId"] == err.request_id
    assert err.body["Code"] == code
    if message_is_prefix:
        assert err.body["Message"].startswith(message)
    else:
        assert err.body["Message"] == message
    assert err.body["HostId"]
    return err


def _raises(sdk: SdkCaller) -> AbstractContextManager[pytest.ExceptionInfo[Exception]]:
    return pytest.raises(error_type(sdk.kind))


# --------------------------------------------------------------------------- answers


def test_describe_regions(sdk: SdkCaller) -> None:
    body = sdk.describe_regions()
    assert REQUEST_ID.match(body["RequestId"])
    regions = body["RegionIds"]["KVStoreRegion"]
    assert [r["RegionId"] for r in regions] == [REGION]
    region = regions[0]
    zones = region["ZoneIdList"]["ZoneId"]
    assert zones, "the region lists no zone"
    assert all(z.startswith(REGION + "-") for z in zones)
    assert region["ZoneIds"] == ",".join(zones)
    assert region["LocalName"]
    assert region["RegionEndpoint"]


@pytest.fixture(params=[NEW_V3, NEW_V1])
def new_sdk(request: pytest.FixtureRequest, live_server: LiveServer) -> SdkCaller:
    """Only the new SDK: it fills typed models (the legacy SDK returns raw bytes)."""
    return SdkCaller(
        request.param,
        live_server.endpoint,
        live_server.access_key_id,
        live_server.access_key_secret,
    )


def test_describe_regions_fills_the_new_sdk_model(new_sdk: SdkCaller) -> None:
    body = new_sdk.describe_regions_model()
    assert REQUEST_ID.match(body.request_id)
    region = body.region_ids.kvstore_region[0]
    assert region.region_id == REGION
    assert region.zone_id_list.zone_id
    assert region.zone_ids == ",".join(region.zone_id_list.zone_id)
    assert len(body.region_ids.kvstore_region) == 1


def test_describe_zones(sdk: SdkCaller) -> None:
    region_zones = sdk.describe_regions()["RegionIds"]["KVStoreRegion"][0]["ZoneIdList"]["ZoneId"]
    body = sdk.describe_zones(REGION)
    assert REQUEST_ID.match(body["RequestId"])
    zones = body["Zones"]["KVStoreZone"]
    assert [z["ZoneId"] for z in zones] == region_zones
    for zone in zones:
        assert zone["RegionId"] == REGION
        assert zone["ZoneName"]
    if not sdk.is_legacy:
        model = sdk.describe_zones_model(REGION)
        assert [z.zone_id for z in model.zones.kvstore_zone] == region_zones
        assert {z.region_id for z in model.zones.kvstore_zone} == {REGION}


def test_describe_zones_of_another_region_is_invalid(sdk: SdkCaller) -> None:
    with _raises(sdk) as info:
        sdk.describe_zones("us-west-1")
    check_error(
        sdk, info.value, code="InvalidParameter", http_status=400, message=invalid("RegionId")
    )


# --------------------------------------------------------------------------- authentication


def test_wrong_secret_is_signature_does_not_match(sdk: SdkCaller) -> None:
    wrong = _with_key(sdk, sdk.access_key_id, remember_secret("Wr0ng" + secrets.token_urlsafe(18)))
    with _raises(sdk) as info:
        wrong.describe_regions()
    if sdk.is_legacy:
        # aliyunsdkcore compares the server's string to sign (after the ":") with its
        # own and, when they are equal, reports the wrong secret as such: so this
        # also proves the server echoed exactly the string the SDK signed.
        check_error(
            sdk,
            info.value,
            code="InvalidAccessKeySecret",
            http_status=400,
            message=LEGACY_WRONG_SECRET,
        )
        return
    err = check_error(
        sdk,
        info.value,
        code="SignatureDoesNotMatch",
        http_status=400,
        message=SIGNATURE_MISMATCH,
        message_is_prefix=True,
    )
    assert err.body is not None
    string_to_sign = err.body["Message"][len(SIGNATURE_MISMATCH) :]
    if sdk.kind == NEW_V3:
        assert re.fullmatch(r"ACS3-HMAC-SHA256\n[0-9a-f]{64}", string_to_sign), string_to_sign
    else:
        assert sdk.kind == NEW_V1
        assert string_to_sign.startswith("POST&%2F&"), string_to_sign
        assert "Action%3DDescribeRegions" in string_to_sign
        assert f"AccessKeyId%3D{sdk.access_key_id}" in string_to_sign
        assert "SignatureMethod%3DHMAC-SHA1" in string_to_sign


def test_signature_mismatch_message_masks_secret_parameters(sdk: SdkCaller) -> None:
    password = remember_secret("Pw_" + secrets.token_hex(10) + "!A")
    wrong = _with_key(sdk, sdk.access_key_id, remember_secret("Wr0ng" + secrets.token_urlsafe(18)))
    with _raises(sdk) as info:
        wrong.call("DescribeRegions", {"Password": password})
    # The legacy SDK keeps SignatureDoesNotMatch here: the masked string to sign
    # differs from the one it signed.
    err = check_error(
        sdk,
        info.value,
        code="SignatureDoesNotMatch",
        http_status=400,
        message=SIGNATURE_MISMATCH,
        message_is_prefix=True,
    )
    assert password not in err.message
    assert err.body is None or password not in str(err.body)
    if sdk.kind != NEW_V3:  # V1's string to sign holds the parameters, the secret masked
        masked = r"Password%3D(\*{6}|(%252A){6})(%26|$)"  # ****** as is, or percent-encoded
        assert re.search(masked, err.message), err.message


def test_unknown_access_key_id(sdk: SdkCaller) -> None:
    stranger = _with_key(sdk, "LTAInosuch" + secrets.token_hex(6), sdk.access_key_secret)
    with _raises(sdk) as info:
        stranger.describe_regions()
    check_error(
        sdk,
        info.value,
        code="InvalidAccessKeyId.NotFound",
        http_status=404,
        message=ACCESS_KEY_NOT_FOUND,
    )


def test_replayed_nonce(sdk: SdkCaller, monkeypatch: pytest.MonkeyPatch) -> None:
    fix_nonce(monkeypatch, sdk.kind, f"replay-{sdk.kind}-{secrets.token_hex(8)}")
    assert sdk.describe_regions()["RegionIds"]
    with _raises(sdk) as info:
        sdk.describe_regions()
    check_error(sdk, info.value, code="SignatureNonceUsed", http_status=400, message=NONCE_USED)


def test_same_nonce_with_another_action_is_still_a_replay(
    sdk: SdkCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    fix_nonce(monkeypatch, sdk.kind, f"replay2-{sdk.kind}-{secrets.token_hex(8)}")
    assert sdk.describe_zones(REGION)["Zones"]
    with _raises(sdk) as info:
        sdk.describe_regions()
    check_error(sdk, info.value, code="SignatureNonceUsed", http_status=400, message=NONCE_USED)


@pytest.mark.parametrize("minutes", [-16, 16], ids=["16-min-old", "16-min-ahead"])
def test_timestamp_outside_window(
    sdk: SdkCaller, monkeypatch: pytest.MonkeyPatch, minutes: int
) -> None:
    shift_clock(monkeypatch, sdk.kind, dt.timedelta(minutes=minutes))
    with _raises(sdk) as info:
        sdk.describe_regions()
    check_error(
        sdk,
        info.value,
        code="InvalidTimeStamp.Expired",
        http_status=400,
        message=TIMESTAMP_EXPIRED,
    )


def test_timestamp_inside_window_is_accepted(
    sdk: SdkCaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    shift_clock(monkeypatch, sdk.kind, dt.timedelta(minutes=-14))
    assert sdk.describe_regions()["RegionIds"]


def test_unknown_action(sdk: SdkCaller) -> None:
    with _raises(sdk) as info:
        sdk.call("NoSuchAction")
    check_error(
        sdk, info.value, code="InvalidAction.NotFound", http_status=404, message=ACTION_NOT_FOUND
    )


def test_missing_required_parameter(sdk: SdkCaller) -> None:
    # The legacy SDK fills an absent RegionId with its client's region, so it
    # sends the parameter empty, which counts as missing (api.md §2).
    params = {"RegionId": ""} if sdk.kind == LEGACY else {}
    with _raises(sdk) as info:
        sdk.call("DescribeZones", params)
    check_error(
        sdk, info.value, code="MissingParameter", http_status=400, message=missing("RegionId")
    )


def test_call_by_name_succeeds(sdk: SdkCaller) -> None:
    body = sdk.call("DescribeZones", {"RegionId": REGION})
    assert REQUEST_ID.match(body["RequestId"])
    assert {z["RegionId"] for z in body["Zones"]["KVStoreZone"]} == {REGION}
