"""Listings paged by the database (issue 10): their indexes, and each tenant's count.

DescribeInstances counts and pages a tenant's instances ordered by creation
(``created_at``, then ``instance_id``): an index on the tenant, then that order,
serves both without reading the table, and holds the id the permission
condition of a RAM user tests. It replaces the index on the tenant alone, which
it begins with. ListPolicies counts the attachments of the policies of a page
by tenant and policy.

``instance_counts`` holds how many instances each tenant has, so that the
TotalCount of a whole tenant's listing is one row at any size. Triggers keep it
in the transaction that inserts or deletes an instance, whichever code (or
cascade) does it; it starts from a count of the instances there are.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER instances_counted_insert AFTER INSERT ON instances
    BEGIN
        INSERT INTO instance_counts (account_id, instances) VALUES (NEW.account_id, 1)
        ON CONFLICT (account_id) DO UPDATE SET instances = instances + 1;
    END""",
    """CREATE TRIGGER instances_counted_delete AFTER DELETE ON instances
    BEGIN
        UPDATE instance_counts SET instances = instances - 1 WHERE account_id = OLD.account_id;
    END""",
    """CREATE TRIGGER instances_counted_move AFTER UPDATE OF account_id ON instances
    WHEN NEW.account_id IS NOT OLD.account_id
    BEGIN
        UPDATE instance_counts SET instances = instances - 1 WHERE account_id = OLD.account_id;
        INSERT INTO instance_counts (account_id, instances) VALUES (NEW.account_id, 1)
        ON CONFLICT (account_id) DO UPDATE SET instances = instances + 1;
    END""",
)
_POSTGRESQL_TRIGGERS = (
    # OR REPLACE: a function outlives the tables it serves (a wiped schema keeps it).
    """CREATE OR REPLACE FUNCTION rkvstore_count_instances() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP IN ('DELETE', 'UPDATE') THEN
            UPDATE instance_counts SET instances = instances - 1
            WHERE account_id = OLD.account_id;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO instance_counts (account_id, instances) VALUES (NEW.account_id, 1)
            ON CONFLICT (account_id)
            DO UPDATE SET instances = instance_counts.instances + 1;
        END IF;
        RETURN NULL;
    END
    $$""",
    """CREATE TRIGGER instances_counted AFTER INSERT OR DELETE ON instances
    FOR EACH ROW EXECUTE FUNCTION rkvstore_count_instances()""",
    """CREATE TRIGGER instances_counted_move AFTER UPDATE OF account_id ON instances
    FOR EACH ROW WHEN (NEW.account_id IS DISTINCT FROM OLD.account_id)
    EXECUTE FUNCTION rkvstore_count_instances()""",
)


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
    op.create_table(
        "instance_counts",
        sa.Column(
            "account_id",
            sa.String(16),
            sa.ForeignKey(
                "tenants.account_id",
                ondelete="CASCADE",
                name="fk_instance_counts_account_id_tenants",
            ),
            primary_key=True,
        ),
        sa.Column("instances", sa.Integer(), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # A process still running the older code must not add or remove an
        # instance between the count and the triggers (until this commits).
        # SQLite: this transaction holds the database's write lock already.
        op.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        "INSERT INTO instance_counts (account_id, instances)"
        " SELECT account_id, count(*) FROM instances GROUP BY account_id"
    )
    for statement in _POSTGRESQL_TRIGGERS if postgresql else _SQLITE_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER instances_counted_move ON instances")
        op.execute("DROP TRIGGER instances_counted ON instances")
        op.execute("DROP FUNCTION rkvstore_count_instances()")
    else:
        for action in ("insert", "delete", "move"):
            op.execute(f"DROP TRIGGER instances_counted_{action}")
    op.drop_table("instance_counts")
    op.drop_index("ix_ram_attachments_account_id_policy", table_name="ram_attachments")
    op.create_index("ix_instances_account_id", "instances", ["account_id"])
    op.drop_index("ix_instances_account_id_created_at", table_name="instances")
