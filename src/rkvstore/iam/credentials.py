"""Tenants and AccessKeys: creation, lookup, and the root key of a new deployment."""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, bindparam, func, insert, select

from rkvstore.crypto import SecretBox
from rkvstore.secret import Secret
from rkvstore.store.tables import access_keys, tenants

_ALNUM = string.ascii_letters + string.digits
ACTIVE = "Active"
INACTIVE = "Inactive"
# How long a process trusts an AccessKey it looked up: a key disabled or
# deleted by any process is refused everywhere this long after, at most.
ACCESS_KEY_CACHE_SECONDS = 1.0
ACCESS_KEYS_KEPT = 10_000


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


_FIND_KEY = select(access_keys).where(access_keys.c.access_key_id == bindparam("key_id"))


def find_access_key(conn: Connection, box: SecretBox, access_key_id: str) -> AccessKey | None:
    row = conn.execute(_FIND_KEY, {"key_id": access_key_id}).first()
    if row is None:
        return None
    return AccessKey(
        access_key_id=row.access_key_id,
        account_id=row.account_id,
        user_name=row.user_name,
        secret=box.open(row.secret_encrypted),
        status=row.status,
    )


class AccessKeyCache:
    """AccessKeys this process looked up less than ``max_age`` seconds ago.

    An entry's age counts from before the lookup that filled it, so a key
    disabled or deleted at time T (by any process) is refused by every
    process from T + ``max_age`` on. Changes made by this process are
    forgotten at once. A key that was not found is not remembered: a key
    just created elsewhere works at once.
    """

    def __init__(
        self,
        max_age: float = ACCESS_KEY_CACHE_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self._keys: dict[str, tuple[float, AccessKey]] = {}
        self._lock = threading.Lock()
        # Bumped by ``forget``: a lookup that began before it must not store
        # what it read (the key as it was before this process changed it).
        self._generation = 0

    def get(self, engine: Engine, box: SecretBox, access_key_id: str) -> AccessKey | None:
        now = self.clock()
        with self._lock:
            cached = self._keys.get(access_key_id)
            generation = self._generation
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        with engine.connect() as conn:
            key = find_access_key(conn, box, access_key_id)
        with self._lock:
            if generation != self._generation:
                pass  # forgotten meanwhile: answer this once, remember nothing
            elif key is None:
                self._keys.pop(access_key_id, None)
            else:
                if len(self._keys) >= ACCESS_KEYS_KEPT:
                    self._keys.pop(next(iter(self._keys)))  # the oldest entry
                self._keys[access_key_id] = (now, key)
        return key

    def forget(self, access_key_id: str | None = None) -> None:
        """Drop one key (None: every key), after this process changed it."""
        with self._lock:
            self._generation += 1
            if access_key_id is None:
                self._keys.clear()
            else:
                self._keys.pop(access_key_id, None)
