"""RAM integrity (issue 9): nothing may outlive the user, group or policy it hangs from.

Races of DeleteUser (or DeletePolicy, or a rename) with CreateAccessKey,
AttachPolicyTo* or AddUserToGroup could leave, before this revision, a key
that still authenticated for a deleted user, or an attachment or membership
that a later user, group or policy of the same name inherited. Such rows are
removed here, since they grant what nobody granted; then foreign keys keep
keys and memberships to users (and groups) that exist, renames included.
Attachments name a user or a group (one column for both), so no foreign key
can hold them; the services serialise them with row locks (ram_store).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ORPHANS = (
    # Keys of RAM users that no longer exist (a root key has no user_name).
    """DELETE FROM access_keys WHERE user_name IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM ram_users u
        WHERE u.account_id = access_keys.account_id AND u.user_name = access_keys.user_name)""",
    """DELETE FROM ram_group_members WHERE NOT EXISTS (
        SELECT 1 FROM ram_users u
        WHERE u.account_id = ram_group_members.account_id
          AND u.user_name = ram_group_members.user_name)
      OR NOT EXISTS (
        SELECT 1 FROM ram_groups g
        WHERE g.account_id = ram_group_members.account_id
          AND g.group_name = ram_group_members.group_name)""",
    """DELETE FROM ram_attachments WHERE principal_type = 'User' AND NOT EXISTS (
        SELECT 1 FROM ram_users u
        WHERE u.account_id = ram_attachments.account_id
          AND u.user_name = ram_attachments.principal_name)""",
    """DELETE FROM ram_attachments WHERE principal_type = 'Group' AND NOT EXISTS (
        SELECT 1 FROM ram_groups g
        WHERE g.account_id = ram_attachments.account_id
          AND g.group_name = ram_attachments.principal_name)""",
    """DELETE FROM ram_attachments WHERE policy_type = 'Custom' AND NOT EXISTS (
        SELECT 1 FROM ram_policies p
        WHERE p.account_id = ram_attachments.account_id
          AND p.policy_name = ram_attachments.policy_name)""",
)


def upgrade() -> None:
    for statement in _ORPHANS:
        op.execute(sa.text(statement))
    with op.batch_alter_table("access_keys") as batch:
        batch.create_foreign_key(
            "fk_access_keys_user_ram_users",
            "ram_users",
            ["account_id", "user_name"],
            ["account_id", "user_name"],
            onupdate="CASCADE",
        )
        batch.create_index("ix_access_keys_account_id_user_name", ["account_id", "user_name"])
    with op.batch_alter_table("ram_group_members") as batch:
        batch.create_foreign_key(
            "fk_ram_group_members_user_ram_users",
            "ram_users",
            ["account_id", "user_name"],
            ["account_id", "user_name"],
            onupdate="CASCADE",
        )
        batch.create_foreign_key(
            "fk_ram_group_members_group_ram_groups",
            "ram_groups",
            ["account_id", "group_name"],
            ["account_id", "group_name"],
            onupdate="CASCADE",
        )
        batch.create_index("ix_ram_group_members_account_id_user_name", ["account_id", "user_name"])


def downgrade() -> None:
    with op.batch_alter_table("ram_group_members") as batch:
        batch.drop_index("ix_ram_group_members_account_id_user_name")
        batch.drop_constraint("fk_ram_group_members_group_ram_groups", type_="foreignkey")
        batch.drop_constraint("fk_ram_group_members_user_ram_users", type_="foreignkey")
    with op.batch_alter_table("access_keys") as batch:
        batch.drop_index("ix_access_keys_account_id_user_name")
        batch.drop_constraint("fk_access_keys_user_ram_users", type_="foreignkey")
