"""Issue 13, item 3: a deployment that listens on TLS only, registered and managed over TLS.

A master and a replica of the test's own, TLS only (``--port 0 --tls-port``,
client certificates required, replication over TLS), with certificates made
here (``cryptography``). Everything goes through the official SDK
(``alibabacloud-r-kvstore20150101``); after each change the account's password
is checked on every node, over TLS.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from alibabacloud_tea_openapi import utils_models as open_api_models
from alibabacloud_tea_openapi.exceptions import ClientException
from darabonba.runtime import RuntimeOptions

from tests.api.sdk_clients import new_sdk_client, rpc_params
from tests.conftest import remember_secret
from tests.integration.test_register_nodes import BareRedis, bare_redis, pings, tls_client
from tests.integration.test_resilience import (
    SYSTEM_REDIS,
    files_holding,
    new_password,
    serving,
    wait_for,
)
from tests.tls_certs import SERVER_NAME, TlsFiles, make_tls_files

pytestmark = pytest.mark.skipif(not SYSTEM_REDIS.exists(), reason=f"no {SYSTEM_REDIS}")


def register(sdk: NewClient, params: dict[str, str]) -> dict[str, Any]:
    """RegisterInstance (an extension: no typed method) through the SDK's ``call_api``,
    the PEM parameters in the form body."""
    request = open_api_models.OpenApiRequest(body=params)
    result = sdk.call_api(rpc_params("RegisterInstance"), request, RuntimeOptions())
    body: dict[str, Any] = result["body"]
    return body


def tls_params(files: TlsFiles, endpoint: str, admin: str) -> dict[str, str]:
    return {
        "Endpoint": endpoint,
        "AdminUserName": "default",
        "AdminPassword": admin,
        "TlsCaCertificate": files.text(files.ca),
        "TlsClientCertificate": files.text(files.client_cert),
        "TlsClientKey": files.text(files.client_key),
        "TlsServerName": SERVER_NAME,
    }


def sdk_error(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientException) as caught:
        call()
    body = caught.value.data or {}
    return int(caught.value.status_code), str(body["Code"]), str(body["Message"])


def on_every_node(nodes: list[BareRedis], user: str, password: str) -> bool:
    return all(pings(node, password, user) for node in nodes)


@pytest.mark.slow
def test_a_tls_only_deployment_is_registered_and_managed_over_tls(
    data_dir: Path, tmp_path: Path
) -> None:
    files = make_tls_files(tmp_path / "tls")
    other = make_tls_files(
        tmp_path / "other-ca", "another CA"
    )  # a CA that signed nothing of theirs
    remember_secret(files.text(files.client_key))  # in no file rkvstore writes
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    root = tmp_path / "nodes"
    root.mkdir()
    with contextlib.ExitStack() as stack:
        master = stack.enter_context(
            bare_redis(root, "master", ["--requirepass", admin], admin, files)
        )
        replica_options = ["--requirepass", admin, "--masterauth", admin, "--tls-replication"]
        replica_options += ["yes", "--replicaof", "127.0.0.1", str(master.port)]
        replica = stack.enter_context(bare_redis(root, "replica", replica_options, admin, files))
        nodes = [master, replica]

        def linked() -> bool:
            with contextlib.closing(tls_client(master, None, admin)) as conn:
                return int(conn.info("replication")["connected_slaves"]) == 1

        wait_for("replica linked over TLS", linked, 15)
        server = stack.enter_context(serving(data_dir))
        sdk = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
        params = tls_params(files, master.endpoint, admin)

        wrong_ca = {**params, "TlsCaCertificate": other.text(other.ca)}
        assert sdk_error(lambda: register(sdk, wrong_ca)) == (
            400,
            "InvalidEndpoint.TLSHandshakeFailed",
            f"The TLS handshake with Redis node {master.endpoint} failed (certificate verify "
            "failed: self-signed certificate in certificate chain): check TlsCaCertificate, "
            "TlsServerName and the client certificate, and that the port speaks TLS.",
        )
        no_ca = {k: v for k, v in params.items() if k != "TlsCaCertificate"}
        assert sdk_error(lambda: register(sdk, no_ca)) == (
            400,
            "InvalidParameter.Tls",
            'The specified parameter "TlsClientCertificate" is not valid: it needs '
            "TlsCaCertificate.",
        )

        body = register(sdk, params)
        instance_id = body["InstanceId"]
        assert (body["NodeCount"], body["Port"]) == (2, master.port)

        first = new_password()
        sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=instance_id, account_name="demo", account_password=first
            )
        )
        assert on_every_node(nodes, "demo", first)
        second = new_password()
        sdk.reset_account_password(
            kv_models.ResetAccountPasswordRequest(
                instance_id=instance_id, account_name="demo", account_password=second
            )
        )
        assert on_every_node(nodes, "demo", second)
        assert not any(pings(node, first, "demo") for node in nodes)
        third = new_password()
        sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                instance_id=instance_id,
                account_name="demo",
                old_account_password=second,
                new_account_password=third,
            )
        )
        assert on_every_node(nodes, "demo", third)
        assert not any(pings(node, second, "demo") for node in nodes)

        # The Describes read the nodes over TLS too.
        ssl = sdk.describe_instance_ssl(
            kv_models.DescribeInstanceSSLRequest(instance_id=instance_id)
        )
        assert ssl.body.sslenabled == "Enable"

        sdk.delete_instance(kv_models.DeleteInstanceRequest(instance_id=instance_id))
        assert on_every_node(nodes, "demo", third)  # the deployment's accounts stay
        key_line = files.text(files.client_key).splitlines()[1]
        assert files_holding(data_dir, key_line) == []
