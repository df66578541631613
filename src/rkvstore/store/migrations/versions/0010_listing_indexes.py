"""Indexes for listings paged by the database (issue 10).

DescribeInstances counts and pages a tenant's instances ordered by creation
(``created_at``, then ``instance_id``): an index on the tenant, then that order,
serves both without reading the table, and holds the id the permission
condition of a RAM user tests. It replaces the index on the tenant alone, which
it begins with. ListPolicies counts the attachments of the policies of a page
by tenant and policy.

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0010"
# 0009 is reserved for another branch of issue 10: when both are merged, this
# revision follows it (down_revision = "0009").
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_instances_account_id_created_at",
        "instances",
        ["account_id", "created_at", "instance_id"],
    )
    op.drop_index("ix_instances_account_id", table_name="instances")
    op.create_index(
        "ix_ram_attachments_account_id_policy",
        "ram_attachments",
        ["account_id", "policy_type", "policy_name"],
    )


def downgrade() -> None:
    op.drop_index("ix_ram_attachments_account_id_policy", table_name="ram_attachments")
    op.create_index("ix_instances_account_id", "instances", ["account_id"])
    op.drop_index("ix_instances_account_id_created_at", table_name="instances")
