"""The audit trail (issue 14): one ActionTrail event per call that reached authorization.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_events",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("account_id", sa.String(16), nullable=False),
        sa.Column("event_ms", sa.BigInteger, nullable=False),
        sa.Column("event_name", sa.String(64), nullable=False),
        sa.Column("service_name", sa.String(32), nullable=False),
        sa.Column("api_version", sa.String(16), nullable=False),
        sa.Column("event_rw", sa.String(8), nullable=False),
        sa.Column("principal_type", sa.String(16), nullable=False),
        sa.Column("principal_name", sa.String(64), nullable=False),
        sa.Column("access_key_id", sa.String(64), nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("resource_type", sa.String(64), nullable=False),
        sa.Column("resource_name", sa.String(512), nullable=False),
        sa.Column("error_code", sa.String(128), nullable=True),
        sa.Column("error_message", sa.String(1024), nullable=True),
    )
    op.create_index(
        "ix_audit_events_account_id_event_ms",
        "audit_events",
        ["account_id", "event_ms", "event_id"],
    )
    op.create_index("ix_audit_events_event_ms", "audit_events", ["event_ms"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_event_ms", "audit_events")
    op.drop_index("ix_audit_events_account_id_event_ms", "audit_events")
    op.drop_table("audit_events")
