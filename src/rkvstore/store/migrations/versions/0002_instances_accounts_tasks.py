"""Instances, their nodes and accounts, and the per-instance task slot.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("instance_id", sa.String(32), primary_key=True),
        sa.Column(
            "account_id",
            sa.String(16),
            sa.ForeignKey(
                "tenants.account_id", ondelete="CASCADE", name="fk_instances_account_id_tenants"
            ),
            nullable=False,
        ),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("engine_version", sa.String(8), nullable=False),
        sa.Column("architecture", sa.String(16), nullable=False),
        sa.Column("node_type", sa.String(16), nullable=False),
        sa.Column("shard_count", sa.Integer, nullable=False),
        sa.Column("zone_id", sa.String(64), nullable=False),
        sa.Column("instance_class", sa.String(64), nullable=False),
        sa.Column("charge_type", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("mgmt_password_encrypted", sa.Text, nullable=False),
        sa.Column("admin_user", sa.String(128), nullable=True),
        sa.Column("admin_password_encrypted", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_instances_account_id", "instances", ["account_id"])
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(64), primary_key=True),
        sa.Column(
            "instance_id",
            sa.String(32),
            sa.ForeignKey(
                "instances.instance_id", ondelete="CASCADE", name="fk_nodes_instance_id_instances"
            ),
            nullable=False,
        ),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("master_node_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_nodes_instance_id", "nodes", ["instance_id"])
    op.create_table(
        "accounts",
        sa.Column(
            "instance_id",
            sa.String(32),
            sa.ForeignKey(
                "instances.instance_id",
                ondelete="CASCADE",
                name="fk_accounts_instance_id_instances",
            ),
            primary_key=True,
        ),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("password_sha256", sa.String(64), nullable=False),
        sa.Column("privilege", sa.String(32), nullable=False),
        sa.Column("account_type", sa.String(16), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tasks",
        sa.Column("instance_id", sa.String(32), primary_key=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("lease_expires_at", sa.Float, nullable=False),
        sa.UniqueConstraint("task_id", name="uq_tasks_task_id"),
    )


def downgrade() -> None:
    op.drop_table("tasks")
    op.drop_table("accounts")
    op.drop_index("ix_nodes_instance_id", table_name="nodes")
    op.drop_table("nodes")
    op.drop_index("ix_instances_account_id", table_name="instances")
    op.drop_table("instances")
