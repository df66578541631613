"""Users a CreateAccount puts on the nodes before the account is recorded.

Should the change fail (a node that does not answer in time), a node may
keep the user although the database has no account: the row stays, and the
reconciler takes the user off every node, on registered deployments too,
then drops the row. A recorded account drops it at once.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_users",
        sa.Column(
            "instance_id",
            sa.String(32),
            sa.ForeignKey(
                "instances.instance_id",
                ondelete="CASCADE",
                name="fk_pending_users_instance_id_instances",
            ),
            primary_key=True,
        ),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pending_users")
