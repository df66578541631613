"""The reconciler's state in the database, shared by every process (issue 10).

Before this revision each process kept its flags (``mark_dirty``) and what
its last pass found in memory, and passed over every instance on every
interval. Now a row per instance holds the flags, the nodes out of reach, the
next scheduled verify and the claim of the process verifying it. Rows are
created by the reconciler itself (for every ``Normal`` instance, spread over
the verify interval), so none are written here.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_state",
        sa.Column(
            "instance_id",
            sa.String(32),
            sa.ForeignKey(
                "instances.instance_id",
                ondelete="CASCADE",
                name="fk_reconcile_state_instance_id_instances",
            ),
            primary_key=True,
        ),
        sa.Column("dirty", sa.Text, nullable=True),
        sa.Column("flags", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unreachable", sa.Text, nullable=True),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("round", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retry_at", sa.Float, nullable=True),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.Float, nullable=True),
        sa.Column("verified_at", sa.Float, nullable=True),
    )
    op.create_index("ix_reconcile_state_due_at", "reconcile_state", ["due_at"])
    op.create_index("ix_reconcile_state_retry_at", "reconcile_state", ["retry_at"])


def downgrade() -> None:
    op.drop_table("reconcile_state")
