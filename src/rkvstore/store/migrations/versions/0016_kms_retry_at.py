"""KMS: when the scheduler may look again at a secret whose last attempt failed.

A secret whose work cannot be done now (its instance not Normal, a node away)
would otherwise be picked again at every look and, many at once, fill every
look (docs/kms.md §5 "Scheduler"). NULL: no attempt has failed.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("kms_secrets", sa.Column("retry_at", sa.Float(), nullable=True))


def downgrade() -> None:
    op.drop_column("kms_secrets", "retry_at")
