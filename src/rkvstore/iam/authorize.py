"""Who may call what: root may do anything in its tenant; a RAM user, what its policies allow."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from rkvstore import errors
from rkvstore.errors import ApiError
from rkvstore.iam.attached_policies import documents_for_user
from rkvstore.iam.credentials import AccessKey
from rkvstore.iam.policy import Decision, Policy, evaluate, parse_policy

if TYPE_CHECKING:
    from rkvstore.services.context import Deps


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


@lru_cache(maxsize=4096)
def _parsed(document: str) -> Policy:
    # Documents were validated when stored, so this cannot fail here.
    return parse_policy(document)


def authorize(
    deps: Deps, caller: AccessKey, action: str, resource_arns: list[str], context: dict[str, Any]
) -> None:
    """Raise ``Forbidden.RAM`` unless ``caller`` may do ``action`` on each of ``resource_arns``.

    Every ARN is built from the caller's own account ID, so no policy can
    reach another tenant: there, an instance simply does not exist.
    """
    decisions = decide(deps, caller, action, resource_arns, context)
    if "ExplicitDeny" in decisions:
        raise denied(caller, action, explicit=True)
    if any(d != "Allow" for d in decisions):
        raise denied(caller, action, explicit=False)


def decide(
    deps: Deps, caller: AccessKey, action: str, resource_arns: list[str], context: dict[str, Any]
) -> list[Decision]:
    """The decision for each ARN, without raising (a list filtered by permission uses it)."""
    if caller.is_root:
        return ["Allow"] * len(resource_arns)
    assert caller.user_name is not None
    with deps.single.connect() as conn:
        documents = documents_for_user(conn, caller.account_id, caller.user_name)
    policies = [_parsed(d) for d in documents]
    return [evaluate(policies, action, arn, context) for arn in resource_arns]
