"""Two CreateSecret calls of one name on two instances at once (two task slots).

Each passes the name check before either is recorded; the record decides,
under the tenant's lock: one secret, the other call answers that it exists,
and its nodes go back to what the database holds for its account.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_r_kvstore20150101 import models as kv_models

from rkvstore.crypto import SecretBox
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.store import repo
from tests.api.instances import can_login, new_password
from tests.api.ram_helpers import Answer, outcome
from tests.api.sdk_clients import new_sdk_client
from tests.conftest import remember_secret
from tests.integration.test_resilience import wait_for
from tests.kms.kms_helpers import (
    DUAL_PASSWORD,
    MASTER_SLAVE,
    STAND_ALONE,
    KmsDeployment,
    create_secret,
    kms_client,
    new_name,
    read_value,
)

EXISTS = ("Rejected.ResourceExist", 409, "The resource already exists.")
ROUNDS = 3  # each a fresh race: before the fix, the loser answered 503


def _node_passwords(deployment: KmsDeployment, instance_id: str, account: str) -> list[set[str]]:
    """The account's password hashes on each node of ``instance_id``."""
    with deployment.engine.connect() as conn:
        instance = repo.get_instance_any_tenant(conn, instance_id)
    assert instance is not None
    box = SecretBox(deployment.master_key.encode())
    mgmt = remember_secret(box.open(instance.mgmt_password_encrypted).reveal())
    found = []
    for port in deployment.ports(instance_id):
        with redis.Redis(port=port, username=MANAGEMENT_USER, password=mgmt) as admin:
            found.append(set(admin.acl_getuser(account)["passwords"]))
    return found


def _as_recorded(deployment: KmsDeployment, instance_id: str, account: str) -> bool:
    with deployment.engine.connect() as conn:
        row = repo.get_account(conn, instance_id, account)
    assert row is not None
    wanted = {row.password_sha256} | ({row.previous_sha256} - {None})
    return all(p == wanted for p in _node_passwords(deployment, instance_id, account))


def _race(client: KmsClient, name: str, accounts: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """CreateSecret ``name`` adopting each instance's account, all at once: the answers."""
    start = threading.Barrier(len(accounts))
    answers: dict[str, Answer | Exception | None] = {}

    def create(instance_id: str) -> Any:
        start.wait(timeout=30)
        return create_secret(
            client,
            name,
            instance_id,
            accounts[instance_id][0],
            DUAL_PASSWORD,
            privilege=None,
            config={"UseExistingAccount": True, "GracePeriod": "3600s"},
        )

    def run(instance_id: str) -> None:
        try:
            answers[instance_id] = outcome(lambda: create(instance_id))
        except Exception as exc:  # a 5xx: reported by the test's assertions
            answers[instance_id] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in accounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_one_name_on_two_instances_at_once_makes_one_secret(deployment: KmsDeployment) -> None:
    server = deployment.server
    kv = new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)
    client = kms_client(server)
    instances = [deployment.instances[STAND_ALONE], deployment.instances[MASTER_SLAVE]]
    for _ in range(ROUNDS):
        name = new_name()
        accounts = {i: (new_name("race"), remember_secret(new_password())) for i in instances}
        for instance_id, (account, old) in accounts.items():
            kv.create_account(
                kv_models.CreateAccountRequest(
                    instance_id=instance_id, account_name=account, account_password=old
                )
            )
        answers = _race(client, name, accounts)
        assert sorted(answers) == sorted(instances)
        (winner,) = [i for i in instances if answers[i] is None]
        (loser,) = [i for i in instances if i != winner]
        refused = answers[loser]
        assert isinstance(refused, Answer) and refused.triple == EXISTS, refused
        current = read_value(client, name)
        assert current.account == accounts[winner][0]
        for port in deployment.ports(winner):
            assert can_login(port, current.account, current.password)
        # Every node holds exactly the database's passwords: the winner's two (its
        # grace), the loser's old one alone once its accounts were put back.
        for instance_id, (account, old) in accounts.items():
            wait_for(
                f"{account} as recorded on every node",
                lambda i=instance_id, a=account: _as_recorded(deployment, i, a),
                20,
            )
            for port in deployment.ports(instance_id):
                assert can_login(port, account, old)
