"""A replay of terraform-provider-alicloud's R-kvstore calls (its binary cannot be downloaded here).

Not a test module. Read from the provider's source (aliyun/terraform-provider-alicloud at
81c43b6, 2026-08-21: ``alicloud/resource_alicloud_kvstore_account.go``,
``resource_alicloud_kvstore_instance.go``, ``data_source_alicloud_kvstore_accounts.go``,
``service_alicloud_redis_v2.go``, ``service_alicloud_r_kvstore.go``, ``errors.go``,
``common.go``, ``connectivity/client.go``) and the Go clients it uses
(alibabacloud-go/tea-rpc, tea, tea-utils, tea-rpc-utils; aliyun/alibaba-cloud-sdk-go).
The shared summary is ``reference/terraform.md``.

Two wire formats, as the provider sends them:

- ``TeaRpc`` (``client.RpcPost``, tea-rpc's ``DoRequest``): ``POST /``; the query holds
  only ``Action, Format=json, Timestamp, Version, SignatureNonce, SignatureMethod,
  SignatureVersion, AccessKeyId, Signature``; every API parameter travels in an
  ``application/x-www-form-urlencoded`` body (Go's ``url.Values.Encode``: keys sorted,
  a space as ``+``); the V1 signature covers query and body together. Go renders a
  boolean as ``true``/``false``. Errors become a ``tea.SDKError`` whose message is
  ``code: <status>, <Message> request id: <RequestId>``. ``autoRetry`` is on: an
  answer of 500 or more, or a transport error, is sent again (3 attempts, new nonce,
  no backoff).
- ``GoSdk`` (calls marked [go-sdk]: ``client.WithRKvstoreClient``, alibaba-cloud-sdk-go's
  ``r_kvstore`` client): ``POST /`` with every parameter, ``RegionId`` and
  ``SignatureType=`` in the query, an empty form body; ``Format=JSON``, a UUID nonce.
  Errors become an ``errors.ServerError`` (code, message, HTTP status). The SDK sends
  a 5xx answer again up to 3 times. Its answers are decoded into Go structs
  (``go_unmarshal``): a field of the wrong kind is a decode error.

Above the wire, the provider's own rules (``errors.go``): ``need_retry`` (ServiceUnavailable,
``Rejected.Throttling``, any code containing ``Throttling``, a tea message ``code: 5xx``),
``not_found_error`` (HTTP 404 or ``NotFound`` in a tea message; the provider's own
"resource not found"), ``is_expected_errors`` (code, code prefix, or the code anywhere in the
answer). ``TaskExists`` is retried nowhere.

Time: the provider's waits (``resource.Retry``, ``StateChangeConf``: a first delay, then
polls at least 3 s apart, doubling up to 10 s; ``incrementalWait`` between retries) keep
their shape here, but every duration is multiplied by ``Pace.scale`` (default 1/100:
the account's 60 s create delay is 0.6 s, a 3 s poll 30 ms) and every timeout is capped by
``Pace.max_timeout``; each loop is also bounded by a number of rounds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

import httpx

API_VERSION: Final = "2015-01-01"
PROVIDER_COMMIT: Final = "81c43b6727a09e9da37b3d88818c3ba5fa17fa14"
USER_AGENT: Final = (
    "AlibabaCloud (linux; amd64) Go/go1.23.0 Core/1.1.17 TeaDSL/1 "
    "HashiCorp-Terraform/1.9.0 Terraform-Provider-Alicloud/1.260.0"
)
HTTP_TIMEOUT: Final = 30.0  # one request, seconds
TEA_MAX_ATTEMPTS: Final = 3  # tea-rpc RuntimeOptions: maxAttempts default, autoretry on
GO_SDK_MAX_RETRY: Final = 3  # alibaba-cloud-sdk-go Config.MaxRetryTime default
MAX_ROUNDS: Final = 200  # any retry or wait loop, whatever its timeout
NOT_FOUND_CHECKS: Final = 20  # StateChangeConf.NotFoundChecks default
SENT_KEPT: Final = 1000  # requests each wire keeps for the tests to look at

T = TypeVar("T")

# --------------------------------------------------------------------------- signing


def pct(value: str) -> str:
    """RFC 3986: keep ``A-Z a-z 0-9 - _ . ~``, everything else ``%XX`` upper-case."""
    return quote(value, safe="~")


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """tea-rpc-utils ``buildRpcStringToSignV1``: every parameter but Signature, sorted."""
    canonical = "&".join(
        f"{pct(k)}={pct(v)}" for k, v in sorted(params.items()) if k != "Signature"
    )
    return f"{method}&{pct('/')}&{pct(canonical)}"


def v1_signature(secret: str, string_to_sign: str) -> str:
    mac = hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def go_value(value: Any) -> str:
    """A parameter value as Go prints it (``fmt.Sprintf("%v")`` after a JSON round trip)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def go_form(values: Mapping[str, str]) -> str:
    """Go's ``url.Values.Encode``: keys sorted, ``QueryEscape`` (a space is ``+``)."""
    return urlencode(sorted(values.items()))


def go_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- errors


class TeaSdkError(Exception):
    """Go ``tea.SDKError`` as tea-rpc builds it from a 4xx/5xx answer."""

    def __init__(self, status: int, data: dict[str, Any]) -> None:
        self.status = status
        self.data = data
        self.code = str(data.get("Code", data.get("code", "")))
        self.api_message = str(data.get("Message", data.get("message", "")))
        request_id = data.get("RequestId", data.get("requestId", ""))
        self.message = f"code: {status}, {self.api_message} request id: {request_id}"
        super().__init__(f"{self.code}: {self.message}")


class GoServerError(Exception):
    """alibaba-cloud-sdk-go ``errors.ServerError``."""

    def __init__(self, status: int, data: dict[str, Any]) -> None:
        self.status = status
        self.data = data
        self.code = str(data.get("Code", ""))
        self.message = str(data.get("Message", ""))
        self.api_message = self.message
        super().__init__(f"{self.code} ({status}): {self.message}")


class ResourceNotFound(Exception):
    """The provider's own ``NotFoundErr`` (an empty list, a different id)."""


class ProviderPanic(Exception):
    """Where the Go provider would panic (a failed type assertion)."""


class GoDecodeError(Exception):
    """An answer the Go SDK could not decode into its response struct."""


class WaitError(Exception):
    """``StateChangeConf.WaitForState`` failed: timeout, unexpected state, never found."""


ApiFailure = TeaSdkError | GoServerError

_THROTTLING: Final = re.compile("Throttling")
_CODE_5XX: Final = re.compile(r"^code: 5\d{2}")


def need_retry(err: BaseException) -> bool:
    """errors.go ``NeedRetry``."""
    if isinstance(err, httpx.TransportError):
        return True  # "Post https://…" transport failures
    if isinstance(err, TeaSdkError | GoServerError):
        return (
            err.code in ("ServiceUnavailable", "Rejected.Throttling")
            or bool(_THROTTLING.search(err.code))
            or bool(_CODE_5XX.match(err.message))
        )
    return False


def no_code_regex_retry(err: BaseException) -> bool:
    """errors.go ``NoCodeRegexRetry``: ``NeedRetry`` without the ``code: 5xx`` rule."""
    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, TeaSdkError | GoServerError):
        return err.code in ("ServiceUnavailable", "Rejected.Throttling") or bool(
            _THROTTLING.search(err.code)
        )
    return False


def not_found_error(err: BaseException) -> bool:
    """errors.go ``NotFoundError``."""
    if isinstance(err, ResourceNotFound):
        return True
    if isinstance(err, TeaSdkError):
        return err.status == 404 or "NotFound" in err.message
    if isinstance(err, GoServerError):
        return (
            err.code in ("Instance.Notfound", "Forbidden.InstanceNotFound", "NotFound")
            or err.status == 404
            or "instance is not found" in err.message.lower()
        )
    return False


def is_expected_errors(err: BaseException, codes: list[str]) -> bool:
    """errors.go ``IsExpectedErrors`` (tea: code, a prefix of it, or in the answer's JSON)."""
    if isinstance(err, TeaSdkError):
        data = json.dumps(err.data, ensure_ascii=False)
        return any(err.code == c or c.startswith(err.code) or c in data for c in codes)
    if isinstance(err, GoServerError):
        return any(err.code == c or c in err.message for c in codes)
    return False


# --------------------------------------------------------------------------- the call log


@dataclass(frozen=True)
class Call:
    wire: str  # "tea-rpc" or "go-sdk"
    action: str
    status: int  # 0: no HTTP answer
    code: str | None
    started: float
    ended: float


@dataclass
class CallLog:
    """Every HTTP exchange of the replay, in the order they ended (thread-safe)."""

    calls: list[Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def of(self, action: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.action == action]

    def codes(self) -> set[str]:
        with self._lock:
            return {c.code for c in self.calls if c.code}

    def max_in_flight(self, action: str) -> int:
        """How many ``action`` requests were open at the same time, at most."""
        events = sorted(
            [(c.started, 1) for c in self.of(action)] + [(c.ended, -1) for c in self.of(action)],
            key=lambda e: (e[0], e[1]),
        )
        best = now = 0
        for _, step in events:
            now += step
            best = max(best, now)
        return best


# --------------------------------------------------------------------------- the two wires


class _Wire:
    def __init__(
        self, endpoint: str, access_key_id: str, secret: str, region: str, log: CallLog
    ) -> None:
        self.endpoint = endpoint
        self.access_key_id = access_key_id
        self._secret = secret
        self.region = region
        self.log = log
        self.sent: deque[httpx.Request] = deque(maxlen=SENT_KEPT)  # what went on the wire
        self._http = httpx.Client(
            base_url=f"http://{endpoint}",
            timeout=HTTP_TIMEOUT,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            event_hooks={"request": [self.sent.append]},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> _Wire:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(
        self, wire: str, action: str, query: dict[str, str], body: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        status, code = 0, None
        try:
            response = self._http.post("/", params=query, content=body, headers=headers)
            status = response.status_code
            data = response.json()
            assert isinstance(data, dict), data
            code = data.get("Code") if status >= 400 else None
            return status, data
        finally:
            self.log.add(Call(wire, action, status, code, started, time.monotonic()))


class TeaRpc(_Wire):
    """tea-rpc ``DoRequest`` as ``client.RpcPost`` calls it (autoRetry on)."""

    def post(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        last: BaseException | None = None
        for _attempt in range(TEA_MAX_ATTEMPTS):
            try:
                return self._once(action, body)
            except httpx.TransportError as exc:  # tea.Retryable: not an SDKError
                last = exc
            except TeaSdkError as exc:
                if exc.status < 500:
                    raise
                last = exc
        assert last is not None
        raise last

    def _once(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        query = {
            "Action": action,
            "Format": "json",
            "Timestamp": go_timestamp(),
            "Version": API_VERSION,
            "SignatureNonce": secrets.token_hex(16),  # tea-utils GetNonce: an MD5 in hex
        }
        form = {k: go_value(v) for k, v in body.items() if v is not None}
        headers = {
            "host": self.endpoint,
            "x-acs-version": API_VERSION,
            "x-acs-action": action,
            "user-agent": USER_AGENT,
            "content-type": "application/x-www-form-urlencoded",
        }
        query["SignatureMethod"] = "HMAC-SHA1"
        query["SignatureVersion"] = "1.0"
        query["AccessKeyId"] = self.access_key_id
        query["Signature"] = v1_signature(
            self._secret, v1_string_to_sign("POST", {**query, **form})
        )
        status, data = self._post("tea-rpc", action, query, go_form(form), headers)
        if status >= 400:
            raise TeaSdkError(status, data)
        return data


class GoSdk(_Wire):
    """alibaba-cloud-sdk-go's ``r_kvstore`` client: V1, everything in the query."""

    def call(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        last: BaseException | None = None
        for _attempt in range(GO_SDK_MAX_RETRY + 1):
            try:
                return self._once(action, params)
            except httpx.TransportError as exc:
                last = exc
            except GoServerError as exc:
                if exc.status < 500:
                    raise
                last = exc
        assert last is not None
        raise last

    def _once(self, action: str, params: Mapping[str, Any]) -> dict[str, Any]:
        # Empty parameters are not sent (the request structs' zero values).
        query = {k: go_value(v) for k, v in params.items() if v is not None and v != ""}
        query |= {
            "Version": API_VERSION,
            "Action": action,
            "Format": "JSON",
            "Timestamp": go_timestamp(),
            "SignatureMethod": "HMAC-SHA1",
            "SignatureType": "",
            "SignatureVersion": "1.0",
            "SignatureNonce": str(uuid.uuid4()),
            "AccessKeyId": self.access_key_id,
        }
        query.setdefault("RegionId", self.region)
        query["Signature"] = v1_signature(self._secret, v1_string_to_sign("POST", query))
        headers = {
            "user-agent": USER_AGENT,
            "x-sdk-client": "golang/1.0.0",
            "x-sdk-invoke-type": "normal",
            "content-type": "application/x-www-form-urlencoded",
        }
        status, data = self._post("go-sdk", action, query, "", headers)
        if status < 200 or status >= 300:
            raise GoServerError(status, data)
        return data


# --------------------------------------------------------------------------- Go structs


Shape = Any  # str, int, bool, [Shape], or {field: Shape}


def go_unmarshal(value: Any, shape: Shape, path: str = "$") -> Any:
    """Decode ``value`` as the Go SDK's struct ``shape`` (with its fuzzy scalar decoders).

    A string field takes a string or a number; an int a number or a numeric string; a
    bool a bool or ``"true"``/``"false"``; a missing field or null is the zero value;
    unknown fields are ignored; anything else fails like jsoniter does.
    """
    if isinstance(shape, dict):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise GoDecodeError(f"{path}: an object expected, got {value!r}")
        return {k: go_unmarshal(value.get(k), s, f"{path}.{k}") for k, s in shape.items()}
    if isinstance(shape, list):
        if value is None:
            return []
        if not isinstance(value, list):
            raise GoDecodeError(f"{path}: an array expected, got {value!r}")
        return [go_unmarshal(v, shape[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None:
        return shape()
    if shape is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise GoDecodeError(f"{path}: a string expected, got {value!r}")
        return value if isinstance(value, str) else json.dumps(value)
    if shape is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            return int(value)
        if value == "":
            return 0
        raise GoDecodeError(f"{path}: an integer expected, got {value!r}")
    if shape is bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise GoDecodeError(f"{path}: a boolean expected, got {value!r}")
    raise AssertionError(f"unknown shape {shape!r}")


# The r_kvstore response structs the provider reads (field names as the Go SDK has them).
ACCOUNT_SHAPE: Final = {
    "AccountName": str,
    "AccountDescription": str,
    "AccountStatus": str,
    "AccountType": str,
    "InstanceId": str,
    "PrivExceeded": str,
    "DatabasePrivileges": {
        "DatabasePrivilege": [{"AccountPrivilege": str, "AccountPrivilegeDetail": str}]
    },
}
DESCRIBE_ACCOUNTS_SHAPE: Final = {"RequestId": str, "Accounts": {"Account": [ACCOUNT_SHAPE]}}
BACKUP_POLICY_SHAPE: Final = {
    "RequestId": str,
    "PreferredBackupPeriod": str,
    "PreferredBackupTime": str,
    "PreferredNextBackupTime": str,
    "BackupRetentionPeriod": int,
    "EnableBackupLog": int,
    "DbsInstance": str,
}
SECURITY_GROUP_SHAPE: Final = {
    "RequestId": str,
    "Items": {
        "EcsSecurityGroupRelation": [{"SecurityGroupId": str, "RegionId": str, "NetType": str}]
    },
}
INSTANCE_SSL_SHAPE: Final = {
    "RequestId": str,
    "InstanceId": str,
    "SSLEnabled": str,
    "CertCommonName": str,
    "SSLExpiredTime": str,
}
SECURITY_IPS_SHAPE: Final = {
    "RequestId": str,
    "SecurityIpGroups": {
        "SecurityIpGroup": [
            {"SecurityIpGroupName": str, "SecurityIpGroupAttribute": str, "SecurityIpList": str}
        ]
    },
}


# --------------------------------------------------------------------------- time and loops


@dataclass(frozen=True)
class Pace:
    """The provider's durations, scaled for tests (see the module docstring)."""

    scale: float = 0.01
    max_timeout: float = 45.0

    def sleep(self, provider_seconds: float) -> None:
        time.sleep(provider_seconds * self.scale)

    def timeout(self, provider_seconds: float) -> float:
        return min(provider_seconds, self.max_timeout)


def incremental_wait(pace: Pace, first: float, increase: float) -> Callable[[], None]:
    """common.go ``incrementalWait``: ``first``, then ``increase`` each time (its Go code
    resets ``waitTime`` on every call, so it never grows further)."""
    count = 0

    def wait() -> None:
        nonlocal count
        count += 1
        pace.sleep(first if count == 1 else increase)

    return wait


class Retryable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def retry(pace: Pace, timeout: float, attempt: Callable[[], T]) -> T:
    """helper/resource ``Retry``: ``attempt`` raises ``Retryable`` to go again; anything
    else, or the timeout, ends it (with the last cause). Between attempts its own
    StateChangeConf waits 100 ms doubling, at least 500 ms, at most 10 s (scaled)."""
    deadline = time.monotonic() + pace.timeout(timeout)
    wait = 0.1
    last: Retryable | None = None
    for _round in range(MAX_ROUNDS):
        try:
            return attempt()
        except Retryable as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        wait = min(max(wait * 2, 0.5), 10.0)
        pace.sleep(wait)
    assert last is not None
    raise last.cause


Refresh = Callable[[], tuple[Any, str]]


def wait_for_state(
    pace: Pace,
    refresh: Refresh,
    target: list[str],
    *,
    timeout: float,
    delay: float,
    pending: tuple[str, ...] = (),
    min_timeout: float = 3.0,
) -> Any:
    """helper/resource ``StateChangeConf.WaitForState`` as ``BuildStateConf`` sets it up.

    ``refresh`` answers ``(object, state)``; ``object is None`` means not found. An
    empty ``target`` is reached when the object is not found.
    """
    pace.sleep(delay)
    deadline = time.monotonic() + pace.timeout(timeout)
    wait, not_found, state = 0.1, 0, None
    for _round in range(MAX_ROUNDS):
        result, state = refresh()
        if result is None:
            if not target:
                return None
            not_found += 1
            if not_found > NOT_FOUND_CHECKS:
                raise WaitError(f"couldn't find resource ({not_found} retries)")
        else:
            not_found = 0
            if state in target:
                return result
            if pending and state not in pending:
                raise WaitError(f"unexpected state {state!r}, wanted target {target}")
        if time.monotonic() >= deadline:
            break
        wait = min(max(wait * 2, min_timeout), 10.0)
        pace.sleep(wait)
    raise WaitError(f"timeout while waiting for state to become {target} (last {state!r})")


def client_token(action: str) -> str:
    """common.go ``buildClientToken``: ``TF-<action>-<unix>-<uuid>``, at most 64 characters."""
    token = f"TF-{action}-{int(time.time())}-{uuid.uuid4()}".strip()
    return token[:64]


# --------------------------------------------------------------------------- the provider


@dataclass
class Provider:
    """The provider's connection: both wires, its region, the pace and the call log."""

    tea: TeaRpc
    go: GoSdk
    region: str
    pace: Pace
    log: CallLog

    @classmethod
    def connect(
        cls,
        endpoint: str,
        access_key_id: str,
        secret: str,
        region: str,
        pace: Pace | None = None,
    ) -> Provider:
        log = CallLog()
        return cls(
            TeaRpc(endpoint, access_key_id, secret, region, log),
            GoSdk(endpoint, access_key_id, secret, region, log),
            region,
            pace or Pace(),
            log,
        )

    def close(self) -> None:
        self.tea.close()
        self.go.close()

    def rpc_post(
        self,
        action: str,
        body: Mapping[str, Any],
        *,
        timeout: float,
        retry_if: Callable[[BaseException], bool] = need_retry,
        wait_first: float = 3.0,
        wait_increase: float = 5.0,
    ) -> dict[str, Any]:
        """``resource.Retry`` around ``client.RpcPost``, retrying what ``retry_if`` says."""
        wait = incremental_wait(self.pace, wait_first, wait_increase)

        def attempt() -> dict[str, Any]:
            try:
                return self.tea.post(action, body)
            except (TeaSdkError, httpx.TransportError) as exc:
                if retry_if(exc):
                    wait()
                    raise Retryable(exc) from exc
                raise

        return retry(self.pace, timeout, attempt)

    def go_call(
        self,
        action: str,
        params: Mapping[str, Any],
        *,
        timeout: float,
        retry_codes: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """``resource.Retry`` around a Go SDK call (``IsExpectedErrors(retry_codes) ||
        NeedRetry``), as the R_kvstoreService describes do it; no retry when ``timeout`` is 0."""
        if not timeout:
            return self.go.call(action, params)
        wait = incremental_wait(self.pace, 3.0, 3.0)

        def attempt() -> dict[str, Any]:
            try:
                return self.go.call(action, params)
            except (GoServerError, httpx.TransportError) as exc:
                if is_expected_errors(exc, list(retry_codes)) or need_retry(exc):
                    wait()
                    raise Retryable(exc) from exc
                raise

        return retry(self.pace, timeout, attempt)


def describe_for_read(
    describe: Callable[[str], dict[str, Any]], rid: str, new: bool
) -> dict[str, Any] | None:
    """The start of every Read: not found drops the resource from the state, except right
    after its own Create (``d.IsNewResource()``), where it is an error."""
    try:
        return describe(rid)
    except (ResourceNotFound, TeaSdkError) as exc:
        if not new and not_found_error(exc):
            return None
        raise


# ------------------------------------------------------------------ alicloud_kvstore_account


@dataclass(frozen=True)
class AccountConfig:
    """An ``alicloud_kvstore_account`` block (None: not set)."""

    instance_id: str
    account_name: str
    account_password: str
    account_privilege: str | None = None
    description: str | None = None
    account_type: str | None = None


def account_id(instance_id: str, account_name: str) -> str:
    return f"{instance_id}:{account_name}"


class AccountResource:
    """resource_alicloud_kvstore_account.go, call for call."""

    CREATE_TIMEOUT: Final = 6 * 60.0
    UPDATE_TIMEOUT: Final = 7 * 60.0
    DELETE_TIMEOUT: Final = 5 * 60.0

    def __init__(self, provider: Provider) -> None:
        self.p = provider
        self.ignored_delete_errors: list[ApiFailure] = []  # DeleteAccount errors taken as gone
        self._lock = threading.Lock()

    # -- RedisServiceV2
    def describe(self, rid: str) -> dict[str, Any]:
        """``DescribeRedisAccount``: one account, or ResourceNotFound."""
        instance_id, name = rid.split(":")
        body = {"AccountName": name, "InstanceId": instance_id, "RegionId": self.p.region}
        try:
            response = self.p.rpc_post("DescribeAccounts", body, timeout=60.0)
        except TeaSdkError as exc:
            if is_expected_errors(exc, ["InvalidInstanceId.NotFound"]):
                raise ResourceNotFound(rid) from exc
            raise
        accounts = response["Accounts"]["Account"]  # jsonpath $.Accounts.Account[*]
        if not isinstance(accounts, list):
            raise AssertionError(f"Accounts.Account is not a list: {response!r}")
        if not accounts:
            raise ResourceNotFound(rid)
        first: dict[str, Any] = accounts[0]
        return first

    def state_refresh(self, rid: str) -> Refresh:
        """``RedisAccountStateRefreshFunc(id, "AccountStatus")``: not found is state ""."""

        def refresh() -> tuple[Any, str]:
            try:
                obj = self.describe(rid)
            except (ResourceNotFound, TeaSdkError) as exc:
                if not_found_error(exc):
                    return {}, ""  # a nil map, but a non-nil interface: "found", state ""
                raise
            status = obj.get("AccountStatus")
            return obj, "<nil>" if status is None else str(status)

        return refresh

    # -- CRUD
    def create(self, config: AccountConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "AccountName": config.account_name,
            "InstanceId": config.instance_id,
            "RegionId": self.p.region,
            "ClientToken": client_token("CreateAccount"),
        }
        if config.account_privilege:
            body["AccountPrivilege"] = config.account_privilege
        if config.description:
            body["AccountDescription"] = config.description
        body["AccountPassword"] = config.account_password
        if config.account_type:
            body["AccountType"] = config.account_type

        def retry_if(exc: BaseException) -> bool:
            expected = ["IncorrectDBInstanceState", "OperationDeniedDBStatus"]
            return is_expected_errors(exc, expected) or need_retry(exc)

        response = self.p.rpc_post(
            "CreateAccount",
            body,
            timeout=self.CREATE_TIMEOUT,
            retry_if=retry_if,
            wait_increase=5.0,
        )
        rid = f"{response.get('InstanceId')}:{response.get('AcountName')}"
        wait_for_state(
            self.p.pace,
            self.state_refresh(rid),
            ["Available"],
            timeout=self.CREATE_TIMEOUT,
            delay=60.0,
        )
        state = self._update(rid, None, config)
        assert state is not None, f"{rid} vanished right after create"
        return state

    def read(
        self, rid: str, config: AccountConfig | None, *, new: bool = False
    ) -> dict[str, Any] | None:
        """The state after Read; None when the provider drops it from the state."""
        obj = describe_for_read(self.describe, rid, new)
        if obj is None:
            return None
        privileges = (obj.get("DatabasePrivileges") or {}).get("DatabasePrivilege") or []
        state: dict[str, Any] = {
            "id": rid,
            "account_type": obj.get("AccountType"),
            "description": obj.get("AccountDescription"),
            "status": obj.get("AccountStatus"),
            "account_name": obj.get("AccountName"),
            "instance_id": obj.get("InstanceId"),
            # Not read back: the configured value stays in the state.
            "account_password": config.account_password if config else None,
        }
        if privileges:
            state["account_privilege"] = privileges[0]["AccountPrivilege"]
        return state

    def update(self, rid: str, old: AccountConfig, new: AccountConfig) -> dict[str, Any] | None:
        return self._update(rid, old, new)

    def _update(
        self, rid: str, old: AccountConfig | None, new: AccountConfig
    ) -> dict[str, Any] | None:
        """``resourceAliCloudRedisAccountUpdate``; ``old`` None: the call from Create."""
        instance_id, name = rid.split(":")
        base = {"AccountName": name, "InstanceId": instance_id, "RegionId": self.p.region}
        is_new = old is None
        if not is_new and old and old.account_privilege != new.account_privilege:
            self.p.rpc_post(
                "GrantAccountPrivilege",
                {**base, "AccountPrivilege": new.account_privilege or ""},
                timeout=self.UPDATE_TIMEOUT,
            )
            wait_for_state(
                self.p.pace,
                self.state_refresh(rid),
                ["Available"],
                timeout=self.UPDATE_TIMEOUT,
                delay=120.0,
            )
        if not is_new and old and old.description != new.description:
            self.p.rpc_post(
                "ModifyAccountDescription",
                {**base, "AccountDescription": new.description or ""},
                timeout=self.UPDATE_TIMEOUT,
            )
        if not is_new and old and old.account_password != new.account_password:
            self.p.rpc_post(
                "ResetAccountPassword",
                {**base, "AccountPassword": new.account_password},
                timeout=self.UPDATE_TIMEOUT,
            )
            wait_for_state(
                self.p.pace,
                self.state_refresh(rid),
                ["Available"],
                timeout=self.UPDATE_TIMEOUT,
                delay=120.0,
            )
        return self.read(rid, new, new=is_new)

    def delete(self, rid: str) -> None:
        instance_id, name = rid.split(":")
        body = {"AccountName": name, "InstanceId": instance_id, "RegionId": self.p.region}
        try:
            self.p.rpc_post("DeleteAccount", body, timeout=self.DELETE_TIMEOUT)
        except TeaSdkError as exc:
            gone = ["InvalidAccountName.NotFound", "InvalidInstanceId.NotFound"]
            if is_expected_errors(exc, gone) or not_found_error(exc):
                with self._lock:
                    self.ignored_delete_errors.append(exc)
                return
            raise
        wait_for_state(
            self.p.pace,
            self.state_refresh(rid),
            [""],
            timeout=self.DELETE_TIMEOUT,
            delay=5.0,
        )

    def import_(self, rid: str) -> dict[str, Any] | None:
        """``ImportStatePassthrough``: the id alone, then Read."""
        return self.read(rid, None)


def account_diff(config: AccountConfig, state: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What ``terraform plan`` would change: configured attributes that differ from the
    state (an unset Optional+Computed one takes the state's value; a Terraform string
    null and "" are the same)."""
    wanted = {
        "instance_id": config.instance_id,
        "account_name": config.account_name,
        "account_password": config.account_password,
        "account_privilege": config.account_privilege,
        "account_type": config.account_type,
        "description": config.description or "",  # Optional, not Computed
    }
    diff = {}
    for key, value in wanted.items():
        if value is None:  # Computed and not configured
            continue
        have = state.get(key)
        if (have or "") != value:
            diff[key] = (have, value)
    return diff


def kvstore_accounts_data_source(
    provider: Provider,
    instance_id: str,
    *,
    account_name: str | None = None,
    name_regex: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """data_source_alicloud_kvstore_accounts.go [go-sdk]: ids, names, accounts."""
    raw = provider.go.call(
        "DescribeAccounts", {"InstanceId": instance_id, "AccountName": account_name}
    )
    response = go_unmarshal(raw, DESCRIBE_ACCOUNTS_SHAPE)
    pattern = re.compile(name_regex) if name_regex else None
    ids, names, accounts = [], [], []
    for item in response["Accounts"]["Account"]:
        if pattern and not pattern.search(item["AccountName"]):
            continue
        if status and status != item["AccountStatus"]:
            continue
        rid = account_id(item["InstanceId"], item["AccountName"])
        mapping = {
            "id": rid,
            "account_name": item["AccountName"],
            "account_type": item["AccountType"],
            "description": item["AccountDescription"],
            "instance_id": item["InstanceId"],
            "status": item["AccountStatus"],
        }
        privileges = item["DatabasePrivileges"]["DatabasePrivilege"]
        if privileges:
            mapping["account_privilege"] = privileges[0]["AccountPrivilege"]
        ids.append(rid)
        names.append(item["AccountName"])
        accounts.append(mapping)
    return {"ids": ids, "names": names, "accounts": accounts}


# ----------------------------------------------------------------- alicloud_kvstore_instance


@dataclass(frozen=True)
class InstanceConfig:
    """An ``alicloud_kvstore_instance`` block (schema defaults filled in)."""

    db_instance_name: str
    password: str
    instance_class: str
    engine_version: str
    zone_id: str
    node_type: str | None = None
    payment_type: str = "PostPaid"
    instance_type: str = "Redis"  # Default
    auto_renew_period: int = 1  # Default
    auto_use_coupon: bool = False  # Default
    global_instance: bool = False  # Default
    vpc_auth_mode: str = "Open"  # Default
    config: Mapping[str, str] | None = None
    # What rkvstore refuses (issue 11, item 3); None: not set (Optional + Computed).
    vswitch_id: str | None = None
    # The provider asks the VPC API (DescribeVSwitch) for the VSwitch's VPC; no such API
    # here, so the replay takes the answer from the configuration.
    vpc_id: str | None = None
    security_group_id: str | None = None
    ssl_enable: str | None = None  # Disable, Enable, Update
    backup_period: tuple[str, ...] | None = None
    backup_time: str | None = None
    security_ips: tuple[str, ...] | None = None
    tde_status: str | None = None  # Enabled


class InstanceResource:
    """resource_alicloud_kvstore_instance.go, call for call: a classic pay-as-you-go
    instance, and the VPC, security group, SSL, backup, whitelist and TDE settings as the
    provider sends them (each one rkvstore refuses unless it holds already)."""

    TIMEOUT: Final = 20 * 60.0

    def __init__(self, provider: Provider) -> None:
        self.p = provider
        self.states: dict[str, dict[str, Any]] = {}  # the last read of each id (d's state)

    # -- R_kvstoreService
    def describe(self, iid: str) -> dict[str, Any]:
        """``DescribeKvstoreInstance``."""
        body = {"RegionId": self.p.region, "InstanceId": iid}
        try:
            response = self.p.rpc_post(
                "DescribeInstanceAttribute", body, timeout=300.0, wait_increase=3.0
            )
        except TeaSdkError as exc:
            if is_expected_errors(exc, ["InvalidInstanceId.NotFound"]):
                raise ResourceNotFound(iid) from exc
            raise
        items = (response.get("Instances") or {}).get("DBInstanceAttribute")
        if not isinstance(items, list) or not items or str(items[0].get("InstanceId")) != iid:
            raise ResourceNotFound(iid)
        first: dict[str, Any] = items[0]
        return first

    def state_refresh(self, iid: str, field_name: str = "InstanceStatus") -> Refresh:
        """``KvstoreInstanceStateRefreshFunc`` / ``KvstoreInstanceAttributeRefreshFunc``."""

        def refresh() -> tuple[Any, str]:
            try:
                obj = self.describe(iid)
            except (ResourceNotFound, TeaSdkError) as exc:
                if not_found_error(exc):
                    return None, ""
                raise
            value = obj.get(field_name)
            return obj, "<nil>" if value is None else go_value(value)

        return refresh

    def wait_status(self, iid: str, delay: float) -> None:
        wait_for_state(
            self.p.pace, self.state_refresh(iid), ["Normal"], timeout=self.TIMEOUT, delay=delay
        )

    # -- Create
    def create(self, config: InstanceConfig) -> dict[str, Any]:
        body: dict[str, Any] = {
            "RegionId": self.p.region,
            "Token": client_token("CreateInstance"),
            "NetworkType": "CLASSIC",
            "AutoRenewPeriod": str(config.auto_renew_period),
            "AutoUseCoupon": go_value(config.auto_use_coupon),
            "InstanceName": config.db_instance_name,
            "EngineVersion": config.engine_version,
            "GlobalInstance": config.global_instance,
            "InstanceClass": config.instance_class,
            "InstanceType": config.instance_type,
            "NodeType": config.node_type,
            "Password": config.password,
            "ChargeType": config.payment_type,
            "ZoneId": config.zone_id,
        }
        if config.vswitch_id:  # after DescribeVSwitch (VPC API) answered its VpcId
            body["NetworkType"] = "VPC"
            body["VpcId"] = config.vpc_id
            body["VSwitchId"] = config.vswitch_id
        response = self.p.rpc_post(
            "CreateInstance",
            body,
            timeout=self.TIMEOUT,
            retry_if=no_code_regex_retry,
            wait_increase=3.0,
        )
        iid = str(response["InstanceId"])
        self.wait_status(iid, delay=180.0)
        state = self._update(iid, None, config)
        assert state is not None, f"{iid} vanished right after create"
        return state

    # -- Read
    def read(
        self, iid: str, config: InstanceConfig | None, *, new: bool = False
    ) -> dict[str, Any] | None:
        """``resourceAliCloudKvstoreInstanceRead``: the state, or None when dropped."""
        obj = describe_for_read(self.describe, iid, new)
        if obj is None:
            return None
        state: dict[str, Any] = {"id": iid, "enable_public": False, "connection_string": ""}

        for net in self.net_info(iid):
            if go_value(net.get("DBInstanceNetType")) == "0":
                state["enable_public"] = True
                state["connection_string"] = net.get("ConnectionString")
            if go_value(net.get("DBInstanceNetType")) == "2" and "IsSlaveProxy" not in net:
                state["private_connection_port"] = net.get("Port")

        state["bandwidth"] = obj.get("Bandwidth")
        state["capacity"] = obj.get("Capacity")
        wanted_config = dict(config.config) if config and config.config else {}
        raw_config = obj.get("Config")
        if raw_config != "":
            # convertJsonStringToMap(fmt.Sprint(Config)): absent prints "<nil>", not JSON.
            text = "<nil>" if raw_config is None else go_value(raw_config)
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise AssertionError(f"Config is not JSON: {raw_config!r}") from exc
            if not isinstance(parsed, dict):
                raise AssertionError(f"Config is not a JSON object: {raw_config!r}")
            state["config"] = {
                k: go_value(v) for k, v in parsed.items() if not wanted_config or k in wanted_config
            }
        state["connection_domain"] = obj.get("ConnectionDomain")
        state["db_instance_name"] = obj.get("InstanceName")
        state["instance_name"] = obj.get("InstanceName")
        state["end_time"] = obj.get("EndTime")
        state["engine_version"] = obj.get("EngineVersion")
        state["instance_class"] = obj.get("RealInstanceClass")
        state["instance_release_protection"] = obj.get("InstanceReleaseProtection")
        state["instance_type"] = obj.get("InstanceType")
        state["maintain_end_time"] = obj.get("MaintainEndTime")
        state["maintain_start_time"] = obj.get("MaintainStartTime")
        state["node_type"] = obj.get("NodeType")
        state["payment_type"] = obj.get("ChargeType")
        state["instance_charge_type"] = obj.get("ChargeType")
        state["private_ip"] = obj.get("PrivateIp")
        state["qps"] = obj.get("QPS")
        state["resource_group_id"] = obj.get("ResourceGroupId")
        state["shard_count"] = obj.get("ShardCount")
        state["read_only_count"] = obj.get("ReadOnlyCount")
        state["slave_read_only_count"] = obj.get("SlaveReadOnlyCount")
        state["replica_count"] = obj.get("ReplicaCount")
        state["slave_replica_count"] = obj.get("SlaveReplicaCount")
        state["status"] = obj.get("InstanceStatus")
        tags = obj.get("Tags")
        if isinstance(tags, dict):
            state["tags"] = {t["Key"]: t["Value"] for t in tags.get("Tag") or []}
        state["vswitch_id"] = obj.get("VSwitchId")
        state["vpc_auth_mode"] = obj.get("VpcAuthMode")
        state["zone_id"] = obj.get("ZoneId")
        state["availability_zone"] = obj.get("ZoneId")
        state["secondary_zone_id"] = obj.get("SecondaryZoneId")

        backup = self._go_describe("DescribeBackupPolicy", iid, BACKUP_POLICY_SHAPE)
        state["backup_period"] = backup["PreferredBackupPeriod"].split(",")
        state["backup_time"] = backup["PreferredBackupTime"]

        groups = self._go_describe("DescribeSecurityGroupConfiguration", iid, SECURITY_GROUP_SHAPE)
        relations = groups["Items"]["EcsSecurityGroupRelation"]
        state["security_group_id"] = ",".join(r["SecurityGroupId"] for r in relations)

        try:
            ssl = self._go_describe("DescribeInstanceSSL", iid, INSTANCE_SSL_SHAPE)
        except GoServerError as exc:
            if not is_expected_errors(exc, ["IncorrectEngineVersion"]):
                raise
        else:
            state["ssl_enable"] = ssl["SSLEnabled"]

        ips = self._security_ip_group(iid, config)
        state["security_ip_group_attribute"] = ips["SecurityIpGroupAttribute"]
        state["security_ip_group_name"] = ips["SecurityIpGroupName"]
        state["security_ips"] = ips["SecurityIpList"].split(",")

        if go_value(obj.get("ChargeType")) == "PrePaid":
            raise AssertionError("the replay covers PostPaid instances only")

        # refreshParameters: "parameters" is not configured, so no call.
        state["parameters"] = []

        support_tde = obj.get("IsSupportTDE")
        if not isinstance(support_tde, bool):  # object["IsSupportTDE"].(bool)
            raise ProviderPanic(
                f"interface conversion: interface {{}} is {type(support_tde).__name__}, "
                f"not bool (IsSupportTDE={support_tde!r})"
            )
        if support_tde:
            tde = self.p.rpc_post("DescribeInstanceTDEStatus", {"InstanceId": iid}, timeout=300.0)
            state["tde_status"] = tde.get("TDEStatus")
            key = self.p.rpc_post("DescribeEncryptionKey", {"InstanceId": iid}, timeout=300.0)
            state["encryption_key"] = key.get("EncryptionKey")

        engine = self.p.rpc_post(
            "DescribeEngineVersion", {"InstanceId": iid}, timeout=300.0, wait_increase=3.0
        )
        if not isinstance(engine, dict):  # jsonpath "$" then .(map[string]interface{})
            raise ProviderPanic(f"DescribeEngineVersion answered {engine!r}")
        state["is_auto_upgrade_open"] = engine.get("IsAutoUpgradeOpen")
        # Not read back: the configured values stay in the state.
        if config is not None:
            state["password"] = config.password
            state["auto_renew_period"] = config.auto_renew_period
        self.states[iid] = state
        return state

    def net_info(self, iid: str) -> list[dict[str, Any]]:
        """``DescribeKvStoreInstanceNetInfo``: a non-empty list, or the read fails."""
        response = self.p.rpc_post(
            "DescribeDBInstanceNetInfo", {"InstanceId": iid}, timeout=300.0, wait_increase=3.0
        )
        items = (response.get("NetInfoItems") or {}).get("InstanceNetInfo")
        if not isinstance(items, list) or not items:
            raise ResourceNotFound(f"{iid}: NetInfoItems.InstanceNetInfo is empty: {response!r}")
        return items

    def _go_describe(self, action: str, iid: str, shape: Shape) -> dict[str, Any]:
        """The R_kvstoreService describes on the Go SDK (LockTimeout and NeedRetry retried;
        ``InvalidDBInstance.NotFound`` is not found)."""
        try:
            raw = self.p.go_call(
                action,
                {"RegionId": self.p.region, "InstanceId": iid},
                timeout=300.0,
                retry_codes=("LockTimeout",),
            )
        except GoServerError as exc:
            if is_expected_errors(exc, ["InvalidDBInstance.NotFound"]):
                raise ResourceNotFound(iid) from exc
            raise
        decoded: dict[str, Any] = go_unmarshal(raw, shape)
        return decoded

    def _security_ip_group(self, iid: str, config: InstanceConfig | None) -> dict[str, Any]:
        """``DescribeSecurityIps``: the group named like the configuration (default
        ``default``), skipping Alibaba's own groups; else the first; else an empty group."""
        response = self._go_describe("DescribeSecurityIps", iid, SECURITY_IPS_SHAPE)
        groups = response["SecurityIpGroups"]["SecurityIpGroup"]
        empty = {"SecurityIpGroupName": "", "SecurityIpGroupAttribute": "", "SecurityIpList": ""}
        if not groups:
            return empty
        wanted = "default"
        for group in groups:
            if group["SecurityIpGroupName"] in ("ali_dms_group", "hdm_security_ips"):
                continue
            if group["SecurityIpGroupName"] == wanted:
                return dict(group)
        return dict(groups[0])

    # -- Update
    def update(self, iid: str, old: InstanceConfig, new: InstanceConfig) -> dict[str, Any] | None:
        return self._update(iid, old, new)

    def _update(
        self, iid: str, old: InstanceConfig | None, new: InstanceConfig
    ) -> dict[str, Any] | None:
        """``resourceAliCloudKvstoreInstanceUpdate``, in its order, for config, security
        group, SSL, backup policy, name and password, whitelist and TDE; ``old`` None: the
        call from Create (IsNewResource). A refusal ends it, as the provider returns it."""
        is_new = old is None
        prior = {} if is_new else self.states.get(iid, {})
        old_config = dict(old.config or {}) if old else {}
        new_config = dict(new.config or {})
        if new_config != old_config:  # d.HasChange("config"), on create too
            self.p.go_call(
                "ModifyInstanceConfig",
                {
                    "InstanceId": iid,
                    "Config": json.dumps(new_config, sort_keys=True, separators=(",", ":")),
                },
                timeout=0,
            )
            self.wait_status(iid, delay=120.0)
        if _has_change(prior, "security_group_id", new.security_group_id):
            self.p.go_call(
                "ModifySecurityGroupConfiguration",
                {"DBInstanceId": iid, "SecurityGroupId": new.security_group_id},
                timeout=0,
            )
            self.wait_status(iid, delay=120.0)
        if _has_change(prior, "ssl_enable", new.ssl_enable):
            try:
                self.p.go_call(
                    "ModifyInstanceSSL",
                    {"InstanceId": iid, "SSLEnabled": new.ssl_enable},
                    timeout=0,
                )
            except GoServerError as exc:
                if not is_expected_errors(exc, ["SSLDisableStateExistsFault"]):
                    raise
            self.wait_status(iid, delay=300.0)
        period_changed = _has_change(prior, "backup_period", new.backup_period)
        if period_changed or _has_change(prior, "backup_time", new.backup_time):
            # d.Get: the configured value, else the state's (what the last read answered).
            period = new.backup_period or prior.get("backup_period") or []
            self.p.go_call(
                "ModifyBackupPolicy",
                {
                    "InstanceId": iid,
                    "PreferredBackupPeriod": ",".join(period),
                    "PreferredBackupTime": new.backup_time or prior.get("backup_time") or "",
                },
                timeout=0,
            )
            self.wait_status(iid, delay=60.0)
        name_changed = (
            not is_new and old is not None and old.db_instance_name != new.db_instance_name
        )
        password_changed = not is_new and old is not None and old.password != new.password
        if name_changed or password_changed:
            params: dict[str, Any] = {"InstanceId": iid, "InstanceName": new.db_instance_name}
            if password_changed:
                params["NewPassword"] = new.password
            self.p.go_call("ModifyInstanceAttribute", params, timeout=0)
            self.wait_status(iid, delay=120.0)
        if _has_change(prior, "security_ips", new.security_ips):
            ips = new.security_ips or prior.get("security_ips") or []
            self.p.go_call(
                "ModifySecurityIps",
                {"InstanceId": iid, "ModifyMode": "Cover", "SecurityIps": ",".join(ips)},
                timeout=0,
            )
            self.wait_status(iid, delay=1.0)
        if _has_change(prior, "tde_status", new.tde_status):
            self.p.rpc_post(
                "ModifyInstanceTDE",
                {"InstanceId": iid, "TDEStatus": new.tde_status},
                timeout=self.TIMEOUT,
                wait_increase=3.0,
            )
            self.wait_status(iid, delay=5.0)
        return self.read(iid, new, new=is_new)

    # -- Delete
    def delete(self, iid: str) -> None:
        try:
            instance = self.describe(iid)
        except (ResourceNotFound, TeaSdkError) as exc:
            if not_found_error(exc):
                return
            raise
        if go_value(instance.get("ChargeType")) == "PrePaid":
            return  # only dropped from the state
        body = {"InstanceId": iid, "RegionId": self.p.region}

        def retry_if(exc: BaseException) -> bool:
            return no_code_regex_retry(exc) or need_retry(exc)

        try:
            self.p.rpc_post(
                "DeleteInstance", body, timeout=self.TIMEOUT, retry_if=retry_if, wait_increase=3.0
            )
        except TeaSdkError as exc:
            if is_expected_errors(exc, ["InvalidInstanceId.NotFound"]):
                return
            raise
        wait_for_state(self.p.pace, self.state_refresh(iid), [], timeout=self.TIMEOUT, delay=60.0)

    def import_(self, iid: str) -> dict[str, Any] | None:
        return self.read(iid, None)


def _has_change(prior: Mapping[str, Any], key: str, wanted: str | tuple[str, ...] | None) -> bool:
    """``d.HasChange`` for an Optional attribute: unset keeps the state's value; a set
    (TypeSet) compares as a set; on create (no state) anything set is a change."""
    if wanted is None:
        return False
    have = prior.get(key)
    if isinstance(wanted, tuple):
        return set(wanted) != set(have or [])
    return wanted != have


def instance_diff(config: InstanceConfig, state: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """What ``terraform plan`` would change for the attributes this configuration sets, and
    for the Optional (not Computed) ones it leaves unset, which must read as their zero."""
    wanted: dict[str, Any] = {
        "db_instance_name": config.db_instance_name,
        "password": config.password,
        "instance_class": config.instance_class,
        "engine_version": config.engine_version,
        "zone_id": config.zone_id,
        "payment_type": config.payment_type,
        "instance_type": config.instance_type,
        "vpc_auth_mode": config.vpc_auth_mode,
        "auto_renew_period": config.auto_renew_period,
    }
    if config.node_type is not None:
        wanted["node_type"] = config.node_type
    if config.config is not None:
        wanted["config"] = dict(config.config)
    zero: dict[str, Any] = {
        "instance_release_protection": False,
        "read_only_count": 0,
        "slave_read_only_count": 0,
        "secondary_zone_id": "",
        "vswitch_id": "",
        "security_ip_group_attribute": "",
        "security_group_id": "",
        "tags": {},
    }
    diff: dict[str, tuple[Any, Any]] = {}
    for key, value in wanted.items():
        if state.get(key) != value:
            diff[key] = (state.get(key), value)
    for key, value in zero.items():
        have = state.get(key)
        if have is not None and have != value:
            diff[key] = (have, value)
    return diff
