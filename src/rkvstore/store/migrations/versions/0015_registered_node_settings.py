"""What a registered deployment's nodes need beyond a login (issue 13).

``accounts_in_memory``: a node of the deployment has neither an ACL file nor a
config file, so what rkvstore sets there lasts until it restarts, and the
reconciler watches it closely. ``tls_encrypted``: how to reach the nodes over
TLS (CA bundle, client certificate and key, server name), one Fernet token,
like the admin password; NULL: plain TCP. ``sentinel_encrypted``: the Sentinels
that manage the deployment (addresses, master name, password), one Fernet token;
NULL: no Sentinel.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs, as in 0011: a batch would copy the table and lose its triggers.
    op.add_column(
        "instances",
        sa.Column("accounts_in_memory", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("instances", sa.Column("tls_encrypted", sa.Text(), nullable=True))
    op.add_column("instances", sa.Column("sentinel_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("instances", "sentinel_encrypted")
    op.drop_column("instances", "tls_encrypted")
    op.drop_column("instances", "accounts_in_memory")
