"""Migration 0008 on SQLite and PostgreSQL: what earlier races left behind goes, and stays gone.

A database migrated to 0007 is given the rows the races of issue 9 could leave
(a key, a membership and attachments of users, groups and policies that no
longer exist); upgrading removes exactly those, and the foreign keys then
refuse them, while renames carry keys and memberships along.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from cryptography.fernet import Fernet
from sqlalchemy import Engine, delete, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError

from rkvstore.crypto import SecretBox
from rkvstore.iam.credentials import add_access_key, create_tenant, find_access_key
from rkvstore.secret import Secret
from rkvstore.store import db as store_db
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import (
    access_keys,
    ram_attachments,
    ram_group_members,
    ram_groups,
    ram_policies,
    ram_users,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MIGRATIONS = Path(store_db.__file__).parent / "migrations"


def _upgrade(engine: Engine, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _user(name: str, account_id: str) -> dict[str, object]:
    return {
        "account_id": account_id,
        "user_name": name,
        "user_id": f"id-{name}",
        "display_name": "",
        "email": "",
        "mobile_phone": "",
        "comments": "",
        "created_at": NOW,
        "updated_at": NOW,
    }


def _attachment(
    account_id: str, kind: str, principal: str, ptype: str, policy: str
) -> dict[str, object]:
    return {
        "account_id": account_id,
        "principal_type": kind,
        "principal_name": principal,
        "policy_type": ptype,
        "policy_name": policy,
        "attached_at": NOW,
    }


def test_upgrade_removes_orphans_and_keeps_the_rest(engine: Engine) -> None:
    _upgrade(engine, "0007")
    box = SecretBox(Fernet.generate_key())
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "acme")
        acct = tenant.account_id
        conn.execute(insert(ram_users).values(_user("alice", acct)))
        conn.execute(
            insert(ram_groups).values(
                account_id=acct,
                group_name="ops",
                group_id="g1",
                comments="",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(ram_policies).values(
                account_id=acct,
                policy_name="kept",
                description="",
                default_version="v1",
                next_version=2,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        add_access_key(conn, box, acct, "alice", "LTAIkept", Secret("s1"))
        add_access_key(conn, box, acct, "ghost", "LTAIorphan", Secret("s2"))
        for group, user in (("ops", "alice"), ("ops", "ghost"), ("gone", "alice")):
            conn.execute(
                insert(ram_group_members).values(
                    account_id=acct, group_name=group, user_name=user, joined_at=NOW
                )
            )
        for row in (
            _attachment(acct, "User", "alice", "System", "AliyunKvstoreFullAccess"),
            _attachment(acct, "User", "alice", "Custom", "kept"),
            _attachment(acct, "User", "ghost", "System", "AliyunKvstoreFullAccess"),
            _attachment(acct, "Group", "gone", "System", "AliyunKvstoreFullAccess"),
            _attachment(acct, "User", "alice", "Custom", "deleted"),
        ):
            conn.execute(insert(ram_attachments).values(row))
        assert find_access_key(conn, box, "LTAIorphan") is not None  # the finding

    migrate(engine)  # to head

    with engine.connect() as conn:
        keys = set(conn.execute(select(access_keys.c.access_key_id)).scalars())
        members = {
            tuple(row)
            for row in conn.execute(
                select(ram_group_members.c.group_name, ram_group_members.c.user_name)
            )
        }
        attached = {
            tuple(row)
            for row in conn.execute(
                select(ram_attachments.c.principal_name, ram_attachments.c.policy_name)
            )
        }
        assert find_access_key(conn, box, "LTAIorphan") is None
    assert keys == {tenant.access_key_id, "LTAIkept"}
    assert members == {("ops", "alice")}
    assert attached == {("alice", "AliyunKvstoreFullAccess"), ("alice", "kept")}


def test_foreign_keys_refuse_orphans_and_follow_renames(engine: Engine) -> None:
    migrate(engine)
    fks = {fk["name"] for fk in inspect(engine).get_foreign_keys("access_keys")}
    assert "fk_access_keys_user_ram_users" in fks
    box = SecretBox(Fernet.generate_key())
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "acme")
        acct = tenant.account_id
        conn.execute(insert(ram_users).values(_user("alice", acct)))
        conn.execute(
            insert(ram_groups).values(
                account_id=acct,
                group_name="ops",
                group_id="g1",
                comments="",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        add_access_key(conn, box, acct, "alice", "LTAIalice", Secret("s1"))
        conn.execute(
            insert(ram_group_members).values(
                account_id=acct, group_name="ops", user_name="alice", joined_at=NOW
            )
        )
    for orphan in (
        lambda c: add_access_key(c, box, acct, "ghost", "LTAIghost", Secret("s2")),
        lambda c: c.execute(
            insert(ram_group_members).values(
                account_id=acct, group_name="ops", user_name="ghost", joined_at=NOW
            )
        ),
        lambda c: c.execute(
            insert(ram_group_members).values(
                account_id=acct, group_name="gone", user_name="alice", joined_at=NOW
            )
        ),
        lambda c: c.execute(
            delete(ram_users).where(
                ram_users.c.account_id == acct, ram_users.c.user_name == "alice"
            )
        ),
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            orphan(conn)
    with engine.begin() as conn:
        conn.execute(
            update(ram_users)
            .where(ram_users.c.account_id == acct, ram_users.c.user_name == "alice")
            .values(user_name="alicia")
        )
    with engine.connect() as conn:
        key = find_access_key(conn, box, "LTAIalice")
        member = conn.execute(select(ram_group_members.c.user_name)).scalar_one()
    assert key is not None and key.user_name == "alicia"
    assert member == "alicia"
