"""The official SDKs, pointed at a local rkvstore: client factories and a uniform face.

Not a test module. Three clients are built here, each as an application would
build it (wire-protocol.md, "Pointing the SDKs at rkvstore"):

- ``new-v3``: alibabacloud-r-kvstore20150101 on tea-openapi, V3 signing (its default);
- ``new-v1``: the same with ``signature_algorithm="v2"``, which signs with V1 (HMAC-SHA1);
- ``legacy``: aliyun-python-sdk-core's ``AcsClient`` with aliyun-python-sdk-r-kvstore
  requests (always V1), the endpoint set per request.

``SdkCaller`` gives the three one face for the tests (regions, zones, any action by
name), while every error stays the SDK's own exception type. ``fix_nonce`` and
``shift_clock`` patch the *SDK's* nonce and timestamp helpers (never the server),
so that a test can replay a nonce or send an old timestamp through a real client.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException as NewClientException
from alibabacloud_tea_openapi.exceptions import ThrottlingException
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils as OpenApiUtils
from aliyunsdkcore.acs_exception.exceptions import ServerException as LegacyServerException
from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.http import protocol_type
from aliyunsdkcore.request import AcsRequest, CommonRequest
from aliyunsdkcore.utils import parameter_helper
from aliyunsdkr_kvstore.request.v20150101.DescribeRegionsRequest import DescribeRegionsRequest
from aliyunsdkr_kvstore.request.v20150101.DescribeZonesRequest import DescribeZonesRequest
from darabonba.runtime import RuntimeOptions

REGION: Final = "cn-hangzhou"
API_VERSION: Final = "2015-01-01"
NEW_V3: Final = "new-v3"
NEW_V1: Final = "new-v1"
LEGACY: Final = "legacy"
SDK_KINDS: Final = (NEW_V3, NEW_V1, LEGACY)
SDK_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


# --------------------------------------------------------------------------- factories


def new_sdk_client(
    endpoint: str,
    access_key_id: str,
    access_key_secret: str,
    *,
    signature_algorithm: str | None = None,
    region_id: str = REGION,
    ca: str | None = None,
) -> NewClient:
    """The new SDK's client for ``host:port`` over plain HTTP (``"v2"``: V1 signing); with
    ``ca`` (a CA bundle's path), over HTTPS, the server's certificate verified against it."""
    return NewClient(
        Config(
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            endpoint=endpoint,
            protocol="https" if ca else "http",
            ca=ca,
            region_id=region_id,
            signature_algorithm=signature_algorithm,
        )
    )


def legacy_client(access_key_id: str, access_key_secret: str, region_id: str = REGION) -> AcsClient:
    return AcsClient(access_key_id, access_key_secret, region_id)


def legacy_request(request: AcsRequest, endpoint: str) -> AcsRequest:
    """Point one legacy request at ``host:port`` and force plain HTTP.

    ``AcsClient`` takes the endpoint from ``request.endpoint`` when it is set (and
    skips endpoint resolution); the protocol is the request's own
    ``get_protocol_type()``, HTTP by default unless ``set_default_protocol_type``
    changed it, so it is pinned here.
    """
    request.set_endpoint(endpoint)
    request.set_protocol_type(protocol_type.HTTP)
    return request


def legacy_common_request(
    endpoint: str,
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    version: str = API_VERSION,
) -> CommonRequest:
    """A legacy ``CommonRequest``: any action by name, parameters in the query."""
    request = CommonRequest(domain=endpoint, version=version, action_name=action)
    request.set_method("POST")
    request.set_protocol_type(protocol_type.HTTP)
    for key, value in (params or {}).items():
        request.add_query_param(key, value)
    return request


def rpc_params(action: str, version: str = API_VERSION) -> open_api_models.Params:
    """What the generated new-SDK methods pass to ``call_api`` for an RPC action."""
    return open_api_models.Params(
        action=action,
        version=version,
        protocol="HTTPS",  # the Config's protocol ("http") wins
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )


# --------------------------------------------------------------------------- one face, three SDKs


@dataclass
class SdkCaller:
    """One of the three SDK clients; answers come back as the JSON body (a dict)."""

    kind: str
    endpoint: str
    access_key_id: str
    access_key_secret: str

    @property
    def is_legacy(self) -> bool:
        return self.kind == LEGACY

    def _new(self) -> NewClient:
        algorithm = "v2" if self.kind == NEW_V1 else None
        return new_sdk_client(
            self.endpoint,
            self.access_key_id,
            self.access_key_secret,
            signature_algorithm=algorithm,
        )

    def _legacy(self, request: AcsRequest) -> dict[str, Any]:
        client = legacy_client(self.access_key_id, self.access_key_secret)
        try:
            raw = client.do_action_with_exception(request)
        finally:
            # Each AcsClient owns a requests Session; close its kept-alive
            # connection now rather than leave the socket to the garbage collector.
            client.session.close()
        body: dict[str, Any] = json.loads(raw)
        return body

    def describe_regions(self) -> dict[str, Any]:
        if self.is_legacy:
            return self._legacy(legacy_request(DescribeRegionsRequest(), self.endpoint))
        response = self._new().describe_regions(kv_models.DescribeRegionsRequest())
        assert response.status_code == 200
        return _body_map(response.body)

    def describe_regions_model(self) -> kv_models.DescribeRegionsResponseBody:
        """The new SDK's typed model (only for the new SDK)."""
        assert not self.is_legacy
        return self._new().describe_regions(kv_models.DescribeRegionsRequest()).body

    def describe_zones(self, region_id: str) -> dict[str, Any]:
        if self.is_legacy:
            # This request class has no set_RegionId: the SDK fills RegionId from
            # the client's region unless the query already holds one.
            request = legacy_request(DescribeZonesRequest(), self.endpoint)
            request.add_query_param("RegionId", region_id)
            return self._legacy(request)
        response = self._new().describe_zones(kv_models.DescribeZonesRequest(region_id=region_id))
        assert response.status_code == 200
        return _body_map(response.body)

    def describe_zones_model(self, region_id: str) -> kv_models.DescribeZonesResponseBody:
        assert not self.is_legacy
        request = kv_models.DescribeZonesRequest(region_id=region_id)
        return self._new().describe_zones(request).body

    def call(self, action: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Any action by name: ``call_api`` (new SDK) or ``CommonRequest`` (legacy).

        The legacy SDK adds ``RegionId`` (the client's region) to every RPC call
        that does not set it; pass ``RegionId=""`` to send it empty.
        """
        if self.is_legacy:
            return self._legacy(legacy_common_request(self.endpoint, action, params))
        request = open_api_models.OpenApiRequest(query=dict(params or {}))
        result = self._new().call_api(rpc_params(action), request, RuntimeOptions())
        assert result["statusCode"] == 200
        body: dict[str, Any] = result["body"]
        return body


def _body_map(model: Any) -> dict[str, Any]:
    body: dict[str, Any] = model.to_map()
    return body


# --------------------------------------------------------------------------- patching the SDKs


def fix_nonce(monkeypatch: pytest.MonkeyPatch, kind: str, nonce: str) -> None:
    """Make the SDK send ``nonce`` as ``SignatureNonce`` / ``x-acs-signature-nonce``.

    tea-openapi calls ``Utils.get_nonce()`` through the class for both signing
    styles; aliyunsdkcore's RPC composer calls ``parameter_helper.get_uuid()``.
    """
    if kind == LEGACY:
        monkeypatch.setattr(parameter_helper, "get_uuid", lambda: nonce)
    else:
        monkeypatch.setattr(OpenApiUtils, "get_nonce", staticmethod(lambda: nonce))


def shift_clock(monkeypatch: pytest.MonkeyPatch, kind: str, delta: dt.timedelta) -> None:
    """Make the SDK's signed timestamp (``Timestamp`` / ``x-acs-date``) ``now + delta``.

    tea-openapi takes both from ``Utils.get_timestamp()``; aliyunsdkcore from
    ``parameter_helper.get_iso_8061_date()``. Both are looked up at call time.
    """

    def stamp() -> str:
        return (dt.datetime.now(dt.UTC) + delta).strftime(SDK_TIMESTAMP_FORMAT)

    if kind == LEGACY:
        monkeypatch.setattr(parameter_helper, "get_iso_8061_date", stamp)
    else:
        monkeypatch.setattr(OpenApiUtils, "get_timestamp", staticmethod(stamp))


# --------------------------------------------------------------------------- the SDKs' error types


def error_type(kind: str) -> type[Exception]:
    """What each SDK raises for a 4xx answer without ``x-acs-retry-after``."""
    return LegacyServerException if kind == LEGACY else NewClientException


@dataclass(frozen=True)
class SdkError:
    """An SDK exception, read through that SDK's own accessors."""

    code: str
    message: str  # the server's Message as the SDK reports it
    http_status: int
    request_id: str
    body: dict[str, Any] | None  # the whole error body (new SDK only)


def read_error(kind: str, exc: BaseException) -> SdkError:
    if kind == LEGACY:
        assert isinstance(exc, LegacyServerException), type(exc)
        return SdkError(
            code=exc.get_error_code(),
            message=exc.get_error_msg(),
            http_status=int(exc.get_http_status()),
            request_id=str(exc.get_request_id()),
            body=None,
        )
    assert isinstance(exc, NewClientException | ThrottlingException), type(exc)
    return SdkError(
        code=str(exc.code),
        message=str(exc.message),
        http_status=int(exc.status_code),
        request_id=str(exc.request_id),
        body=dict(exc.data or {}),
    )
