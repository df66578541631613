"""Who may call what. The root principal may do everything in its own tenant."""

from __future__ import annotations

from typing import Any

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.credentials import AccessKey


def denied(caller: AccessKey, action: str, explicit: bool) -> ApiError:
    return ApiError(
        errors.FORBIDDEN_RAM,
        detail={
            "AuthAction": action,
            "AuthPrincipalType": "SubUser",
            "AuthPrincipalDisplayName": caller.principal_name,
            "AuthPrincipalOwnerId": caller.account_id,
            "NoPermissionType": "ExplicitDeny" if explicit else "ImplicitDeny",
            "PolicyType": "AccountLevelIdentityBasedPolicy",
        },
    )


def authorize(caller: AccessKey, action: str, resource_arn: str, context: dict[str, Any]) -> None:
    """Raise ``Forbidden.RAM`` unless ``caller`` may do ``action`` on ``resource_arn``.

    Every resource ARN is built from the caller's own account ID, so the root
    principal's own tenant is the only one it can name. RAM users (and their
    policies) arrive with the RAM API; until a user has a policy, it has no rights.
    """
    if caller.is_root:
        return
    raise denied(caller, action, explicit=False)
