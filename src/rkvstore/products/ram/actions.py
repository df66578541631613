"""RAM's actions (2015-05-01), declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from rkvstore.products.ram import groups, policies, users
from rkvstore.services.audit import Trail
from rkvstore.services.params import Param
from rkvstore.services.registry import ActionSpec, SpecMaker

RAM_VERSION = "2015-05-01"
MAX_ITEMS = Param("MaxItems", "int", default=100, min_value=1, max_value=1000)
USER_NAME = Param("UserName", required=True)
GROUP_NAME = Param("GroupName", required=True)
POLICY_NAME = Param("PolicyName", required=True)
POLICY_TYPE = Param("PolicyType", required=True)
POLICY_DOCUMENT = Param("PolicyDocument", required=True)


TRAIL = Trail(
    "Ram", {"user": "ACS::RAM::User", "group": "ACS::RAM::Group", "policy": "ACS::RAM::Policy"}
)
# users, groups, policies: global
_ram = SpecMaker(RAM_VERSION, "ram", regional_arns=False, trail=TRAIL)


def actions() -> list[ActionSpec]:
    user = "user/{UserName}"
    group = "group/{GroupName}"
    policy = "policy/{PolicyName}"
    optional_user = Param("UserName")
    return [
        _ram(
            "CreateUser",
            users.create_user,
            "create",
            user,
            USER_NAME,
            Param("DisplayName"),
            Param("Email"),
            Param("MobilePhone"),
            Param("Comments"),
        ),
        _ram("GetUser", users.get_user, "read", user, USER_NAME),
        _ram("ListUsers", users.list_users, "list", "user/*", Param("Marker"), MAX_ITEMS),
        _ram(
            "UpdateUser",
            users.update_user,
            "update",
            user,
            USER_NAME,
            Param("NewUserName"),
            Param("NewDisplayName"),
            Param("NewEmail"),
            Param("NewMobilePhone"),
            Param("NewComments"),
        ),
        _ram("DeleteUser", users.delete_user, "delete", user, USER_NAME),
        _ram(
            "CreateAccessKey",
            users.create_access_key,
            "create",
            user,
            optional_user,
            self_param="UserName",
        ),
        _ram(
            "ListAccessKeys",
            users.list_access_keys,
            "list",
            user,
            optional_user,
            self_param="UserName",
        ),
        _ram(
            "UpdateAccessKey",
            users.update_access_key,
            "update",
            user,
            optional_user,
            Param("UserAccessKeyId", required=True),
            Param("Status", required=True),
            self_param="UserName",
        ),
        _ram(
            "DeleteAccessKey",
            users.delete_access_key,
            "delete",
            user,
            optional_user,
            Param("UserAccessKeyId", required=True),
            self_param="UserName",
        ),
        _ram(
            "CreatePolicy",
            policies.create_policy,
            "create",
            policy,
            POLICY_NAME,
            POLICY_DOCUMENT,
            Param("Description", max_length=4096),
        ),
        _ram("GetPolicy", policies.get_policy, "read", policy, POLICY_NAME, POLICY_TYPE),
        _ram(
            "ListPolicies",
            policies.list_policies,
            "list",
            "policy/*",
            Param("PolicyType"),
            Param("Marker"),
            MAX_ITEMS,
        ),
        _ram(
            "DeletePolicy",
            policies.delete_policy,
            "delete",
            policy,
            POLICY_NAME,
            Param("CascadingDelete", "bool", default=False),
        ),
        _ram(
            "CreatePolicyVersion",
            policies.create_policy_version,
            "create",
            policy,
            POLICY_NAME,
            POLICY_DOCUMENT,
            Param("SetAsDefault", "bool", default=False),
            Param("RotateStrategy"),
        ),
        _ram(
            "AttachPolicyToUser",
            policies.attach_policy_to_user,
            "update",
            user,
            POLICY_TYPE,
            POLICY_NAME,
            USER_NAME,
            also_on=(policy,),
        ),
        _ram(
            "DetachPolicyFromUser",
            policies.detach_policy_from_user,
            "update",
            user,
            POLICY_TYPE,
            POLICY_NAME,
            USER_NAME,
            also_on=(policy,),
        ),
        _ram("ListPoliciesForUser", policies.list_policies_for_user, "list", user, USER_NAME),
        _ram("ListPoliciesForGroup", policies.list_policies_for_group, "list", group, GROUP_NAME),
        _ram("CreateGroup", groups.create_group, "create", group, GROUP_NAME, Param("Comments")),
        _ram("AddUserToGroup", groups.add_user_to_group, "update", group, GROUP_NAME, USER_NAME),
        _ram(
            "RemoveUserFromGroup",
            groups.remove_user_from_group,
            "update",
            group,
            GROUP_NAME,
            USER_NAME,
        ),
        _ram(
            "AttachPolicyToGroup",
            policies.attach_policy_to_group,
            "update",
            group,
            POLICY_TYPE,
            POLICY_NAME,
            GROUP_NAME,
            also_on=(policy,),
        ),
        _ram(
            "DetachPolicyFromGroup",
            policies.detach_policy_from_group,
            "update",
            group,
            POLICY_TYPE,
            POLICY_NAME,
            GROUP_NAME,
            also_on=(policy,),
        ),
        _ram("ListGroupsForUser", groups.list_groups_for_user, "list", user, USER_NAME),
    ]
