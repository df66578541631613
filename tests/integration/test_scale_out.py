"""Two ``rkvstore serve`` processes on one PostgreSQL database act as one service."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet
from redis.backoff import NoBackoff
from redis.retry import Retry

from rkvstore.api.signing import pct, sign_v3_headers
from rkvstore.client import RpcClient, RpcError
from rkvstore.secret import Secret
from tests.conftest import (
    ARTIFACT_DIRS,
    PG_AVAILABLE,
    LiveServer,
    fresh_pg_database,
    remember_secret,
    start_server,
)

pytestmark = pytest.mark.postgres
# What the module's pair of servers run with, for a test that restarts one.
DATABASE: list[str] = []
SHARED_ENV: list[dict[str, str]] = []


def _password() -> str:
    return remember_secret("Pw_" + secrets.token_hex(8) + "A1")


def _can_login(port: int, user: str, password: str) -> bool:
    client = redis.Redis(port=port, username=user, password=password, retry=Retry(NoBackoff(), 0))
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    key = ("LTAIscale" + secrets.token_hex(6), remember_secret("Sk" + secrets.token_urlsafe(24)))
    env = {
        "RKVSTORE_MASTER_KEY": Fernet.generate_key().decode(),  # shared: one store of secrets
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
    }
    dirs = [tmp_path_factory.mktemp(f"scale-{name}") for name in "ab"]
    ARTIFACT_DIRS.extend(dirs)
    with fresh_pg_database() as url:
        DATABASE[:] = [url]
        SHARED_ENV[:] = [env]
        a = start_server(dirs[0], database_url=url, extra_env=env, access_key=key)
        try:
            b = start_server(dirs[1], database_url=url, extra_env=env, access_key=key)
            try:
                yield a, b
            finally:
                b.stop()
        finally:
            a.stop()


def _client(server: LiveServer) -> RpcClient:
    return RpcClient(server.endpoint, server.access_key_id, Secret(server.access_key_secret))


def _wait_normal(client: RpcClient, instance_id: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
        item = body["Instances"]["DBInstanceAttribute"][0]
        if item["InstanceStatus"] == "Normal":
            return int(item["Port"])
        time.sleep(0.2)
    raise AssertionError(f"{instance_id} not Normal within 60 s")


def _signed(server: LiveServer, action: str, params: dict[str, str]) -> tuple[str, dict[str, str]]:
    query = list(params.items())
    headers = sign_v3_headers(
        access_key_id=server.access_key_id,
        secret=server.access_key_secret,
        method="POST",
        host=server.endpoint,
        query=query,
        headers={
            "x-acs-action": action,
            "x-acs-version": "2015-01-01",
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-acs-signature-nonce": secrets.token_hex(16),
        },
    )
    return "&".join(f"{pct(k)}={pct(v)}" for k, v in query), headers


def test_two_processes_share_instances_nonces_and_task_slots(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    with _client(a) as via_a, _client(b) as via_b:
        instance_id = via_a.call("CreateInstance", {"NodeType": "MASTER_SLAVE"})["InstanceId"]
        port = _wait_normal(via_b, instance_id)  # B sees what A created
        first = _password()
        via_a.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )
        second = _password()
        via_b.call(  # B changes nodes that A supervises
            "ResetAccountPassword",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": second},
        )
        assert _can_login(port, "demo", second)
        assert not _can_login(port, "demo", first)

        # One nonce, two processes: the second use is a replay wherever it arrives.
        query, headers = _signed(a, "DescribeRegions", {})
        assert httpx.post(f"{a.url}/?{query}", headers=headers).status_code == 200
        # The very same bytes (Host included, as signed) sent to the other process:
        replay = httpx.post(f"{b.url}/?{query}", headers=headers)
        assert (replay.status_code, replay.json()["Code"]) == (400, "SignatureNonceUsed")

        # Ten concurrent resets, half through each process: one slot for both.
        passwords = [_password() for _ in range(10)]
        outcomes: list[tuple[float, str, Any]] = []
        lock = threading.Lock()

        def reset(i: int) -> None:
            server = a if i % 2 else b
            with _client(server) as client:
                response = client.request(
                    "ResetAccountPassword",
                    {
                        "InstanceId": instance_id,
                        "AccountName": "demo",
                        "AccountPassword": passwords[i],
                    },
                )
            with lock:
                outcomes.append((time.monotonic(), passwords[i], response))

        threads = [threading.Thread(target=reset, args=(i,)) for i in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        statuses = [(r.status_code, r.json().get("Code")) for _, _, r in outcomes]
        assert all(s in ((200, None), (400, "TaskExists")) for s in statuses), statuses
        accepted = [pw for _, pw, r in outcomes if r.status_code == 200]
        assert accepted
        working = [pw for pw in passwords if _can_login(port, "demo", pw)]
        assert len(working) == 1 and working[0] in accepted

        # B did not create the nodes: it may not delete them (A would restart them).
        with pytest.raises(RpcError) as refused:
            via_b.call("DeleteInstance", {"InstanceId": instance_id})
        assert (refused.value.status, refused.value.code) == (400, "IncorrectDBInstanceState")
        via_a.call("DeleteInstance", {"InstanceId": instance_id})
        assert via_b.call("DescribeInstances", {})["TotalCount"] == 0


def test_an_access_key_disabled_or_deleted_is_refused_by_every_process_within_a_second(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    """Each process trusts an AccessKey it looked up for at most a second (a cache);
    a key disabled or deleted through one process is refused by the other from
    then on, and at once by the process that changed it."""
    a, b = pair
    ram = RpcClient(a.endpoint, a.access_key_id, Secret(a.access_key_secret), version="2015-05-01")
    with ram:
        _disable_then_delete_a_key(ram, a, b)


def _disable_then_delete_a_key(ram: RpcClient, a: LiveServer, b: LiveServer) -> None:
    user = f"keys-{secrets.token_hex(3)}"
    ram.call("CreateUser", {"UserName": user})
    created = ram.call("CreateAccessKey", {"UserName": user})["AccessKey"]
    key = (created["AccessKeyId"], Secret(remember_secret(created["AccessKeySecret"])))

    def code(server: LiveServer) -> str:
        with RpcClient(server.endpoint, *key) as client:
            try:
                client.call("DescribeRegions")
            except RpcError as exc:
                return exc.code
        return "ok"

    def change_then_watch(action: str, params: dict[str, str], refused: str) -> None:
        assert code(b) == code(a) == "Forbidden.RAM"  # known to both: no policy yet
        ram.call(action, {"UserName": user, "UserAccessKeyId": key[0], **params})
        changed = time.monotonic()
        assert code(a) == refused  # the process that changed it: at once
        seen: list[tuple[float, str]] = []
        while time.monotonic() - changed < 1.5:
            sent = time.monotonic() - changed
            seen.append((sent, code(b)))
        late = [(round(t, 3), c) for t, c in seen if t >= 1.0 and c != refused]
        assert not late, f"{action}: the other process still let the key in: {late}"

    change_then_watch("UpdateAccessKey", {"Status": "Inactive"}, "Forbidden.AccessKeyDisabled")
    ram.call("UpdateAccessKey", {"UserName": user, "UserAccessKeyId": key[0], "Status": "Active"})
    deadline = time.monotonic() + 1.5
    while code(b) != "Forbidden.RAM" and time.monotonic() < deadline:
        time.sleep(0.05)
    change_then_watch("DeleteAccessKey", {}, "InvalidAccessKeyId.NotFound")


def test_a_process_restarting_leaves_the_other_ones_nodes_alone(
    pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = pair
    with _client(a) as via_a:
        instance_id = via_a.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"]
        port = _wait_normal(via_a, instance_id)
        b.stop()
        again = start_server(
            b.data_dir,
            database_url=DATABASE[0],
            extra_env=SHARED_ENV[0],
            access_key=(b.access_key_id, b.access_key_secret),
        )
        try:
            log = (b.data_dir / "rkvstore.log").read_text()
            assert f"instance {instance_id}: nodes held by another data dir" in log
            assert not (b.data_dir / "nodes" / instance_id).exists()
            pw = _password()
            with _client(again) as via_b:
                via_b.call(
                    "CreateAccount",
                    {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": pw},
                )
            assert _can_login(port, "demo", pw)
        finally:
            again.stop()
        via_a.call("DeleteInstance", {"InstanceId": instance_id})
