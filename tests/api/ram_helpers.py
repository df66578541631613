"""RAM through the official SDKs, for the API tests: clients, principals, policies, errors.

Not a test module. ``alibabacloud-ram20150501`` is pointed at a local rkvstore the
way docs/ram-wire.md §1 says (``endpoint="127.0.0.1:port"``, ``protocol="http"``);
the R-kvstore calls a RAM user makes go through the new R-kvstore SDK (V3).
Every AccessKeySecret a test receives goes through ``remember_secret`` and is
also kept in ``SECRETS_SEEN`` so that a module can scan its own server's files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as KvClient
from alibabacloud_ram20150501 import models as ram_models
from alibabacloud_ram20150501.client import Client as RamClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.models import Config

from tests.api.sdk_clients import new_sdk_client
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server

REGION: Final = "cn-hangzhou"
RAM_VERSION: Final = "2015-05-01"
FORBIDDEN_RAM: Final = (
    "Forbidden.RAM",
    403,
    "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
)
INSTANCE_NOT_FOUND: Final = (
    "InvalidInstanceId.NotFound",
    404,
    "The specified instance is not found.",
)
DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ACCOUNT_ID: Final = re.compile(r"^[1-9]\d{15}$")

# Every AccessKeySecret the tests of this process received (also in USED_SECRETS).
SECRETS_SEEN: set[str] = set()


def keep_secret(value: str) -> str:
    SECRETS_SEEN.add(value)
    return remember_secret(value)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- a server


# These modules make hundreds of calls a second with one root key; the default
# per-key bucket (50/s, burst 100) would answer Throttling.User. Throttling has
# its own tests; here it is only set out of the way.
GENEROUS_RATE: Final = {
    "RKVSTORE_RATE_LIMIT_PER_SECOND": "2000",
    "RKVSTORE_RATE_LIMIT_BURST": "2000",
}


@contextmanager
def ram_server(data_dir: Path) -> Iterator[LiveServer]:
    """A live server on SQLite in ``data_dir`` (scanned for secrets at the end of the run)."""
    ARTIFACT_DIRS.append(data_dir)
    server = start_server(data_dir, extra_env=GENEROUS_RATE)
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- clients


def ram_client(
    endpoint: str,
    key_id: str,
    secret: str,
    *,
    signature_algorithm: str | None = None,
    ca: str | None = None,
) -> RamClient:
    """Plain HTTP; with ``ca`` (a CA bundle's path), HTTPS verified against it."""
    return RamClient(
        Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=endpoint,
            protocol="https" if ca else "http",
            ca=ca,
            region_id=REGION,
            signature_algorithm=signature_algorithm,
        )
    )


@dataclass(frozen=True)
class Principal:
    """A key of some principal (a tenant's root or a RAM user) on one server."""

    endpoint: str
    access_key_id: str
    access_key_secret: str
    user_name: str | None = None  # None: a root key
    account_id: str | None = None
    ca: str | None = None  # the server speaks HTTPS with a certificate of this CA

    def ram(self, *, signature_algorithm: str | None = None) -> RamClient:
        return ram_client(
            self.endpoint,
            self.access_key_id,
            self.access_key_secret,
            signature_algorithm=signature_algorithm,
            ca=self.ca,
        )

    def kv(self) -> KvClient:
        return new_sdk_client(self.endpoint, self.access_key_id, self.access_key_secret, ca=self.ca)

    def as_server(self, server: LiveServer) -> LiveServer:
        """``server`` seen with this key (for ``provision`` and ``rpc_client``)."""
        return replace(
            server, access_key_id=self.access_key_id, access_key_secret=self.access_key_secret
        )


def root_of(server: LiveServer) -> Principal:
    ca = None if server.ca is None else str(server.ca)
    return Principal(server.endpoint, server.access_key_id, server.access_key_secret, ca=ca)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Answer:
    """What the new SDK makes of an error answer: enough to compare two answers exactly."""

    status: int
    code: str
    message: str
    detail: dict[str, Any] | None
    body: dict[str, Any]  # the whole error body but its RequestId

    @property
    def triple(self) -> tuple[str, int, str]:
        return (self.code, self.status, self.message)


def answer_of(exc: ClientException) -> Answer:
    body = dict(exc.data or {})
    return Answer(
        status=int(exc.status_code),
        code=str(exc.code),
        message=str(body.get("Message")),
        detail=exc.access_denied_detail,
        body={k: v for k, v in body.items() if k != "RequestId"},
    )


def expect_error(call: Callable[[], Any], error: tuple[str, int, str]) -> Answer:
    """``call`` raises the new SDK's ClientException with ``error``'s code, status and message."""
    with pytest.raises(ClientException) as info:
        call()
    answer = answer_of(info.value)
    assert answer.triple == error, info.value.data
    return answer


def outcome(call: Callable[[], Any]) -> Answer | None:
    """None when ``call`` succeeds, else the error answer."""
    try:
        call()
    except ClientException as exc:
        return answer_of(exc)
    return None


def denial_detail(
    action: str, user: str, account_id: str, kind: str = "ImplicitDeny"
) -> dict[str, str]:
    return {
        "AuthAction": action,
        "AuthPrincipalType": "SubUser",
        "AuthPrincipalDisplayName": user,
        "AuthPrincipalOwnerId": account_id,
        "NoPermissionType": kind,
        "PolicyType": "AccountLevelIdentityBasedPolicy",
    }


def expect_denied(
    call: Callable[[], Any], principal: Principal, action: str, kind: str = "ImplicitDeny"
) -> Answer:
    """Forbidden.RAM with exactly the AccessDeniedDetail api.md §5 gives."""
    answer = expect_error(call, FORBIDDEN_RAM)
    assert principal.user_name is not None and principal.account_id is not None
    assert answer.detail == denial_detail(action, principal.user_name, principal.account_id, kind)
    return answer


# --------------------------------------------------------------------------- policies


def statement(
    actions: str | list[str],
    resources: str | list[str] = "*",
    *,
    effect: str = "Allow",
    condition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    st: dict[str, Any] = {"Effect": effect, "Action": actions, "Resource": resources}
    if condition is not None:
        st["Condition"] = condition
    return st


def document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def instance_arn(instance_id: str, account_id: str = "*") -> str:
    return f"acs:kvstore:*:{account_id}:instance/{instance_id}"


def create_policy(ram: RamClient, doc: str, name: str | None = None) -> str:
    name = name or unique("p")
    ram.create_policy(ram_models.CreatePolicyRequest(policy_name=name, policy_document=doc))
    return name


def attach_to_user(ram: RamClient, user: str, policy: str, policy_type: str = "Custom") -> None:
    ram.attach_policy_to_user(
        ram_models.AttachPolicyToUserRequest(
            policy_type=policy_type, policy_name=policy, user_name=user
        )
    )


def attach_to_group(ram: RamClient, group: str, policy: str, policy_type: str = "Custom") -> None:
    ram.attach_policy_to_group(
        ram_models.AttachPolicyToGroupRequest(
            policy_type=policy_type, policy_name=policy, group_name=group
        )
    )


def new_key(ram: RamClient, user: str) -> tuple[str, str]:
    """CreateAccessKey for ``user``: (id, secret), the secret remembered."""
    key = ram.create_access_key(ram_models.CreateAccessKeyRequest(user_name=user)).body.access_key
    return key.access_key_id, keep_secret(key.access_key_secret)


def make_user(
    root: Principal,
    account_id: str,
    *,
    documents: Iterable[str] = (),
    system: Iterable[str] = (),
    name: str | None = None,
) -> Principal:
    """A RAM user with one key and the given custom documents / system policies attached."""
    ram = root.ram()
    name = name or unique("u")
    ram.create_user(ram_models.CreateUserRequest(user_name=name))
    for doc in documents:
        attach_to_user(ram, name, create_policy(ram, doc))
    for policy in system:
        attach_to_user(ram, name, policy, "System")
    key_id, secret = new_key(ram, name)
    return replace(
        root, access_key_id=key_id, access_key_secret=secret, user_name=name, account_id=account_id
    )


def discover_account_id(root: Principal) -> str:
    """The tenant's account ID, as a denial's AccessDeniedDetail reports it."""
    probe = make_user(root, "?")
    with pytest.raises(ClientException) as info:
        probe.kv().describe_instances(kv_models.DescribeInstancesRequest())
    detail = info.value.access_denied_detail
    assert detail is not None, info.value.data
    account_id = str(detail["AuthPrincipalOwnerId"])
    assert ACCOUNT_ID.match(account_id), account_id
    return account_id


# --------------------------------------------------------------------------- R-kvstore calls


def reset(kv: KvClient, instance_id: str, account: str, password: str) -> None:
    kv.reset_account_password(
        kv_models.ResetAccountPasswordRequest(
            instance_id=instance_id, account_name=account, account_password=password
        )
    )


def describe_accounts(kv: KvClient, instance_id: str) -> Any:
    return kv.describe_accounts(kv_models.DescribeAccountsRequest(instance_id=instance_id)).body


def create_account(kv: KvClient, instance_id: str, name: str, password: str) -> None:
    kv.create_account(
        kv_models.CreateAccountRequest(
            instance_id=instance_id, account_name=name, account_password=password
        )
    )


# --------------------------------------------------------------------------- the CLI


# Two ways to run the CLI: ``python -m rkvstore.cli`` (MODULE) and what the
# ``rkvstore`` console script does (ENTRY_POINT: import, then ``main()``). They
# differ when a command is registered after cli.py's ``if __name__ == "__main__"``
# block; test_tenants.py checks MODULE once, the other tests use ENTRY_POINT.
MODULE: Final = ("-m", "rkvstore.cli")
ENTRY_POINT: Final = ("-c", "import sys; from rkvstore.cli import main; sys.exit(main())")


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    how: tuple[str, ...] = ENTRY_POINT,
) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess (bounded), output as text."""
    return subprocess.run(
        [sys.executable, *how, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def create_tenant(server: LiveServer, name: str | None = None) -> Principal:
    """``rkvstore tenants create NAME --data-dir D --json`` on a running server's data dir."""
    done = run_cli(
        "tenants", "create", name or unique("t"), "--data-dir", str(server.data_dir), "--json"
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    keep_secret(out["AccessKeySecret"])
    return Principal(
        server.endpoint, out["AccessKeyId"], out["AccessKeySecret"], None, out["AccountId"]
    )


# --------------------------------------------------------------------------- secrets at rest


def secrets_in_server_files(data_dir: Path, needles: Iterable[str]) -> list[str]:
    """``file: prefix…`` for every needle found in the server's log or database files."""
    files = [data_dir / "rkvstore.log", data_dir / "server.out", *data_dir.glob("rkvstore.db*")]
    found = []
    for path in files:
        if not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path.name}: {n[:3]}…" for n in needles if n.encode() in data]
    return found
