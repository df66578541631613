"""An instance's release protection (ModifyInstanceAttribute's InstanceReleaseProtection).

DeleteInstance refuses an instance that has it. Existing instances start without.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on SQLite too: a batch would copy the table (its default is
    # an expression) and lose the triggers that keep instance_counts (migration 0010).
    op.add_column(
        "instances",
        sa.Column("release_protection", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("instances", "release_protection")  # SQLite 3.35+: DROP COLUMN in place
