"""The database schema. Migrations in ``migrations/versions`` create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(64), primary_key=True),
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # NULL: the tenant's root principal; else the RAM user's name.
    Column("user_name", String(64), nullable=True),
    # Fernet token of the secret; the plaintext is never stored.
    Column("secret_encrypted", Text, nullable=False),
    Column("status", String(16), nullable=False),  # Active | Inactive
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A nonce may be used once per AccessKey within the timestamp window. The
# primary key makes the check-and-insert one atomic statement on every engine.
nonces = Table(
    "nonces",
    metadata,
    Column("access_key_id", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),  # unix seconds
    Index("ix_nonces_expires_at", "expires_at"),
)
