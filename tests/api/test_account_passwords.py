"""An account with two passwords (a KMS secret's grace period), and accounts a secret manages.

One live server on SQLite serves the module, with a STAND_ALONE, a MASTER_SLAVE
and a cluster instance (two shards, a replica each). The test writes the
accounts' passwords (hashes) and ``managed_by`` straight into the server's
database, as the KMS product will, and flags the instance for a reconciler
pass as another process would; every node is then asked directly, with AUTH,
which passwords it takes. A password is added and one removed by hand as the
management user, whose password the test opens with the server's master key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_r_kvstore20150101.client import Client as NewClient
from cryptography.fernet import Fernet
from sqlalchemy import Engine, select

from rkvstore.crypto import SecretBox
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.store import line_state, repo
from rkvstore.store.db import make_engine
from rkvstore.store.tables import instances, nodes
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    can_login,
    connect,
    delete_instance,
    new_password,
    rpc_client,
    start_creating,
    wait_normal,
)
from tests.api.sdk_clients import new_sdk_client
from tests.api.test_accounts_sdk import expect_error
from tests.conftest import ARTIFACT_DIRS, LiveServer, start_server
from tests.integration.test_resilience import wait_for

CLUSTER = "CLUSTER"
REPAIR_TIMEOUT = 15.0
MANAGED = (
    "OperationDenied.AccountManagedBySecret",
    403,
    "The account is managed by a KMS secret: rotate or delete the secret instead.",
)


def sha(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass
class Deployment:
    server: LiveServer
    engine: Engine  # the test's own connection to the server's database
    box: SecretBox
    instances: dict[str, str]  # node type (or CLUSTER) -> instance ID

    def ports(self, instance_id: str) -> list[int]:
        with self.engine.connect() as conn:
            found = conn.execute(select(nodes.c.port).where(nodes.c.instance_id == instance_id))
            return sorted(int(p) for p in found.scalars())

    def management_password(self, instance_id: str) -> str:
        with self.engine.connect() as conn:
            sealed = conn.execute(
                select(instances.c.mgmt_password_encrypted).where(
                    instances.c.instance_id == instance_id
                )
            ).scalar_one()
        return self.box.open(sealed).reveal()

    def flag(self, instance_id: str, name: str) -> None:
        """What another process's ``mark_dirty`` writes: a pass at once."""
        with self.engine.begin() as conn:
            line_state.flag(conn, instance_id, {name}, time.time(), 300.0)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    key = Fernet.generate_key().decode()
    path: Path = tmp_path_factory.mktemp("dualpw")
    ARTIFACT_DIRS.append(path)
    env = {"RKVSTORE_MASTER_KEY": key, "RKVSTORE_RATE_LIMIT_PER_SECOND": "0"}
    env["RKVSTORE_RECONCILE_INTERVAL_SECONDS"] = "0.2"
    server = start_server(path, extra_env=env)
    engine = make_engine(f"sqlite:///{path / 'rkvstore.db'}")
    made: dict[str, str] = {}
    try:
        with rpc_client(server) as client:
            try:
                for node_type in (STAND_ALONE, MASTER_SLAVE):
                    made[node_type] = start_creating(client, node_type)[0]
                params = {"NodeType": MASTER_SLAVE, "ShardCount": 2}
                made[CLUSTER] = client.call("CreateInstance", params)["InstanceId"]
                for instance_id in made.values():
                    wait_normal(client, instance_id)
                yield Deployment(server, engine, SecretBox(key.encode()), made)
            finally:
                for instance_id in made.values():
                    delete_instance(client, instance_id)
    finally:
        engine.dispose()
        server.stop()


@pytest.fixture(scope="module")
def sdk(deployment: Deployment) -> NewClient:
    server = deployment.server
    return new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)


def _create(sdk: NewClient, instance_id: str, name: str, password: str) -> None:
    sdk.create_account(
        kv_models.CreateAccountRequest(
            instance_id=instance_id, account_name=name, account_password=password
        )
    )


def _everywhere(
    ports: list[int], name: str, takes: list[str], refuses: list[str]
) -> Callable[[], bool]:
    def probe() -> bool:
        return all(
            all(can_login(p, name, pw) for pw in takes)
            and not any(can_login(p, name, pw) for pw in refuses)
            for p in ports
        )

    return probe


@pytest.mark.parametrize("kind", [STAND_ALONE, MASTER_SLAVE, CLUSTER])
def test_every_node_takes_exactly_the_current_and_the_previous_password(
    deployment: Deployment, sdk: NewClient, kind: str
) -> None:
    instance_id = deployment.instances[kind]
    ports = deployment.ports(instance_id)
    assert len(ports) == {STAND_ALONE: 1, MASTER_SLAVE: 2, CLUSTER: 4}[kind]
    name = "dual" + secrets.token_hex(3)
    old, new, stray, reset = (new_password() for _ in range(4))
    _create(sdk, instance_id, name, old)

    def settle(what: str, takes: list[str], refuses: list[str]) -> None:
        deployment.flag(instance_id, name)
        probe = _everywhere(ports, name, takes, refuses)
        wait_for(what, probe, REPAIR_TIMEOUT, 0.05)

    # A rotation recorded: the new password current, the old one previous.
    with deployment.engine.begin() as conn:
        repo.set_account_passwords(conn, instance_id, name, sha(new), sha(old))
    settle("both passwords on every node", [new, old], [])

    # By hand on every node: a third password added, the previous one removed.
    mgmt = deployment.management_password(instance_id)
    for port in ports:
        with connect(port, MANAGEMENT_USER, mgmt) as node:
            node.execute_command("ACL", "SETUSER", name, f">{stray}", f"<{old}")
    assert can_login(ports[0], name, stray) and not can_login(ports[0], name, old)
    settle("the stray password removed, the previous put back", [new, old], [stray])

    # The grace over: no previous password any more.
    with deployment.engine.begin() as conn:
        repo.set_account_passwords(conn, instance_id, name, sha(new), None)
    settle("the previous password removed", [new], [old, stray])

    # ResetAccountPassword leaves one password, and no previous in the database.
    with deployment.engine.begin() as conn:
        repo.set_account_passwords(conn, instance_id, name, sha(new), sha(old))
    request = kv_models.ResetAccountPasswordRequest(
        instance_id=instance_id, account_name=name, account_password=reset
    )
    sdk.reset_account_password(request)
    with deployment.engine.connect() as conn:
        account = repo.get_account(conn, instance_id, name)
    assert account is not None
    assert (account.password_sha256, account.previous_sha256) == (sha(reset), None)
    assert _everywhere(ports, name, [reset], [new, old])()
    sdk.delete_account(kv_models.DeleteAccountRequest(instance_id=instance_id, account_name=name))


def test_an_account_a_secret_manages_is_not_changed_through_r_kvstore(
    deployment: Deployment, sdk: NewClient
) -> None:
    instance_id = deployment.instances[STAND_ALONE]
    port = deployment.ports(instance_id)[0]
    name = "managed" + secrets.token_hex(3)
    password = new_password()
    _create(sdk, instance_id, name, password)
    with deployment.engine.begin() as conn:
        repo.set_account_managed_by(conn, instance_id, [name], "secret-" + secrets.token_hex(4))
    target = {"instance_id": instance_id, "account_name": name}
    other = new_password()
    refused: list[Callable[[], object]] = [
        lambda: sdk.reset_account_password(
            kv_models.ResetAccountPasswordRequest(**target, account_password=other)
        ),
        lambda: sdk.modify_account_password(
            kv_models.ModifyAccountPasswordRequest(
                **target, old_account_password=password, new_account_password=other
            )
        ),
        lambda: sdk.grant_account_privilege(
            kv_models.GrantAccountPrivilegeRequest(**target, account_privilege="RoleReadOnly")
        ),
        lambda: sdk.delete_account(kv_models.DeleteAccountRequest(**target)),
    ]
    for call in refused:
        expect_error(call, MANAGED)
    assert can_login(port, name, password) and not can_login(port, name, other)

    # Listed and described as before.
    sdk.modify_account_description(
        kv_models.ModifyAccountDescriptionRequest(**target, account_description="ManagedByKms")
    )
    body = sdk.describe_accounts(
        kv_models.DescribeAccountsRequest(instance_id=instance_id, account_name=name)
    ).body
    (account,) = body.accounts.account
    assert account.account_description == "ManagedByKms"
    assert account.database_privileges.database_privilege[0].account_privilege == "RoleReadWrite"

    # Released by the secret: R-kvstore may change it again.
    with deployment.engine.begin() as conn:
        repo.set_account_managed_by(conn, instance_id, [name], None)
    sdk.delete_account(kv_models.DeleteAccountRequest(**target))
