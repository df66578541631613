"""RAM: users, groups, memberships, custom policies and their versions, attachments.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _tenant_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(
        "tenants.account_id", ondelete="CASCADE", name=f"fk_{table}_account_id_tenants"
    )


def upgrade() -> None:
    op.create_table(
        "ram_users",
        sa.Column("account_id", sa.String(16), _tenant_fk("ram_users"), primary_key=True),
        sa.Column("user_name", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("email", sa.String(256), nullable=False),
        sa.Column("mobile_phone", sa.String(64), nullable=False),
        sa.Column("comments", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("user_id", name="uq_ram_users_user_id"),
    )
    op.create_table(
        "ram_groups",
        sa.Column("account_id", sa.String(16), _tenant_fk("ram_groups"), primary_key=True),
        sa.Column("group_name", sa.String(64), primary_key=True),
        sa.Column("group_id", sa.String(32), nullable=False),
        sa.Column("comments", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("group_id", name="uq_ram_groups_group_id"),
    )
    op.create_table(
        "ram_group_members",
        sa.Column("account_id", sa.String(16), primary_key=True),
        sa.Column("group_name", sa.String(64), primary_key=True),
        sa.Column("user_name", sa.String(64), primary_key=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ram_policies",
        sa.Column("account_id", sa.String(16), _tenant_fk("ram_policies"), primary_key=True),
        sa.Column("policy_name", sa.String(128), primary_key=True),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("default_version", sa.String(16), nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ram_policy_versions",
        sa.Column("account_id", sa.String(16), primary_key=True),
        sa.Column("policy_name", sa.String(128), primary_key=True),
        sa.Column("version_id", sa.String(16), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "ram_attachments",
        sa.Column("account_id", sa.String(16), primary_key=True),
        sa.Column("principal_type", sa.String(8), primary_key=True),
        sa.Column("principal_name", sa.String(64), primary_key=True),
        sa.Column("policy_type", sa.String(8), primary_key=True),
        sa.Column("policy_name", sa.String(128), primary_key=True),
        sa.Column("attached_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "ram_attachments",
        "ram_policy_versions",
        "ram_policies",
        "ram_group_members",
        "ram_groups",
        "ram_users",
    ):
        op.drop_table(table)
