"""The reconciler follows change (issue 10): flags at once, the rest on a rolling schedule.

Real ``rkvstore serve`` processes (two on one PostgreSQL database, one on
SQLite) run with a short verify interval and log one DEBUG line per verify
(``verified <instance> round <n>``); the test reads those lines and the shared
state table, and changes a node behind rkvstore's back:

- every instance is verified exactly once per round, the rounds follow one
  another with none missed, and on PostgreSQL both processes take part;
- a flag written by another process (this test's) gets a pass out of turn,
  well before the instance's next scheduled verify;
- a stray ``ACL SETUSER`` on an unflagged instance stays until its scheduled
  verify (no full pass every reconcile interval any more) and is repaired by it.

Instances without nodes (rows written straight into the database, as in
test_reconciler.py) make the rounds cheap to count; one real local instance
carries the node-level checks.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import Engine, insert, select

from rkvstore.client import RpcClient
from rkvstore.crypto import SecretBox
from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.secret import Secret
from rkvstore.store import line_state
from rkvstore.store.db import make_engine
from rkvstore.store.tables import instances, reconcile_state, tenants
from tests.conftest import (
    ARTIFACT_DIRS,
    PG_AVAILABLE,
    LiveServer,
    fresh_pg_database,
    remember_secret,
    start_server,
)
from tests.integration.test_resilience import auth_ok, wait_for

VERIFY = 3.0  # RKVSTORE_VERIFY_INTERVAL_SECONDS
LOOK = 0.2  # RKVSTORE_RECONCILE_INTERVAL_SECONDS
NODELESS = 12
VERIFIED = re.compile(
    r"^(\S+ \S+) DEBUG rkvstore\.reconcile verified (\S+) round (\d+): (in line|out of line)$"
)


@dataclass
class Fleet:
    servers: list[LiveServer]
    engine: Engine  # the test's own connection to the servers' database
    box: SecretBox
    instance_id: str  # a real local instance with an account "demo"
    port: int  # its node
    password: str  # demo's
    nodeless: list[str]

    def client(self, index: int = 0) -> RpcClient:
        server = self.servers[index]
        return RpcClient(server.endpoint, server.access_key_id, Secret(server.access_key_secret))

    def state(self, instance_id: str) -> tuple[int, float | None, float]:
        """``(round, verified_at, due_at)`` of the instance's shared state."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    reconcile_state.c.round,
                    reconcile_state.c.verified_at,
                    reconcile_state.c.due_at,
                ).where(reconcile_state.c.instance_id == instance_id)
            ).first()
        assert row is not None, f"{instance_id} has no reconcile state"
        return int(row.round), row.verified_at, float(row.due_at)

    def node(self) -> redis.Redis:
        """The real instance's node, as rkvstore's management user (behind its back)."""
        with self.engine.connect() as conn:
            sealed = conn.execute(
                select(instances.c.mgmt_password_encrypted).where(
                    instances.c.instance_id == self.instance_id
                )
            ).scalar_one()
        return redis.Redis(
            port=self.port, username=MANAGEMENT_USER, password=self.box.open(sealed).reveal()
        )


def _fleet(servers: list[LiveServer], url: str, key: str) -> Fleet:
    engine = make_engine(url)
    box = SecretBox(key.encode())
    first = servers[0]
    with RpcClient(first.endpoint, first.access_key_id, Secret(first.access_key_secret)) as api:
        instance_id = api.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"]
        port = wait_for("the instance Normal", lambda: _normal_port(api, instance_id), 60)
        password = remember_secret("Pw_" + secrets.token_hex(8) + "A1")
        api.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": password},
        )
    with engine.begin() as conn:
        tenant = conn.execute(select(tenants.c.account_id)).scalars().first()
        nodeless = [f"r-rounds{secrets.token_hex(5)}{i:02d}" for i in range(NODELESS)]
        conn.execute(
            insert(instances),
            [
                {
                    "instance_id": iid,
                    "account_id": tenant,
                    "name": "no nodes",
                    "status": "Normal",
                    "provider": "local",
                    "engine_version": "7.0",
                    "architecture": "standard",
                    "node_type": "STAND_ALONE",
                    "shard_count": 1,
                    "zone_id": "cn-hangzhou-h",
                    "instance_class": "redis.master.small.default",
                    "charge_type": "PostPaid",
                    "host": "127.0.0.1",
                    "port": 1,
                    "mgmt_password_encrypted": box.seal(Secret("unused-management-pw")),
                    "created_at": datetime.now(UTC),
                }
                for iid in nodeless
            ],
        )
    return Fleet(servers, engine, box, instance_id, port, password, nodeless)


def _normal_port(api: RpcClient, instance_id: str) -> int | None:
    body = api.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
    item = body["Instances"]["DBInstanceAttribute"][0]
    return int(item["Port"]) if item["InstanceStatus"] == "Normal" else None


def _env(key: str) -> dict[str, str]:
    return {
        "RKVSTORE_MASTER_KEY": key,
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_VERIFY_INTERVAL_SECONDS": str(VERIFY),
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": str(LOOK),
    }


@pytest.fixture(scope="module")
def pg_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    key = Fernet.generate_key().decode()
    access = (
        "LTAIrounds" + secrets.token_hex(6),
        remember_secret("Sk" + secrets.token_urlsafe(24)),
    )
    dirs = [tmp_path_factory.mktemp(f"rounds-{name}") for name in "ab"]
    ARTIFACT_DIRS.extend(dirs)
    with fresh_pg_database() as url:
        options = {
            "database_url": url,
            "extra_env": _env(key),
            "access_key": access,
            "args": ["--log-level", "DEBUG"],
        }
        a = start_server(dirs[0], **options)  # type: ignore[arg-type]
        fleet: Fleet | None = None
        try:
            b = start_server(dirs[1], **options)  # type: ignore[arg-type]
            try:
                fleet = _fleet([a, b], url, key)
                yield fleet
            finally:
                b.stop()
        finally:
            if fleet is not None:
                fleet.engine.dispose()
            a.stop()


@pytest.fixture(scope="module")
def sqlite_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    key = Fernet.generate_key().decode()
    path = tmp_path_factory.mktemp("rounds-sqlite")
    ARTIFACT_DIRS.append(path)
    server = start_server(path, extra_env=_env(key), args=["--log-level", "DEBUG"])
    fleet: Fleet | None = None
    try:
        fleet = _fleet([server], f"sqlite:///{path / 'rkvstore.db'}", key)
        yield fleet
    finally:
        if fleet is not None:
            fleet.engine.dispose()
        server.stop()


# --------------------------------------------------------------------------- rounds


def _verifies(server: LiveServer) -> list[tuple[str, str, int]]:
    """``(time, instance, round)`` of every scheduled verify the server logged."""
    out = []
    for line in (server.data_dir / "rkvstore.log").read_text().splitlines():
        match = VERIFIED.match(line)
        if match:
            out.append((match[1], match[2], int(match[3])))
    return out


def _check_rounds(fleet: Fleet, rounds: int) -> dict[int, int]:
    """Wait until every node-less instance has had ``rounds`` verifies; check each
    round was done once, none missed; how many verifies each server did."""
    watched = fleet.nodeless

    def enough() -> bool:
        seen: dict[str, set[int]] = defaultdict(set)
        for server in fleet.servers:
            for _, iid, rnd in _verifies(server):
                seen[iid].add(rnd)
        return all(len(seen[i]) >= rounds for i in watched)

    wait_for(f"{rounds} rounds of every instance", enough, (rounds + 3) * VERIFY, 0.25)
    done: dict[str, list[int]] = defaultdict(list)
    by_server: dict[int, int] = {}
    for index, server in enumerate(fleet.servers):
        found = _verifies(server)
        by_server[index] = len(found)
        for _, iid, rnd in found:
            done[iid].append(rnd)
    for iid in [*watched, fleet.instance_id]:
        got = sorted(done[iid])
        assert got or iid == fleet.instance_id, f"{iid}: never verified"
        if not got:
            continue
        assert len(got) == len(set(got)), f"{iid}: a round verified twice: {got}"
        assert got == list(range(got[0], got[0] + len(got))), f"{iid}: a round missed: {got}"
    # Spread over the interval, not all at once: the first verifies of the
    # node-less instances (scheduled together) fall at many moments.
    firsts = sorted(
        min(t for s in fleet.servers for t, i, r in _verifies(s) if i == iid) for iid in watched
    )
    assert len(set(firsts)) > NODELESS // 2, firsts
    return by_server


@pytest.mark.postgres
def test_two_processes_verify_every_instance_once_per_round(pg_pair: Fleet) -> None:
    by_server = _check_rounds(pg_pair, 3)
    print(f"verifies per process: {by_server}")
    assert all(count > 0 for count in by_server.values()), by_server  # the work is shared


def test_one_process_on_sqlite_verifies_every_instance_once_per_round(sqlite_one: Fleet) -> None:
    _check_rounds(sqlite_one, 3)


# --------------------------------------------------------------------------- drift


def _just_verified(fleet: Fleet) -> tuple[int, float]:
    """Wait for the real instance's next scheduled verify; its round and next due time."""
    start_round = fleet.state(fleet.instance_id)[0]
    wait_for(
        "a scheduled verify",
        lambda: fleet.state(fleet.instance_id)[0] > start_round,
        3 * VERIFY,
        0.02,
    )
    rnd, _, due = fleet.state(fleet.instance_id)
    return rnd, due


def _stray(fleet: Fleet) -> str:
    """An extra password for ``demo``, set on the node by hand."""
    stray = remember_secret("Stray!" + secrets.token_hex(10))
    node = fleet.node()
    try:
        node.execute_command("ACL", "SETUSER", "demo", f">{stray}")
    finally:
        node.close()
    assert auth_ok(fleet.port, "demo", stray)
    return stray


def _repaired(fleet: Fleet, stray: str) -> bool:
    return auth_ok(fleet.port, "demo", fleet.password) and not auth_ok(fleet.port, "demo", stray)


def _flag_from_another_process(fleet: Fleet) -> None:
    rnd, due = _just_verified(fleet)
    stray = _stray(fleet)
    flagged = time.time()
    with fleet.engine.begin() as conn:  # what mark_dirty's writer does, from this process
        line_state.flag(conn, fleet.instance_id, {"demo"}, flagged, VERIFY)
    wait_for("the flagged drift repaired", lambda: _repaired(fleet, stray), VERIFY, 0.02)
    took = time.time() - flagged
    print(f"flagged drift repaired {took:.2f} s after the flag")
    # Out of turn: before the scheduled verify, which has not come yet.
    assert time.time() < due, "repaired only by the schedule"
    assert fleet.state(fleet.instance_id)[0] == rnd


def _stray_waits_for_its_turn(fleet: Fleet) -> None:
    rnd, due = _just_verified(fleet)
    stray = _stray(fleet)
    # Many reconcile intervals (LOOK) go by without a pass over it...
    time.sleep(min(VERIFY / 2, max(0.0, due - time.time() - 0.3)))
    assert time.time() < due
    assert auth_ok(fleet.port, "demo", stray), "repaired before its turn"
    # ...until its scheduled verify repairs it.
    wait_for("the stray password removed", lambda: _repaired(fleet, stray), 3 * VERIFY, 0.05)
    # By the scheduled verify (its round is written just after the repair).
    wait_for("the verify recorded", lambda: fleet.state(fleet.instance_id)[0] > rnd, VERIFY)
    with fleet.client() as api:
        body = api.call("DescribeAccounts", {"InstanceId": fleet.instance_id})
    statuses = {a["AccountName"]: a["AccountStatus"] for a in body["Accounts"]["Account"]}
    assert statuses["demo"] == "Available"


@pytest.mark.postgres
def test_a_flag_from_another_process_is_passed_over_at_once_on_postgresql(
    pg_pair: Fleet,
) -> None:
    _flag_from_another_process(pg_pair)


@pytest.mark.postgres
def test_a_stray_setuser_is_repaired_by_its_scheduled_verify_on_postgresql(
    pg_pair: Fleet,
) -> None:
    _stray_waits_for_its_turn(pg_pair)


def test_a_flag_from_another_process_is_passed_over_at_once_on_sqlite(sqlite_one: Fleet) -> None:
    _flag_from_another_process(sqlite_one)


def test_a_stray_setuser_is_repaired_by_its_scheduled_verify_on_sqlite(sqlite_one: Fleet) -> None:
    _stray_waits_for_its_turn(sqlite_one)


def test_deleting_an_instance_deletes_its_state(sqlite_one: Fleet) -> None:
    with sqlite_one.client() as api:
        instance_id = api.call("CreateInstance", {"NodeType": "STAND_ALONE"})["InstanceId"]
        wait_for("the instance Normal", lambda: _normal_port(api, instance_id), 60)
        with sqlite_one.engine.begin() as conn:
            line_state.flag(conn, instance_id, {"*"}, time.time(), VERIFY)
        assert sqlite_one.state(instance_id)
        api.call("DeleteInstance", {"InstanceId": instance_id})
    with sqlite_one.engine.connect() as conn:
        left = conn.execute(
            select(reconcile_state.c.instance_id).where(
                reconcile_state.c.instance_id == instance_id
            )
        ).first()
    assert left is None
