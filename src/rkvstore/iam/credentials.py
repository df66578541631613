"""Tenants and AccessKeys: creation, lookup, and the root key of a new deployment."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, func, insert, select

from rkvstore.crypto import SecretBox
from rkvstore.secret import Secret
from rkvstore.store.tables import access_keys, tenants

_ALNUM = string.ascii_letters + string.digits
ACTIVE = "Active"
INACTIVE = "Inactive"


def new_account_id() -> str:
    return str(secrets.randbelow(9 * 10**15) + 10**15)  # 16 digits, no leading zero


def new_access_key_id() -> str:
    return "LTAI" + "".join(secrets.choice(_ALNUM) for _ in range(20))


def new_access_key_secret() -> Secret:
    return Secret("".join(secrets.choice(_ALNUM) for _ in range(30)))


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    account_id: str
    user_name: str | None  # None: the tenant's root principal
    secret: Secret
    status: str

    @property
    def is_root(self) -> bool:
        return self.user_name is None

    @property
    def principal_name(self) -> str:
        return "root" if self.user_name is None else self.user_name


@dataclass(frozen=True)
class NewTenant:
    account_id: str
    name: str
    access_key_id: str
    access_key_secret: Secret


def count_tenants(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(tenants)).scalar_one())


def create_tenant(
    conn: Connection,
    box: SecretBox,
    name: str,
    *,
    access_key_id: str | None = None,
    access_key_secret: Secret | None = None,
) -> NewTenant:
    """Create a tenant and its root AccessKey (random unless given)."""
    now = datetime.now(UTC)
    account_id = new_account_id()
    conn.execute(insert(tenants).values(account_id=account_id, name=name, created_at=now))
    key_id = access_key_id or new_access_key_id()
    secret = access_key_secret or new_access_key_secret()
    add_access_key(conn, box, account_id, None, key_id, secret)
    return NewTenant(account_id, name, key_id, secret)


def add_access_key(
    conn: Connection,
    box: SecretBox,
    account_id: str,
    user_name: str | None,
    access_key_id: str,
    secret: Secret,
) -> None:
    conn.execute(
        insert(access_keys).values(
            access_key_id=access_key_id,
            account_id=account_id,
            user_name=user_name,
            secret_encrypted=box.seal(secret),
            status=ACTIVE,
            created_at=datetime.now(UTC),
        )
    )


def find_access_key(conn: Connection, box: SecretBox, access_key_id: str) -> AccessKey | None:
    row = conn.execute(
        select(access_keys).where(access_keys.c.access_key_id == access_key_id)
    ).first()
    if row is None:
        return None
    return AccessKey(
        access_key_id=row.access_key_id,
        account_id=row.account_id,
        user_name=row.user_name,
        secret=box.open(row.secret_encrypted),
        status=row.status,
    )
