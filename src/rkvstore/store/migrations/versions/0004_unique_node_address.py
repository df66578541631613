"""One node, one instance: a node's address is unique across instances.

Two registrations of one deployment would fight over its management user;
the check before inserting is not enough when two arrive at once.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.create_unique_constraint("uq_nodes_host_port", ["host", "port"])


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_constraint("uq_nodes_host_port", type_="unique")
