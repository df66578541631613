"""An account's previous password and the KMS secret that manages it (issue 12).

``previous_sha256``: the password a rotation keeps valid for its grace period,
held on every node beside the current one. ``managed_by``: the id of the KMS
secret that manages the account; R-kvstore refuses to change such an account.
Existing accounts start with neither.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on SQLite too (as 0011): nullable, no default, nothing to copy.
    op.add_column("accounts", sa.Column("previous_sha256", sa.String(64), nullable=True))
    op.add_column("accounts", sa.Column("managed_by", sa.String(64), nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "managed_by")  # SQLite 3.35+: DROP COLUMN in place
    op.drop_column("accounts", "previous_sha256")
