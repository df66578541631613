"""A password being set on a Redis without ACLs, recorded before the nodes get it.

On Redis before 6.0 the account's password is also the one rkvstore logs in
with. Should rkvstore die between changing the nodes and recording the change,
the next process still needs a way in: the pending passwords (Fernet tokens,
one per line, the last few changes begun), with which it puts the recorded one
back.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("pending_password_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("pending_password_encrypted")
