"""KMS Redis secrets through the official KMS SDK (V3 and V1 signatures), on real nodes."""

from __future__ import annotations

import time

import pytest
from alibabacloud_kms20160120.client import Client as KmsClient

from tests.kms.kms_helpers import (
    CLUSTER,
    DOUBLE_USERS,
    DUAL_PASSWORD,
    MASTER_SLAVE,
    App,
    KmsDeployment,
    create_secret,
    kms_client,
    logs_in_everywhere,
    new_name,
    read_value,
    refused_everywhere,
    rotate,
    running,
)


@pytest.mark.parametrize(
    ("mode", "kind", "v1"),
    [
        (DOUBLE_USERS, MASTER_SLAVE, False),
        (DUAL_PASSWORD, MASTER_SLAVE, True),
        (DOUBLE_USERS, CLUSTER, True),
        (DUAL_PASSWORD, CLUSTER, False),
    ],
)
def test_a_secret_rotates_twice_and_its_previous_works_until_the_next(
    deployment: KmsDeployment, mode: str, kind: str, v1: bool
) -> None:
    client: KmsClient = kms_client(deployment.server, v1=v1)
    instance_id = deployment.instances[kind]
    ports = deployment.ports(instance_id)
    name = new_name()
    account = new_name("acct")
    body = create_secret(client, name, instance_id, account, mode)
    assert (body.secret_name, body.version_id, body.automatic_rotation) == (name, "v1", "Disabled")
    first = read_value(client, name)
    assert (first.account, first.version_id) == (account, "v1")
    assert logs_in_everywhere(ports, first)

    rotate(client, name, "v2")
    second = read_value(client, name)
    assert second.version_id == "v2" and second.password != first.password
    assert logs_in_everywhere(ports, second)
    previous = read_value(client, name, "ACSPrevious")
    assert (previous.version_id, previous.password) == ("v1", first.password)
    assert logs_in_everywhere(ports, first)  # the previous still works

    rotate(client, name, "v3")
    third = read_value(client, name)
    assert third.version_id == "v3"
    assert logs_in_everywhere(ports, third)
    assert read_value(client, name, "ACSPrevious").version_id == "v2"
    assert logs_in_everywhere(ports, second)
    assert refused_everywhere(ports, first)  # the one before is refused on every node
    if mode == DOUBLE_USERS:
        assert {first.account, second.account, third.account} == {account, account + "_clone"}
    else:
        assert {first.account, second.account, third.account} == {account}


# --------------------------------------------------------------------------- an application


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "kind"), [(DUAL_PASSWORD, MASTER_SLAVE), (DOUBLE_USERS, CLUSTER)])
def test_an_application_loop_runs_through_twenty_rotations_without_a_failure(
    deployment: KmsDeployment, mode: str, kind: str
) -> None:
    client = kms_client(deployment.server)
    instance_id = deployment.instances[kind]
    ports = deployment.ports(instance_id)
    if kind == CLUSTER:
        ports = ports[:1]  # the cluster client finds every shard from one node
    name = new_name()
    create_secret(client, name, instance_id, new_name("loop"), mode)
    with running(App(client, name, ports, kind == CLUSTER)) as app:
        for n in range(20):
            before = app.commands
            rotate(client, name, f"r{n}")
            deadline = time.monotonic() + 10
            while app.commands < before + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
    assert app.commands >= 60
    assert app.rereads >= 1  # its credentials did go stale, and it recovered
    assert read_value(client, name).version_id == "r19"
