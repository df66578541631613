"""Issue 13, item 4: a deployment managed by Redis Sentinel, registered through its Sentinels.

A master and a replica (options only, ``requirepass``) and three Sentinels on
loopback. Registered with ``SentinelEndpoints`` and ``SentinelMasterName``
through the official SDK; a failover forced with ``SENTINEL FAILOVER`` is
followed (the new master becomes ``ConnectionDomain``/``Port``, every change
still reaches every node), and so is the old master going away.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models

from tests.api.sdk_clients import new_sdk_client
from tests.conftest import free_port, remember_secret
from tests.integration.test_register_nodes import BareRedis, bare_redis, pings
from tests.integration.test_register_tls import register, sdk_error
from tests.integration.test_resilience import (
    SYSTEM_REDIS,
    connect,
    new_password,
    serving,
    wait_for,
)

pytestmark = pytest.mark.skipif(not SYSTEM_REDIS.exists(), reason=f"no {SYSTEM_REDIS}")

NAME = "mymaster"


@contextlib.contextmanager
def sentinels(root: Path, master: BareRedis, password: str) -> Iterator[list[int]]:
    """Three Sentinels watching ``master`` (quorum 2); their ports. Their config files
    hold ``password`` (auth-pass): ``root`` is not an artifact directory."""
    ports = [free_port() for _ in range(3)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            directory = root / f"sentinel-{port}"
            directory.mkdir()
            conf = directory / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {NAME} 127.0.0.1 {master.port} 2\n"
                f"sentinel auth-pass {NAME} {password}\n"
                f"sentinel down-after-milliseconds {NAME} 1000\n"
                f"sentinel failover-timeout {NAME} 5000\n"
            )
            processes.append(
                subprocess.Popen(
                    [str(SYSTEM_REDIS), str(conf), "--sentinel"],
                    cwd=directory,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        yield ports
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)


def sentinel_says(port: int, *command: str) -> Any:
    with contextlib.closing(connect(port)) as conn:
        return conn.execute_command("SENTINEL", *command)


def role(node: BareRedis, password: str) -> str:
    with contextlib.closing(connect(node.port, None, password)) as conn:
        return str(conn.info("replication")["role"])


@pytest.mark.slow
def test_a_sentinel_deployment_is_registered_and_followed_through_a_failover(
    data_dir: Path, tmp_path: Path
) -> None:
    admin = remember_secret("Adm!" + secrets.token_hex(12))
    root = tmp_path / "nodes"
    root.mkdir()
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(
            bare_redis(root, "first", ["--requirepass", admin, "--masterauth", admin], admin)
        )
        follower = ["--requirepass", admin, "--masterauth", admin]
        follower += ["--replicaof", "127.0.0.1", str(first.port)]
        second = stack.enter_context(bare_redis(root, "second", follower, admin))
        nodes = [first, second]
        ports = stack.enter_context(sentinels(tmp_path, first, admin))

        def sentinels_know_the_replica() -> bool:
            return all(len(sentinel_says(p, "REPLICAS", NAME)) == 1 for p in ports)

        wait_for("Sentinels see the replica", sentinels_know_the_replica, 30)
        server = stack.enter_context(serving(data_dir))
        sdk = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
        listed = ",".join(f"127.0.0.1:{p}" for p in ports)
        params = {
            "SentinelEndpoints": listed,
            "SentinelMasterName": NAME,
            "AdminUserName": "default",
            "AdminPassword": admin,
        }
        assert sdk_error(lambda: register(sdk, {**params, "SentinelMasterName": "nosuch"})) == (
            400,
            "InvalidEndpoint.SentinelMasterUnknown",
            'The Sentinels do not monitor a master named "nosuch": check SentinelMasterName '
            "(SENTINEL MASTERS lists the names they know).",
        )
        closed = free_port()
        nobody = {**params, "SentinelEndpoints": f"127.0.0.1:{closed}"}
        assert sdk_error(lambda: register(sdk, nobody)) == (
            400,
            "InvalidEndpoint.SentinelUnreachable",
            f"No Sentinel of 127.0.0.1:{closed} answered: check SentinelEndpoints (and "
            "SentinelPassword if they have a requirepass), and that they accept connections "
            "from rkvstore's host.",
        )

        body = register(sdk, params)
        instance_id = body["InstanceId"]
        assert (body["ConnectionDomain"], body["Port"], body["NodeCount"]) == (
            "127.0.0.1",
            first.port,
            2,
        )

        def attribute() -> Any:
            request = kv_models.DescribeInstanceAttributeRequest(instance_id=instance_id)
            return sdk.describe_instance_attribute(request).body.instances.dbinstance_attribute[0]

        def reset(password: str) -> None:
            sdk.reset_account_password(
                kv_models.ResetAccountPasswordRequest(
                    instance_id=instance_id, account_name="demo", account_password=password
                )
            )

        password = new_password()
        sdk.create_account(
            kv_models.CreateAccountRequest(
                instance_id=instance_id, account_name="demo", account_password=password
            )
        )
        assert all(pings(n, password, "demo") for n in nodes)

        sentinel_says(ports[0], "FAILOVER", NAME)

        def failed_over() -> bool:
            address = sentinel_says(ports[0], "GET-MASTER-ADDR-BY-NAME", NAME)
            return int(address[1]) == second.port and role(first, admin) == "slave"

        wait_for("the failover", failed_over, 30)
        password = new_password()
        reset(password)  # looks at the Sentinels first
        assert all(pings(n, password, "demo") for n in nodes)
        item = attribute()
        assert (item.connection_domain, item.port, item.node_type) == (
            "127.0.0.1",
            second.port,
            "MASTER_SLAVE",
        )

        # The old master goes away: the change is not held up by it.
        first.kill()
        wait_for("the master sees it gone", lambda: _replicas(second, admin) == 0, 30)
        password = new_password()
        reset(password)
        assert pings(second, password, "demo")
        item = attribute()
        assert (item.connection_domain, item.port, item.instance_status) == (
            "127.0.0.1",
            second.port,
            "Normal",
        )


def _replicas(node: BareRedis, password: str) -> int:
    with contextlib.closing(connect(node.port, None, password)) as conn:
        return int(conn.info("replication")["connected_slaves"])
