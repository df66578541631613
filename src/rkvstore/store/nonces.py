"""Signature nonces, shared by every process on the database."""

from __future__ import annotations

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from rkvstore.store.tables import nonces

_INSERT = insert(nonces)


def use_nonce(engine: Engine, access_key_id: str, nonce: str, expires_at: int) -> bool:
    """Record a nonce; ``False`` when it was already used (and not yet purged)."""
    values = {"access_key_id": access_key_id, "nonce": nonce, "expires_at": expires_at}
    try:
        with engine.begin() as conn:
            conn.execute(_INSERT, values)
    except IntegrityError:
        return False
    return True


def purge_expired_nonces(engine: Engine, now: int) -> int:
    with engine.begin() as conn:
        return conn.execute(delete(nonces).where(nonces.c.expires_at < now)).rowcount
