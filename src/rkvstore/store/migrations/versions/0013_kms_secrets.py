"""KMS secrets for Redis accounts (issue 12, docs/kms.md): secrets and their versions.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kms_secrets",
        sa.Column("secret_id", sa.String(32), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(16),
            sa.ForeignKey(
                "tenants.account_id",
                ondelete="CASCADE",
                name="fk_kms_secrets_account_id_tenants",
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(192), nullable=False),
        sa.Column("sub_type", sa.String(16), nullable=False),
        sa.Column("instance_id", sa.String(32), nullable=False),
        sa.Column("extended_config", sa.Text, nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("tags", sa.Text, nullable=False),
        sa.Column("data_key", sa.Text, nullable=False),
        sa.Column("rotation_enabled", sa.Boolean, nullable=False),
        sa.Column("rotation_interval", sa.Integer, nullable=True),
        sa.Column("grace_period", sa.Integer, nullable=True),
        sa.Column("next_rotation_at", sa.Float, nullable=True),
        sa.Column("last_rotation_at", sa.Float, nullable=True),
        sa.Column("planned_delete_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("account_id", "name", name="uq_kms_secrets_account_id_name"),
    )
    op.create_index("ix_kms_secrets_next_rotation_at", "kms_secrets", ["next_rotation_at"])
    op.create_table(
        "kms_secret_versions",
        sa.Column(
            "secret_id",
            sa.String(32),
            sa.ForeignKey(
                "kms_secrets.secret_id",
                ondelete="CASCADE",
                name="fk_kms_secret_versions_secret_id_kms_secrets",
            ),
            primary_key=True,
        ),
        sa.Column("version_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("account_name", sa.String(128), nullable=False),
        sa.Column("password_sealed", sa.Text, nullable=True),
        sa.Column("grace_until", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kms_secret_versions")
    op.drop_index("ix_kms_secrets_next_rotation_at", "kms_secrets")
    op.drop_table("kms_secrets")
