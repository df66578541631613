"""The KMS scheduler's looks on a real SQLite store, with a clock of the test's own.

Instances without nodes keep Redis out of it: a rotation on one is a real one
(slot, written-down target, record), on zero nodes. Secrets whose instance is
gone or not Normal can never be done now; they must not take every look.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rkvstore.bootstrap import build_deps, ensure_root_tenant
from rkvstore.config import Settings
from rkvstore.products.kms import rotation, rules, vault
from rkvstore.products.kms import store as kms_store
from rkvstore.products.kms.scheduler import BATCH, Scheduler
from rkvstore.products.kms.secrets import _version as version_row
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.services.task_slot import task_slot
from rkvstore.store import repo
from tests.integration.test_reconciler import nodeless_instance

NOW = 1_900_000_000.0
HEALTHY = "r-kmshealthy0001"
CHANGING = "r-kmschanging001"
GONE = "r-kmsgone0000001"  # never recorded: deleted with its nodes


@pytest.fixture
def deps(tmp_path: Path) -> Iterator[Deps]:
    built = build_deps(Settings(data_dir=tmp_path / "data", task_lease_seconds=30.0))
    try:
        yield built
    finally:
        built.engine.dispose()


@pytest.fixture
def tenant(deps: Deps) -> str:
    root = ensure_root_tenant(deps)
    assert root is not None
    account_id = root.created.account_id
    for instance_id, status in ((HEALTHY, "Normal"), (CHANGING, "Changing")):
        with deps.engine.begin() as conn:
            nodeless_instance(conn, deps.box, account_id, instance_id, status)
    return account_id


def _secret(deps: Deps, account_id: str, instance_id: str, name: str, *, due: float | None) -> str:
    """A DualPassword secret on account ``name``; ``due``: its rotation (None: off)."""
    secret_id = f"s{name}"
    key = vault.new_data_key(deps.box)
    sealed = vault.seal(deps.box, key, Secret(rules.new_password()))
    config = {"SecretSubType": rules.DUAL_PASSWORD, "AccountName": name}
    with deps.engine.begin() as conn:
        if instance_id == HEALTHY:
            repo.insert_account(
                conn,
                {
                    "instance_id": instance_id,
                    "name": name,
                    "password_sha256": "0" * 64,
                    "privilege": "RoleReadWrite",
                    "account_type": "Normal",
                    "description": "",
                },
            )
        kms_store.insert_secret(
            conn,
            {
                "secret_id": secret_id,
                "account_id": account_id,
                "name": name,
                "sub_type": rules.DUAL_PASSWORD,
                "instance_id": instance_id,
                "extended_config": rules.json.dumps(config),
                "description": "",
                "tags": "[]",
                "data_key": key,
                "rotation_enabled": due is not None,
                "rotation_interval": None if due is None else 3600,
                "grace_period": 60,
                "next_rotation_at": due,
                "last_rotation_at": None,
                "planned_delete_at": None,
                "created_at": NOW - 7200,
                "updated_at": NOW - 7200,
            },
        )
        kms_store.insert_version(conn, _version(secret_id, "v1", 1, rules.CURRENT, name, sealed))
    return secret_id


def _version(
    secret_id: str, version_id: str, seq: int, stage: str, account: str, sealed: str | None
) -> dict[str, Any]:
    return version_row(secret_id, version_id, seq, stage, account, sealed, NOW - 3600)


def _stuck(deps: Deps, account_id: str, instance_id: str, name: str) -> str:
    """Long due: a rotation, a grace ended, and a rotation left Pending by a dead process."""
    secret_id = _secret(deps, account_id, instance_id, name, due=NOW - 3000)
    with deps.engine.begin() as conn:
        previous = _version(secret_id, "v0", 0, rules.PREVIOUS, name, None)
        kms_store.insert_version(conn, previous | {"grace_until": NOW - 3000})
        kms_store.insert_version(conn, _version(secret_id, "v2", 2, rules.PENDING, name, "x"))
    return secret_id


def test_stuck_secrets_do_not_take_every_look_from_a_due_rotation(deps: Deps, tenant: str) -> None:
    stuck = [_stuck(deps, tenant, GONE, f"gone{i}") for i in range(BATCH)]
    stuck += [_stuck(deps, tenant, CHANGING, f"changing{i}") for i in range(BATCH)]
    healthy = _secret(deps, tenant, HEALTHY, "healthy", due=NOW - 1)
    scheduler = Scheduler(deps, clock=lambda: NOW)
    for _ in range(4):  # bounded: the stuck ones are put off after one try each
        scheduler.run_once()
    with deps.single.connect() as conn:
        done = kms_store.get_secret_by_id(conn, healthy)
        assert done is not None and done.last_rotation_at == NOW
        assert done.next_rotation_at == NOW + 3600
        # The instance is gone with its nodes: the grace ended in the record, and the
        # rotation left Pending (never to finish) went; the next rotation an interval away.
        for secret_id in stuck[:BATCH]:
            stages = rotation.Stages.read(conn, secret_id)
            assert stages.previous is None and stages.pending is None
            secret = kms_store.get_secret_by_id(conn, secret_id)
            assert secret is not None and secret.next_rotation_at == NOW + 3600
        # Not Normal: kept for later, and not looked at again for a while.
        for secret_id in stuck[BATCH:]:
            stages = rotation.Stages.read(conn, secret_id)
            assert stages.previous is not None and stages.pending is not None
            secret = kms_store.get_secret_by_id(conn, secret_id)
            assert secret is not None and secret.retry_at is not None and secret.retry_at > NOW
        assert kms_store.due_secret_ids(conn, NOW, NOW, BATCH) == []


def test_a_policy_changed_during_a_rotation_is_kept(deps: Deps, tenant: str) -> None:
    secret_id = _secret(deps, tenant, HEALTHY, "policy", due=None)
    with deps.single.connect() as conn:
        before = kms_store.get_secret_by_id(conn, secret_id)
        stages = rotation.Stages.read(conn, secret_id)
        instance = repo.get_instance_any_tenant(conn, HEALTHY)
    assert before is not None and instance is not None
    with task_slot(deps, HEALTHY, "RotateSecret", "policy") as task:
        pending = rotation.write_pending(deps, task, before, stages, "v2", NOW)
        # UpdateSecretRotationPolicy takes no slot: it lands mid-rotation.
        with deps.engine.begin() as conn:
            kms_store.update_secret(conn, secret_id, rotation_enabled=True, rotation_interval=600)
        rotation.complete(deps, task, before, instance, pending, NOW)
    with deps.single.connect() as conn:
        after = kms_store.get_secret_by_id(conn, secret_id)
    assert after is not None
    assert (after.rotation_enabled, after.next_rotation_at) == (True, NOW + 600)
