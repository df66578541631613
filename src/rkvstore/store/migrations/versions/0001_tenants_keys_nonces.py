"""Tenants, AccessKeys and signature nonces.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("account_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("name", name="uq_tenants_name"),
    )
    op.create_table(
        "access_keys",
        sa.Column("access_key_id", sa.String(64), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(16),
            sa.ForeignKey(
                "tenants.account_id",
                ondelete="CASCADE",
                name="fk_access_keys_account_id_tenants",
            ),
            nullable=False,
        ),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("access_key_id", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_nonces_expires_at", "nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_nonces_expires_at", table_name="nonces")
    op.drop_table("nonces")
    op.drop_table("access_keys")
    op.drop_table("tenants")
