"""The policies on a RAM user, read on every request a RAM user makes.

Authorization (``iam.authorize``) and listing visibility (``iam.visibility``)
read them for every product's actions; RAM the product writes them
(``products.ram.store``).
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, bindparam, or_, select

from rkvstore.iam.system_policies import SYSTEM_POLICIES
from rkvstore.store.tables import (
    ram_attachments,
    ram_group_members,
    ram_policies,
    ram_policy_versions,
)

SYSTEM, CUSTOM = "System", "Custom"
USER, GROUP = "User", "Group"

_a, _p, _v, _m = ram_attachments, ram_policies, ram_policy_versions, ram_group_members
# Every policy attached to the user, directly or through a group, with the
# default version's document (a custom one's; a system one's is in code):
# one query on every request a RAM user makes.
_DOCUMENTS_FOR_USER = (
    select(_a.c.policy_type, _a.c.policy_name, _v.c.document)
    .select_from(_a)
    .outerjoin(
        _p,
        and_(
            _a.c.policy_type == CUSTOM,
            _p.c.account_id == _a.c.account_id,
            _p.c.policy_name == _a.c.policy_name,
        ),
    )
    .outerjoin(
        _v,
        and_(
            _v.c.account_id == _p.c.account_id,
            _v.c.policy_name == _p.c.policy_name,
            _v.c.version_id == _p.c.default_version,
        ),
    )
    .where(
        _a.c.account_id == bindparam("account_id"),
        or_(
            and_(_a.c.principal_type == USER, _a.c.principal_name == bindparam("user_name")),
            and_(
                _a.c.principal_type == GROUP,
                _a.c.principal_name.in_(
                    select(_m.c.group_name).where(
                        _m.c.account_id == bindparam("account_id"),
                        _m.c.user_name == bindparam("user_name"),
                    )
                ),
            ),
        ),
    )
)


def documents_for_user(conn: Connection, account_id: str, user_name: str) -> list[str]:
    """The default-version documents of every policy on the user, directly or by group."""
    documents: list[str] = []
    for row in conn.execute(
        _DOCUMENTS_FOR_USER, {"account_id": account_id, "user_name": user_name}
    ):
        if row.policy_type == SYSTEM:
            system = SYSTEM_POLICIES.get(row.policy_name)
            if system is not None:
                documents.append(system[1])
        elif row.document is not None:
            documents.append(row.document)
    return documents
