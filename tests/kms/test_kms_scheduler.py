"""Automatic rotation with two processes on one PostgreSQL database, and a kill -9 mid-rotation.

Each due rotation is done once (two schedulers look; the instance's task slot
and a re-check of the due date under it decide), and a rotation whose process
is killed after its nodes changed, before its record, is finished on restart:
the secret and every node agree, and an application loop reading the secret
sees no failure beyond a re-read.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_tea_openapi.exceptions import ClientException
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select

from rkvstore.faults import VARIABLE as CRASH_VARIABLE
from rkvstore.store.tables import kms_secret_versions, nodes
from tests.api.instances import STAND_ALONE, rpc_client, start_creating, wait_normal
from tests.conftest import (
    ARTIFACT_DIRS,
    PG_AVAILABLE,
    LiveServer,
    free_port,
    fresh_pg_database,
    start_server,
)
from tests.integration.test_resilience import wait_for
from tests.kms.kms_helpers import (
    DUAL_PASSWORD,
    App,
    create_secret,
    kms_client,
    logs_in_everywhere,
    new_name,
    read_value,
    refused_everywhere,
    running,
)
from tests.scrape import scrape, value

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
ROTATIONS = "rkvstore_kms_rotations_total"
INTERVAL = 2  # seconds between automatic rotations
LEASE = 1.5


def _shared_env(key: str, metrics_port: int | None = None) -> dict[str, str]:
    metrics = {} if metrics_port is None else {"RKVSTORE_METRICS_PORT": str(metrics_port)}
    return {
        **metrics,
        "RKVSTORE_MASTER_KEY": key,
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_KMS_MIN_ROTATION_INTERVAL": "1s",
        "RKVSTORE_KMS_SCHEDULER_INTERVAL_SECONDS": "0.2",
        "RKVSTORE_TASK_LEASE_SECONDS": str(LEASE),
        "RKVSTORE_RECONCILE_INTERVAL_SECONDS": "0.5",
    }


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    with fresh_pg_database() as url:
        yield url


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    for name in "ab":
        (tmp_path / name).mkdir()
        ARTIFACT_DIRS.append(tmp_path / name)  # scanned for the passwords at the end
    return tmp_path / "a", tmp_path / "b"


def _instance(server: LiveServer) -> str:
    with rpc_client(server) as client:
        instance_id = start_creating(client, STAND_ALONE)[0]
        wait_normal(client, instance_id)
    return instance_id


def _ports(url: str, instance_id: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(nodes.c.port).where(nodes.c.instance_id == instance_id))
            return sorted(int(p) for p in rows.scalars())
    finally:
        engine.dispose()


def _versions(url: str) -> list[tuple[str, str | None, float]]:
    """(version, stage, created) of every version, oldest first."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    kms_secret_versions.c.version_id,
                    kms_secret_versions.c.stage,
                    kms_secret_versions.c.created_at,
                ).order_by(kms_secret_versions.c.seq)
            )
            return [(str(v), s, float(c)) for v, s, c in rows]
    finally:
        engine.dispose()


def _previous_version(client: KmsClient, name: str) -> str | None:
    """ACSPrevious's version; None before the first rotation (DualPassword has none yet)."""
    try:
        return read_value(client, name, "ACSPrevious").version_id
    except ClientException as exc:
        assert exc.code == "Forbidden.ResourceNotFound", exc
        return None


def _create_rotating(server: LiveServer, instance_id: str) -> str:
    name = new_name()
    create_secret(
        kms_client(server),
        name,
        instance_id,
        new_name("auto"),
        DUAL_PASSWORD,
        enable_automatic_rotation=True,
        rotation_interval=f"{INTERVAL}s",
    )
    return name


def test_two_processes_rotate_each_due_secret_once(tmp_path: Path, pg_url: str) -> None:
    key = Fernet.generate_key().decode()
    dir_a, dir_b = _dirs(tmp_path)
    metrics = [free_port(), free_port()]
    a = start_server(dir_a, database_url=pg_url, extra_env=_shared_env(key, metrics[0]))
    try:
        b = start_server(
            dir_b,
            database_url=pg_url,
            extra_env=_shared_env(key, metrics[1]),
            access_key=(a.access_key_id, a.access_key_secret),
        )
        try:
            instance_id = _instance(a)
            ports = _ports(pg_url, instance_id)
            name = _create_rotating(a, instance_id)
            client = kms_client(b)
            with running(App(client, name, ports, cluster=False)) as app:
                time.sleep(4 * INTERVAL + 1)
            assert app.commands > 0
            # Each process counts the rotations it did (two processes: two scrapes).
            done = sum(
                value(scrape(f"http://127.0.0.1:{port}/metrics"), ROTATIONS, result="done")
                for port in metrics
            )
        finally:
            b.stop()
    finally:
        a.stop()
    created = [c for v, s, c in _versions(pg_url) if s != "Pending"]
    rotations = len(created) - 1
    assert 3 <= rotations <= 5, created
    assert 2 <= done <= rotations  # one may have been done after the scrapes
    gaps = [later - earlier for earlier, later in itertools.pairwise(created[1:])]
    # The first comes an interval after creation; then one an interval after the last.
    assert all(gap >= INTERVAL - 0.05 for gap in gaps), gaps


def test_a_rotation_killed_after_its_nodes_changed_is_finished_on_restart(
    tmp_path: Path, pg_url: str
) -> None:
    key = Fernet.generate_key().decode()
    dir_a, dir_b = _dirs(tmp_path)
    # B serves and holds the nodes, and looks for due rotations only once an hour:
    # the rotation is A's, which kills itself once its nodes have the new password.
    quiet = {**_shared_env(key), "RKVSTORE_KMS_SCHEDULER_INTERVAL_SECONDS": "3600"}
    b = start_server(dir_b, database_url=pg_url, extra_env=quiet)
    key_pair = (b.access_key_id, b.access_key_secret)
    try:
        instance_id = _instance(b)
        ports = _ports(pg_url, instance_id)
        name = _create_rotating(b, instance_id)
        client = kms_client(b)
        first = read_value(client, name)
        crashing = {**_shared_env(key), CRASH_VARIABLE: "kms-nodes-changed"}
        with running(App(client, name, ports, cluster=False)) as app:
            # Its scheduler may reach the crash before it answers a first request.
            a = start_server(
                dir_a, database_url=pg_url, extra_env=crashing, access_key=key_pair, may_exit=True
            )
            assert a.process.wait(timeout=4 * INTERVAL + 10) == -9  # killed mid-rotation
            stages = [s for _, s, _ in _versions(pg_url)]
            assert "Pending" in stages  # written down, on the nodes, not recorded
            normal = _shared_env(key)
            a = start_server(dir_a, database_url=pg_url, extra_env=normal, access_key=key_pair)
            try:
                wait_for(
                    "the interrupted rotation finished, and one more after it",
                    lambda: _previous_version(client, name) not in (None, first.version_id),
                    20,
                )
                client.update_secret_rotation_policy(
                    kms_models.UpdateSecretRotationPolicyRequest(
                        secret_name=name, enable_automatic_rotation=False
                    )
                )
                time.sleep(1)  # a rotation under way when it was turned off ends
                assert "Pending" not in [s for _, s, _ in _versions(pg_url)]
                current = read_value(client, name)
                previous = read_value(client, name, "ACSPrevious")
                # Every node holds exactly what the database says: the current and
                # the previous password, and not the one from before them.
                assert logs_in_everywhere(ports, current)
                assert logs_in_everywhere(ports, previous)
                assert refused_everywhere(ports, first)
            finally:
                a.stop()
        assert app.commands > 0
    finally:
        b.stop()
