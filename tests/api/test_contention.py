"""Many callers on one instance at once, through the official SDK (api.md §6: the slot waits).

Terraform runs ten account changes on one instance in parallel and does not
retry ``TaskExists``; every one of them must succeed, in turn, and the nodes
must end up holding exactly the accounts the database holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alibabacloud_r_kvstore20150101 import models
from alibabacloud_r_kvstore20150101.client import Client as NewClient

from rkvstore.domain.accounts import MANAGEMENT_USER
from tests.api.instances import (
    MASTER_SLAVE,
    Instance,
    acl_snapshot,
    can_login,
    new_password,
    provision,
    rpc_client,
)
from tests.api.sdk_clients import new_sdk_client
from tests.conftest import LiveServer, remember_secret

CALLERS = 10
JOIN_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def instance(live_server: LiveServer) -> Iterator[Instance]:
    with provision(live_server, MASTER_SLAVE) as (made,):
        yield made


def sdk(server: LiveServer) -> NewClient:
    return new_sdk_client(server.endpoint, server.access_key_id, server.access_key_secret)


def all_at_once(calls: list[Callable[[], Any]]) -> list[BaseException | None]:
    """Run every call on its own thread, released together; what each raised (None: fine)."""
    outcomes: list[BaseException | None] = [None] * len(calls)
    start = threading.Barrier(len(calls), timeout=JOIN_TIMEOUT)

    def run(i: int) -> None:
        start.wait()
        try:
            calls[i]()
        except BaseException as exc:  # reported by the caller, with the others
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a call got no answer in time"
    return outcomes


def database_accounts(server: LiveServer, instance_id: str) -> set[str]:
    with rpc_client(server) as rpc:
        body = rpc.call("DescribeAccounts", {"InstanceId": instance_id, "PageSize": 100})
    return {a["AccountName"] for a in body["Accounts"]["Account"]}


def node_accounts(instance: Instance) -> dict[int, set[str]]:
    snapshot = acl_snapshot(instance.node_ports, instance.password)
    return {
        port: {line.split(" ")[1] for line in lines} - {MANAGEMENT_USER}
        for port, lines in snapshot.items()
    }


def test_ten_concurrent_creates_then_ten_deletes_all_succeed(
    live_server: LiveServer, instance: Instance
) -> None:
    iid = instance.instance_id
    names = [f"tf_{i}" for i in range(CALLERS)]
    passwords = {name: remember_secret(new_password()) for name in names}
    clients = [sdk(live_server) for _ in names]

    def create(client: NewClient, name: str) -> Callable[[], Any]:
        return lambda: client.create_account(
            models.CreateAccountRequest(
                instance_id=iid, account_name=name, account_password=passwords[name]
            )
        )

    outcomes = all_at_once([create(c, n) for c, n in zip(clients, names, strict=True)])
    assert outcomes == [None] * CALLERS, outcomes

    in_database = database_accounts(live_server, iid)
    assert set(names) <= in_database
    assert node_accounts(instance) == {port: in_database for port in instance.node_ports}
    for port in instance.node_ports:
        for name in names:
            assert can_login(port, name, passwords[name])

    def delete(client: NewClient, name: str) -> Callable[[], Any]:
        return lambda: client.delete_account(
            models.DeleteAccountRequest(instance_id=iid, account_name=name)
        )

    outcomes = all_at_once([delete(c, n) for c, n in zip(clients, names, strict=True)])
    assert outcomes == [None] * CALLERS, outcomes
    in_database = database_accounts(live_server, iid)
    assert not set(names) & in_database
    assert node_accounts(instance) == {port: in_database for port in instance.node_ports}


def test_many_writers_on_a_few_accounts_all_succeed_and_agree(
    live_server: LiveServer, instance: Instance
) -> None:
    """Forty resets over four accounts at once: each answers 200, and each account ends
    with one of its passwords on every node, the one the database holds."""
    iid = instance.instance_id
    accounts = [f"busy_{i}" for i in range(4)]
    with rpc_client(live_server) as rpc:
        for name in accounts:
            rpc.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": name, "AccountPassword": new_password()},
            )
    try:
        tried: dict[str, list[str]] = {name: [] for name in accounts}
        calls: list[Callable[[], Any]] = []
        for _ in range(10):
            for name in accounts:
                password = remember_secret(new_password())
                tried[name].append(password)
                client = sdk(live_server)
                calls.append(
                    lambda c=client, n=name, p=password: c.reset_account_password(
                        models.ResetAccountPasswordRequest(
                            instance_id=iid, account_name=n, account_password=p
                        )
                    )
                )
        outcomes = all_at_once(calls)
        assert outcomes == [None] * len(calls), [o for o in outcomes if o]

        with rpc_client(live_server) as rpc:
            for name in accounts:
                working = {
                    port: [p for p in tried[name] if can_login(port, name, p)]
                    for port in instance.node_ports
                }
                (current,) = working[instance.port]
                assert all(found == [current] for found in working.values()), working
                # The database holds it too: it is accepted as the old password.
                rpc.call(
                    "ModifyAccountPassword",
                    {
                        "InstanceId": iid,
                        "AccountName": name,
                        "OldAccountPassword": current,
                        "NewAccountPassword": remember_secret(new_password()),
                    },
                )
    finally:
        with rpc_client(live_server) as rpc:
            for name in accounts:
                rpc.call("DeleteAccount", {"InstanceId": iid, "AccountName": name})


def test_only_the_account_being_changed_shows_unavailable(
    live_server: LiveServer, instance: Instance
) -> None:
    """While one account is reset again and again, every other account stays Available."""
    iid = instance.instance_id
    with rpc_client(live_server) as rpc:
        for name in ("steady_a", "steady_b", "churn"):
            rpc.call(
                "CreateAccount",
                {"InstanceId": iid, "AccountName": name, "AccountPassword": new_password()},
            )
    stop = threading.Event()
    failures: list[BaseException] = []

    def churn() -> None:
        client = sdk(live_server)
        try:
            for _ in range(500):  # bounded; stopped long before
                # Paced under the per-AccessKey throttle, with the sampler below.
                if stop.wait(0.05):
                    return
                client.reset_account_password(
                    models.ResetAccountPasswordRequest(
                        instance_id=iid,
                        account_name="churn",
                        account_password=remember_secret(new_password()),
                    )
                )
        except BaseException as exc:
            failures.append(exc)

    writers = [threading.Thread(target=churn) for _ in range(3)]
    for writer in writers:
        writer.start()
    samples: list[dict[str, str]] = []
    try:
        with rpc_client(live_server) as rpc:
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                body = rpc.call("DescribeAccounts", {"InstanceId": iid, "PageSize": 100})
                samples.append(
                    {a["AccountName"]: a["AccountStatus"] for a in body["Accounts"]["Account"]}
                )
                time.sleep(0.1)
    finally:
        stop.set()
        for writer in writers:
            writer.join(JOIN_TIMEOUT)
        with rpc_client(live_server) as rpc:
            for name in ("steady_a", "steady_b", "churn"):
                rpc.call("DeleteAccount", {"InstanceId": iid, "AccountName": name})
    assert not failures, failures
    assert samples
    churning = sum(s["churn"] == "Unavailable" for s in samples)
    print(f"{len(samples)} samples; churn Unavailable in {churning}")
    for sample in samples:
        others = {name: status for name, status in sample.items() if name != "churn"}
        assert set(others.values()) == {"Available"}, sample
