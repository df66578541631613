"""Each tenant's instance count (migration 0010) follows every insert and delete, on both engines.

DescribeInstances answers a whole tenant's TotalCount from ``instance_counts``,
kept by triggers on ``instances``: whatever code inserts or deletes an instance,
in the same transaction, and not at all when that transaction rolls back. The
migration starts it from the instances there are, and its downgrade removes it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import Connection, Engine, delete, func, inspect, select

from rkvstore.crypto import SecretBox
from rkvstore.iam.credentials import create_tenant
from rkvstore.secret import Secret
from rkvstore.store import db as store_db
from rkvstore.store import repo
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import instance_counts, instances, tenants

MIGRATIONS = Path(store_db.__file__).parent / "migrations"
BEFORE = "0008"  # the revision before the counts


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _alembic(engine: Engine, revision: str, *, down: bool = False) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)
        conn.commit()


def _add(conn: Connection, account_id: str, sealed: str) -> str:
    instance_id = "r-" + secrets.token_hex(9)
    repo.insert_instance(
        conn,
        {
            "instance_id": instance_id,
            "account_id": account_id,
            "name": instance_id,
            "status": "Normal",
            "provider": "registered",
            "engine_version": "7.0",
            "architecture": "standard",
            "node_type": "STAND_ALONE",
            "shard_count": 1,
            "zone_id": "cn-hangzhou-h",
            "instance_class": "redis.master.small.default",
            "charge_type": "PostPaid",
            "host": "10.0.0.1",
            "port": 6379,
            "mgmt_password_encrypted": sealed,
            "admin_user": None,
            "admin_password_encrypted": None,
        },
    )
    return instance_id


def _counted(conn: Connection) -> dict[str, int]:
    rows = conn.execute(select(instance_counts.c.account_id, instance_counts.c.instances))
    return {str(a): int(n) for a, n in rows if n}


def _actual(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(instances.c.account_id, func.count()).group_by(instances.c.account_id)
    )
    return {str(a): int(n) for a, n in rows}


def test_the_count_follows_inserts_deletes_and_rollbacks(engine: Engine) -> None:
    migrate(engine)
    box = SecretBox(Fernet.generate_key())
    sealed = box.seal(Secret("x" * 24))
    with engine.begin() as conn:
        a = create_tenant(conn, box, "a").account_id
        b = create_tenant(conn, box, "b").account_id
        create_tenant(conn, box, "none")
        mine = [_add(conn, a, sealed) for _ in range(5)]
        _add(conn, b, sealed)
        _add(conn, b, sealed)
    with engine.connect() as conn:
        assert _counted(conn) == _actual(conn) == {a: 5, b: 2}
    with engine.begin() as conn:
        repo.delete_instance(conn, mine[0])
        repo.delete_instance(conn, mine[1])
    with engine.connect() as conn:
        _add(conn, a, sealed)
        repo.delete_instance(conn, mine[2])
        conn.rollback()  # neither happened, nor did their counting
        assert _counted(conn) == _actual(conn) == {a: 3, b: 2}
    with engine.begin() as conn:
        conn.execute(delete(tenants).where(tenants.c.account_id == a))  # cascades
    with engine.connect() as conn:
        assert _counted(conn) == _actual(conn) == {b: 2}
        assert (
            conn.execute(
                select(instance_counts.c.account_id).where(instance_counts.c.account_id == a)
            ).all()
            == []
        )


def test_the_migration_counts_what_is_there_and_its_downgrade_removes_it(engine: Engine) -> None:
    _alembic(engine, BEFORE)
    box = SecretBox(Fernet.generate_key())
    sealed = box.seal(Secret("x" * 24))
    with engine.begin() as conn:
        a = create_tenant(conn, box, "a").account_id
        for _ in range(3):
            _add(conn, a, sealed)
    migrate(engine)
    with engine.connect() as conn:
        assert _counted(conn) == _actual(conn) == {a: 3}
    _alembic(engine, BEFORE, down=True)
    assert "instance_counts" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        _add(conn, a, sealed)  # no trigger is left to count into a missing table
    migrate(engine)
    with engine.connect() as conn:
        assert _counted(conn) == _actual(conn) == {a: 4}
