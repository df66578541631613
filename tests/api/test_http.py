"""The HTTP envelope of a live ``rkvstore serve``: formats, methods, bodies, bounds, throttling.

Requests are built by hand (httpx, a raw socket where httpx refuses the URL),
signed with rkvstore's own signing functions or ``RpcClient``; the official
SDK only comes in to show how it reads a throttling answer.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from alibabacloud_tea_openapi.exceptions import ThrottlingException
from aliyunsdkcore.acs_exception.exceptions import ServerException as LegacyServerException

from rkvstore.api.params import printable
from rkvstore.api.signing import pct, sign_v3_headers, v1_signature, v1_string_to_sign
from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.sdk_clients import LEGACY, NEW_V1, NEW_V3, REGION, SdkCaller
from tests.conftest import ARTIFACT_DIRS, HTTP_STACKS, LiveServer, start_server

# tests/conftest.py's start_server leaves its server.out handle to the garbage
# collector; with filterwarnings=error that ResourceWarning fails the first test
# to set up a server. Only that one warning is let through.

API_VERSION = "2015-01-01"
FORM = "application/x-www-form-urlencoded"
MAX_BYTES = 64 * 1024  # Settings.max_request_bytes
MAX_PARAMETERS = 200  # Settings.max_parameters
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

# api.md §2, and rkvstore's own bounds (errors.py) for what arrives before any signature check
BAD_SIGNATURE = "The request signature does not conform to Aliyun standards."
INVALID_VERSION = "Specified parameter Version is not valid."
TOO_LARGE = f"The query string or body is larger than {MAX_BYTES} bytes."
TOO_MANY = f"The request has more than {MAX_PARAMETERS} parameters."
BAD_ENCODING = "The request is not valid UTF-8 URL-encoded text."
THROTTLED = "Request was denied due to user flow control."


# --------------------------------------------------------------------------- helpers


def v1_signed(
    server: LiveServer,
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    version: str = API_VERSION,
    fmt: str = "JSON",
    form: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The query pairs of a V1-signed call; ``form`` pairs travel in the body but are signed."""
    pairs = [
        ("Action", action),
        ("Version", version),
        ("Format", fmt),
        ("AccessKeyId", server.access_key_id),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", secrets.token_hex(16)),
        ("Timestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        *(params or {}).items(),
    ]
    string_to_sign = v1_string_to_sign(method, [*pairs, *(form or {}).items()])
    return [*pairs, ("Signature", v1_signature(server.access_key_secret, string_to_sign))]


def encode(pairs: Sequence[tuple[str, str]]) -> str:
    return urlencode(pairs, quote_via=lambda s, *_a: pct(str(s)))


def send_v1(
    server: LiveServer,
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    version: str = API_VERSION,
    fmt: str = "JSON",
    form: Mapping[str, str] | None = None,
) -> httpx.Response:
    query = encode(
        v1_signed(server, action, params, method=method, version=version, fmt=fmt, form=form)
    )
    if form is None:
        return httpx.request(method, f"{server.url}/?{query}", timeout=30)
    body = encode(list(form.items()))
    return httpx.request(
        method, f"{server.url}/?{query}", content=body, headers={"content-type": FORM}, timeout=30
    )


def send_v3(
    server: LiveServer,
    action: str,
    params: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    form: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A V3-signed call by hand (``RpcClient`` only does POST without a body)."""
    query = list((params or {}).items())
    body = encode(list(form.items())).encode() if form is not None else b""
    extra = {"content-type": FORM} if form is not None else {}
    headers = sign_v3_headers(
        access_key_id=server.access_key_id,
        secret=server.access_key_secret,
        method=method,
        host=server.endpoint,
        query=query,
        headers={
            "accept": "application/json",
            "x-acs-action": action,
            "x-acs-version": API_VERSION,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-acs-signature-nonce": secrets.token_hex(16),
            **extra,
        },
        body=body,
    )
    return httpx.request(
        method, f"{server.url}/?{encode(query)}", headers=headers, content=body, timeout=30
    )


def rpc(server: LiveServer, version: str = API_VERSION) -> RpcClient:
    return RpcClient(
        server.endpoint, server.access_key_id, Secret(server.access_key_secret), version=version
    )


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_http(
    server: LiveServer, target: str, body: bytes = b"", *, content_type: str | None = None
) -> RawAnswer:
    """One HTTP/1.1 POST over a plain socket: httpx refuses URLs over 64 KiB."""
    host, port = server.endpoint.rsplit(":", 1)
    head = f"POST {target} HTTP/1.1\r\nHost: {server.endpoint}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    data = b""
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.encode("latin-1") + body)
        for _ in range(10_000):  # bounded: the server closes the connection
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    header_block, _, payload = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, payload)


def parse_xml(content: bytes) -> ET.Element:
    # xml.etree on purpose (stdlib): the document comes from the server under test
    # on 127.0.0.1, and the test is that a standard parser reads it.
    return ET.fromstring(content)  # noqa: S314


def expect_error(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    *,
    http_status: int,
    code: str,
    message: str,
) -> dict[str, Any]:
    """A JSON error answer with this status, code and message, its RequestId in the header."""
    assert status < 500, (status, content)
    body: dict[str, Any] = json.loads(content)
    assert (status, body["Code"], body["Message"]) == (http_status, code, message), body
    assert REQUEST_ID.match(body["RequestId"]), body
    assert headers["x-acs-request-id"] == body["RequestId"]
    assert headers["content-type"].startswith("application/json")
    assert set(body) >= {"RequestId", "HostId", "Code", "Message", "Recommend"}
    return body


def expect_response_error(
    response: httpx.Response, *, http_status: int, code: str, message: str
) -> dict[str, Any]:
    return expect_error(
        response.status_code,
        response.headers,
        response.content,
        http_status=http_status,
        code=code,
        message=message,
    )


def expect_ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert REQUEST_ID.match(body["RequestId"])
    assert response.headers["x-acs-request-id"] == body["RequestId"]
    return body


@pytest.fixture(scope="module", params=sorted(HTTP_STACKS))
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The module's server, once per HTTP stack: everything below holds on both."""
    path = tmp_path_factory.mktemp("http")
    ARTIFACT_DIRS.append(path)
    server = start_server(path, extra_env=HTTP_STACKS[request.param])
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["XML", "xml", "Xml"])
def test_xml_describe_regions_has_the_json_content(live_server: LiveServer, fmt: str) -> None:
    as_json = expect_ok(send_v1(live_server, "DescribeRegions"))
    response = send_v1(live_server, "DescribeRegions", fmt=fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    root = parse_xml(response.content)
    assert root.tag == "DescribeRegionsResponse"
    request_id = root.findtext("RequestId")
    assert request_id is not None
    assert REQUEST_ID.match(request_id)
    assert response.headers["x-acs-request-id"] == request_id

    json_regions = as_json["RegionIds"]["KVStoreRegion"]
    xml_regions = root.findall("./RegionIds/KVStoreRegion")
    assert len(xml_regions) == len(json_regions) == 1
    for xml_region, json_region in zip(xml_regions, json_regions, strict=True):
        assert xml_region.findtext("RegionId") == json_region["RegionId"] == REGION
        assert xml_region.findtext("ZoneIds") == json_region["ZoneIds"]
        assert xml_region.findtext("LocalName") == json_region["LocalName"]
        # A list repeats its element name, once per item.
        xml_zones = [z.text for z in xml_region.findall("./ZoneIdList/ZoneId")]
        assert xml_zones == json_region["ZoneIdList"]["ZoneId"]
        assert len(xml_zones) >= 1


def test_xml_describe_zones_has_the_json_content(live_server: LiveServer) -> None:
    as_json = expect_ok(send_v1(live_server, "DescribeZones", {"RegionId": REGION}))
    response = send_v1(live_server, "DescribeZones", {"RegionId": REGION}, fmt="XML")
    assert response.status_code == 200, response.text
    root = parse_xml(response.content)
    assert root.tag == "DescribeZonesResponse"
    assert response.headers["x-acs-request-id"] == root.findtext("RequestId")
    xml_zones = root.findall("./Zones/KVStoreZone")
    json_zones = as_json["Zones"]["KVStoreZone"]
    assert [z.findtext("ZoneId") for z in xml_zones] == [z["ZoneId"] for z in json_zones]
    assert [z.findtext("RegionId") for z in xml_zones] == [REGION] * len(json_zones)
    assert [z.findtext("Disabled") for z in xml_zones] == [
        str(z["Disabled"]).lower() for z in json_zones
    ]


def test_xml_error_stays_json(live_server: LiveServer) -> None:
    # Errors are JSON whatever Format says: the legacy SDK cannot read an XML error.
    response = send_v1(live_server, "DescribeZones", fmt="XML")
    expect_response_error(
        response,
        http_status=400,
        code="MissingParameter",
        message='The input parameter "RegionId" that is mandatory for processing this request '
        "is not supplied.",
    )


@pytest.mark.parametrize("fmt", ["JSON", "json", "anything", ""])
def test_other_formats_get_json(live_server: LiveServer, fmt: str) -> None:
    response = send_v1(live_server, "DescribeRegions", fmt=fmt)
    assert response.headers["content-type"].startswith("application/json")
    assert expect_ok(response)["RegionIds"]["KVStoreRegion"][0]["RegionId"] == REGION


# --------------------------------------------------------------------------- RequestId everywhere


def test_every_answer_carries_its_request_id(live_server: LiveServer) -> None:
    url = live_server.url
    with rpc(live_server) as client:
        answers = [client.request(a) for a in ("DescribeRegions", "DescribeZones", "NoSuchAction")]
    answers += [
        send_v1(live_server, "DescribeRegions"),
        send_v1(live_server, "DescribeRegions", fmt="XML"),
        send_v1(live_server, "DescribeRegions", version="2014-01-01"),
        httpx.get(f"{url}/", timeout=30),
        httpx.post(f"{url}/", headers={"authorization": "nonsense"}, timeout=30),
        httpx.post(f"{url}/?A=%FF", timeout=30),
        httpx.post(f"{url}/elsewhere", timeout=30),
        httpx.put(f"{url}/", timeout=30),
    ]
    seen: set[str] = set()
    for response in answers:
        assert response.status_code < 500, response.text
        if response.headers["content-type"].startswith("text/xml"):
            request_id = parse_xml(response.content).findtext("RequestId")
        else:
            request_id = response.json()["RequestId"]
        assert request_id is not None
        assert REQUEST_ID.match(request_id), request_id
        assert response.headers["x-acs-request-id"] == request_id
        seen.add(request_id)
    assert len(seen) == len(answers), "RequestIds must be unique"


# --------------------------------------------------------------------------- methods and bodies


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_get_and_post(live_server: LiveServer, method: str) -> None:
    body = expect_ok(send_v1(live_server, "DescribeZones", {"RegionId": REGION}, method=method))
    assert body["Zones"]["KVStoreZone"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v3_get_and_post(live_server: LiveServer, method: str) -> None:
    body = expect_ok(send_v3(live_server, "DescribeZones", {"RegionId": REGION}, method=method))
    assert body["Zones"]["KVStoreZone"]


def test_v1_form_body_parameters_are_merged(live_server: LiveServer) -> None:
    response = send_v1(live_server, "DescribeZones", form={"RegionId": REGION})
    body = expect_ok(response)
    assert {z["RegionId"] for z in body["Zones"]["KVStoreZone"]} == {REGION}


def test_v1_everything_in_the_form_body(live_server: LiveServer) -> None:
    pairs = v1_signed(live_server, "DescribeZones", {"RegionId": REGION})
    response = httpx.post(
        f"{live_server.url}/", content=encode(pairs), headers={"content-type": FORM}, timeout=30
    )
    assert expect_ok(response)["Zones"]["KVStoreZone"]


def test_v3_form_body_parameters_are_merged(live_server: LiveServer) -> None:
    response = send_v3(live_server, "DescribeZones", form={"RegionId": REGION})
    body = expect_ok(response)
    assert {z["RegionId"] for z in body["Zones"]["KVStoreZone"]} == {REGION}


def test_body_of_another_type_is_not_parsed(live_server: LiveServer) -> None:
    # Only application/x-www-form-urlencoded bodies carry parameters.
    pairs = v1_signed(live_server, "DescribeZones", {"RegionId": REGION})
    response = httpx.post(
        f"{live_server.url}/",
        content=encode(pairs),
        headers={"content-type": "text/plain"},
        timeout=30,
    )
    expect_response_error(response, http_status=400, code="MissingSignature", message=BAD_SIGNATURE)


# --------------------------------------------------------------------------- bounds


def test_query_over_64_kib_is_too_large(live_server: LiveServer) -> None:
    query = "A=" + "x" * (MAX_BYTES + 1 - 2)
    assert len(query) == MAX_BYTES + 1
    answer = raw_http(live_server, f"/?{query}")
    expect_error(
        answer.status,
        answer.headers,
        answer.body,
        http_status=413,
        code="RequestEntityTooLarge",
        message=TOO_LARGE,
    )


def test_query_of_exactly_64_kib_is_read(live_server: LiveServer) -> None:
    query = "A=" + "x" * (MAX_BYTES - 2)
    answer = raw_http(live_server, f"/?{query}")
    expect_error(
        answer.status,
        answer.headers,
        answer.body,
        http_status=400,
        code="MissingSignature",
        message=BAD_SIGNATURE,
    )


@pytest.mark.parametrize("content_type", [FORM, "application/octet-stream"])
def test_body_over_64_kib_is_too_large(live_server: LiveServer, content_type: str) -> None:
    body = b"A=" + b"x" * (MAX_BYTES + 1 - 2)
    response = httpx.post(
        f"{live_server.url}/", content=body, headers={"content-type": content_type}, timeout=30
    )
    expect_response_error(
        response, http_status=413, code="RequestEntityTooLarge", message=TOO_LARGE
    )


def test_chunked_body_over_64_kib_is_too_large(live_server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b"A="
        for _ in range(17):
            yield b"x" * 4096

    response = httpx.post(
        f"{live_server.url}/", content=chunks(), headers={"content-type": FORM}, timeout=30
    )
    expect_response_error(
        response, http_status=413, code="RequestEntityTooLarge", message=TOO_LARGE
    )


def test_201_query_parameters_are_too_many(live_server: LiveServer) -> None:
    query = "&".join(f"P{i}=v" for i in range(MAX_PARAMETERS + 1))
    response = httpx.post(f"{live_server.url}/?{query}", timeout=30)
    expect_response_error(
        response, http_status=400, code="InvalidParameter.TooMany", message=TOO_MANY
    )


def test_201_parameters_across_query_and_body_are_too_many(live_server: LiveServer) -> None:
    query = "&".join(f"Q{i}=v" for i in range(150))
    body = "&".join(f"B{i}=v" for i in range(MAX_PARAMETERS + 1 - 150))
    response = httpx.post(
        f"{live_server.url}/?{query}", content=body, headers={"content-type": FORM}, timeout=30
    )
    expect_response_error(
        response, http_status=400, code="InvalidParameter.TooMany", message=TOO_MANY
    )


def test_200_parameters_are_not_too_many(live_server: LiveServer) -> None:
    extra = {f"Extra{i}": "v" for i in range(MAX_PARAMETERS - 10)}
    pairs = v1_signed(live_server, "DescribeRegions", extra)
    assert len(pairs) == MAX_PARAMETERS - 1
    response = httpx.post(f"{live_server.url}/?{encode(pairs)}", timeout=30)
    assert expect_ok(response)["RegionIds"]


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        ("query-value", b"A=%FF%FE"),
        ("query-key", b"%C3%28=1"),
        ("body-value", b"A=%ED%A0%80"),
        ("body-raw-byte", b"A=\xff"),
    ],
)
def test_invalid_utf8_is_an_encoding_error(live_server: LiveServer, where: str, raw: bytes) -> None:
    if where.startswith("query"):
        answer = raw_http(live_server, "/?" + raw.decode("ascii"))
    else:
        answer = raw_http(live_server, "/", raw, content_type=FORM)
    expect_error(
        answer.status,
        answer.headers,
        answer.body,
        http_status=400,
        code="InvalidParameter.Encoding",
        message=BAD_ENCODING,
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "garbage",
        "ACS3-HMAC-SHA256",
        "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=host,Signature=zz",
        "ACS3-HMAC-SHA256 Credential=id,SignedHeaders=,Signature=" + "0" * 64,
        "ACS3-HMAC-MD5 Credential=id,SignedHeaders=host,Signature=" + "0" * 64,
    ],
)
def test_malformed_authorization_is_incomplete_signature(
    live_server: LiveServer, authorization: str
) -> None:
    response = httpx.post(
        f"{live_server.url}/",
        headers={"authorization": authorization, "x-acs-action": "DescribeRegions"},
        timeout=30,
    )
    expect_response_error(
        response, http_status=400, code="IncompleteSignature", message=BAD_SIGNATURE
    )


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_signature_is_missing_signature(live_server: LiveServer, method: str) -> None:
    query = encode([("Action", "DescribeRegions"), ("Version", API_VERSION)])
    response = httpx.request(method, f"{live_server.url}/?{query}", timeout=30)
    expect_response_error(response, http_status=400, code="MissingSignature", message=BAD_SIGNATURE)


def test_wrong_version_v1(live_server: LiveServer) -> None:
    response = send_v1(live_server, "DescribeRegions", version="2014-01-01")
    expect_response_error(response, http_status=400, code="InvalidVersion", message=INVALID_VERSION)


def test_wrong_version_v3(live_server: LiveServer) -> None:
    with rpc(live_server, version="2014-01-01") as client:
        response = client.request("DescribeRegions")
    expect_response_error(response, http_status=400, code="InvalidVersion", message=INVALID_VERSION)


def test_no_5xx_in_the_server_log(live_server: LiveServer) -> None:
    """Runs after the tests above on the same server: nothing ended in a 5xx."""
    log = (live_server.data_dir / "server.out").read_text(errors="replace")
    assert "rkvstore.access" in log
    assert not re.search(r"status=5\d\d", log), "a request ended in a 5xx"
    assert "Traceback" not in log


# --------------------------------------------------------------------------- throttling


@pytest.fixture
def throttled_server(data_dir: Path) -> Iterator[LiveServer]:
    server = start_server(
        data_dir,
        extra_env={"RKVSTORE_RATE_LIMIT_PER_SECOND": "1", "RKVSTORE_RATE_LIMIT_BURST": "2"},
    )
    try:
        yield server
    finally:
        server.stop()


def test_third_quick_call_is_throttled(throttled_server: LiveServer) -> None:
    with rpc(throttled_server) as client:
        first = client.request("DescribeRegions")
        second = client.request("DescribeRegions")
        third = client.request("DescribeRegions")
    assert (first.status_code, second.status_code) == (200, 200), second.text
    expect_response_error(third, http_status=400, code="Throttling.User", message=THROTTLED)
    retry_after = third.headers["x-acs-retry-after"]
    assert re.fullmatch(r"\d+", retry_after), retry_after
    assert 0 < int(retry_after) <= 1000


@pytest.mark.parametrize("kind", [NEW_V3, NEW_V1, LEGACY])
def test_sdks_see_throttling(throttled_server: LiveServer, kind: str) -> None:
    sdk = SdkCaller(
        kind,
        throttled_server.endpoint,
        throttled_server.access_key_id,
        throttled_server.access_key_secret,
    )
    expected = LegacyServerException if kind == LEGACY else ThrottlingException
    caught: BaseException | None = None
    for _ in range(5):  # burst 2 at 1/s: one of five quick calls must be refused
        try:
            sdk.describe_regions()
        except expected as exc:
            caught = exc
            break
    assert caught is not None, "five quick calls at 1/s (burst 2) were all served"
    if isinstance(caught, ThrottlingException):
        assert caught.code == "Throttling.User"
        assert caught.status_code == 400
        assert THROTTLED in caught.message
        assert isinstance(caught.retry_after, int)
        assert caught.retry_after > 0
        assert caught.data["RequestId"] == caught.request_id
    else:
        assert isinstance(caught, LegacyServerException)
        assert caught.get_error_code() == "Throttling.User"
        assert caught.get_error_msg() == THROTTLED
        assert caught.get_http_status() == 400
        assert REQUEST_ID.match(caught.get_request_id())


# --------------------------------------------------------------------------- found in review


def test_an_action_name_cannot_forge_access_log_lines(live_server: LiveServer) -> None:
    """The action is logged before any signature check: a line break in it stays in its line."""
    forged = "request_id=FORGED action=DeleteInstance principal=root status=200"
    response = httpx.post(
        f"{live_server.url}/?" + encode([("Action", f"x\n{forged}"), ("Version", API_VERSION)])
    )
    expect_response_error(
        response,
        http_status=400,
        code="MissingSignature",
        message="The request signature does not conform to Aliyun standards.",
    )
    log = (live_server.data_dir / "rkvstore.log").read_text()
    assert not any(line.startswith("request_id=FORGED") for line in log.splitlines())
    # The value is quoted whole (api/dispatch.py logged): no field of its own either.
    assert f'action="{printable("x?" + forged)}" principal=-' in log


@pytest.mark.parametrize(
    ("name", "value"), [("ChargeType", "Monthly"), ("InstanceClass", "c" * 65)]
)
def test_create_instance_refuses_unfit_values_before_the_database(
    live_server: LiveServer, name: str, value: str
) -> None:
    """PostgreSQL would refuse a too-long value with a 500; SQLite would store it."""
    with rpc(live_server) as client:
        response = client.request("CreateInstance", {name: value, "DryRun": "true"})
    expect_response_error(
        response,
        http_status=400,
        code="InvalidParameter",
        message=f'The specified parameter "{name}" is not valid.',
    )
