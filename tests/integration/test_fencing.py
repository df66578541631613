"""A task that outlives its lease while its process is stopped records nothing after a takeover.

Two ``rkvstore serve`` processes on one PostgreSQL database. Process A stops
itself (SIGSTOP, lease renewal included) right after its reset reached every
node; process B, once A's lease has run out, takes the slot over, puts the
nodes back to the database's state and makes its own reset. When A resumes,
its stale reset must not be recorded over B's: A answers ``ServiceUnavailable``
and every node ends on B's password, the one the database holds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from rkvstore.faults import STALL_VARIABLE
from tests.conftest import ARTIFACT_DIRS, PG_AVAILABLE, LiveServer, fresh_pg_database, start_server
from tests.integration.test_resilience import log_text, own_lone_redis, wait_for
from tests.integration.test_scale_out import _can_login, _client, _password, _wait_normal

pytestmark = pytest.mark.postgres
LEASE = 1.5  # seconds: A's lease, so that B may take over soon after A stops
SERVICE_UNAVAILABLE = (
    503,
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
)


def _stopped(pid: int) -> bool:
    """The process is in state T (stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def stalling_pair(tmp_path: Path) -> Iterator[tuple[LiveServer, LiveServer]]:
    """A stops itself after changing the nodes of a reset; B is an ordinary peer."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    for name in "ab":
        (tmp_path / name).mkdir()
        ARTIFACT_DIRS.append(tmp_path / name)  # scanned for the passwords at the end
    shared = {
        "RKVSTORE_MASTER_KEY": Fernet.generate_key().decode(),
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_TASK_LEASE_SECONDS": str(LEASE),
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "1",
    }
    with fresh_pg_database() as url:
        b = start_server(tmp_path / "b", database_url=url, extra_env=shared)
        key = (b.access_key_id, b.access_key_secret)
        try:
            a = start_server(
                tmp_path / "a",
                database_url=url,
                extra_env={**shared, STALL_VARIABLE: "nodes-changed"},
                access_key=key,
            )
            try:
                yield a, b
            finally:
                os.kill(a.process.pid, signal.SIGCONT)
                a.stop()
        finally:
            b.stop()


def test_a_stalled_task_taken_over_records_nothing(
    stalling_pair: tuple[LiveServer, LiveServer],
) -> None:
    a, b = stalling_pair
    with _client(b) as via_b:
        instance_id = via_b.call("CreateInstance", {"NodeType": "MASTER_SLAVE"})["InstanceId"]
        _wait_normal(via_b, instance_id)
        ports = [
            int(path.read_text().split("port ", 1)[1].split()[0])
            for path in sorted((b.data_dir / "nodes" / instance_id).glob("*/redis.conf"))
        ]
        assert len(ports) == 2
        first = _password()
        via_b.call(
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": first},
        )

        stale = _password()
        answers: list[httpx.Response] = []

        def reset_through_a() -> None:
            with _client(a) as via_a:
                answers.append(
                    via_a.request(
                        "ResetAccountPassword",
                        {
                            "InstanceId": instance_id,
                            "AccountName": "demo",
                            "AccountPassword": stale,
                        },
                    )
                )

        stalled = threading.Thread(target=reset_through_a)
        stalled.start()
        wait_for("A stopped after changing the nodes", lambda: _stopped(a.process.pid), 20)
        assert all(_can_login(port, "demo", stale) for port in ports)  # A got that far
        time.sleep(LEASE + 0.5)  # A's lease runs out; A cannot renew it while stopped

        taker = _password()
        via_b.call(
            "ResetAccountPassword",
            {"InstanceId": instance_id, "AccountName": "demo", "AccountPassword": taker},
        )
        assert "lease expired, holder presumed dead; taking over" in log_text(b)
        for port in ports:
            assert _can_login(port, "demo", taker)
            assert not _can_login(port, "demo", stale)

        os.kill(a.process.pid, signal.SIGCONT)
        stalled.join(timeout=30)
        assert len(answers) == 1
        body = answers[0].json()
        assert (answers[0].status_code, body["Code"], body["Message"]) == SERVICE_UNAVAILABLE
        assert "outlived its lease and was taken over; nothing recorded" in log_text(a)

        # The database kept B's reset: the old password it takes is B's, not A's.
        done = _password()
        via_b.call(
            "ModifyAccountPassword",
            {
                "InstanceId": instance_id,
                "AccountName": "demo",
                "OldAccountPassword": taker,
                "NewAccountPassword": done,
            },
        )
        for port in ports:
            assert _can_login(port, "demo", done)
            assert not _can_login(port, "demo", stale)
        via_b.call("DeleteInstance", {"InstanceId": instance_id})


def test_a_user_created_by_a_task_taken_over_is_taken_back(
    stalling_pair: tuple[LiveServer, LiveServer], tmp_path: Path
) -> None:
    """On a registered deployment the reconciler keeps users it does not know, so the
    stale CreateAccount itself takes its unrecorded user off the node again."""
    a, b = stalling_pair
    with own_lone_redis(tmp_path / "own") as (lone, admin), _client(b) as via_b:
        instance_id = via_b.call(
            "RegisterInstance",
            {
                "Endpoint": f"127.0.0.1:{lone.port}",
                "AdminUserName": "admin",
                "AdminPassword": admin,
            },
        )["InstanceId"]
        ghost = _password()
        answers: list[httpx.Response] = []

        def create_through_a() -> None:
            params = {"InstanceId": instance_id, "AccountName": "ghost", "AccountPassword": ghost}
            with _client(a) as via_a:
                answers.append(via_a.request("CreateAccount", params))

        stalled = threading.Thread(target=create_through_a)
        stalled.start()
        wait_for("A stopped after changing the nodes", lambda: _stopped(a.process.pid), 20)
        assert _can_login(lone.port, "ghost", ghost)
        time.sleep(LEASE + 0.5)
        other = _password()
        via_b.call(  # takes the slot over
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "other", "AccountPassword": other},
        )
        os.kill(a.process.pid, signal.SIGCONT)
        stalled.join(timeout=30)
        assert len(answers) == 1
        body = answers[0].json()
        assert (answers[0].status_code, body["Code"], body["Message"]) == SERVICE_UNAVAILABLE
        assert not _can_login(lone.port, "ghost", ghost)
        assert _can_login(lone.port, "other", other)
        names = [
            item["AccountName"]
            for item in via_b.call("DescribeAccounts", {"InstanceId": instance_id})["Accounts"][
                "Account"
            ]
        ]
        assert names == ["other"]
        again = _password()
        via_b.call(  # the name is free again
            "CreateAccount",
            {"InstanceId": instance_id, "AccountName": "ghost", "AccountPassword": again},
        )
        assert _can_login(lone.port, "ghost", again)
        via_b.call("DeleteInstance", {"InstanceId": instance_id})
