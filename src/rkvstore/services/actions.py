"""Every action rkvstore serves, declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from rkvstore.api.params import Param, ParamSpec
from rkvstore.config import API_VERSION
from rkvstore.services import accounts, instances, regions
from rkvstore.services.registry import ActionSpec, Registry

ALL_INSTANCES = "instance/*"
ONE_INSTANCE = "instance/{InstanceId}"

INSTANCE_ID = Param("InstanceId", required=True)
ACCOUNT_NAME = Param("AccountName", required=True)
PAGE_NUMBER = Param("PageNumber", "int", default=1, min_value=1, max_value=10**9)
PAGE_SIZE = Param("PageSize", "int", default=30, min_value=1, max_value=100)


def _spec(
    name: str, handler: object, level: str, resource: str, *params: Param, mutating: bool = False
) -> ActionSpec:
    return ActionSpec(
        name=name,
        version=API_VERSION,
        params=ParamSpec(params),
        handler=handler,  # type: ignore[arg-type]
        access_level=level,  # type: ignore[arg-type]
        resource=resource,
        mutating=mutating,
    )


def build_registry() -> Registry:
    return Registry(
        [
            _spec(
                "DescribeRegions",
                regions.describe_regions,
                "list",
                ALL_INSTANCES,
                Param("AcceptLanguage"),
            ),
            _spec(
                "DescribeZones",
                regions.describe_zones,
                "list",
                ALL_INSTANCES,
                Param("RegionId", required=True),
                Param("AcceptLanguage"),
            ),
            # ---- instances
            _spec(
                "CreateInstance",
                instances.create_instance,
                "create",
                ALL_INSTANCES,
                Param("RegionId"),
                Param("ZoneId"),
                Param("InstanceName", max_length=128),
                Param("Password", "secret"),
                Param("EngineVersion"),
                Param("NodeType"),
                Param("ShardCount", "int", min_value=1, max_value=256),
                Param("InstanceClass"),
                Param("ChargeType"),
                Param("DryRun", "bool", default=False),
                mutating=True,
            ),
            _spec(
                "DescribeInstances",
                instances.describe_instances,
                "list",
                ALL_INSTANCES,
                Param("InstanceIds", max_length=4096),
                Param("InstanceStatus"),
                Param("ArchitectureType"),
                Param("EngineVersion"),
                Param("NodeType"),
                Param("ZoneId"),
                Param("ChargeType"),
                Param("SearchKey"),
                PAGE_NUMBER,
                PAGE_SIZE,
            ),
            _spec(
                "DescribeInstanceAttribute",
                instances.describe_instance_attribute,
                "read",
                ONE_INSTANCE,
                INSTANCE_ID,
            ),
            _spec(
                "RegisterInstance",
                instances.register_instance,
                "create",
                ALL_INSTANCES,
                Param("Endpoint", required=True, max_length=300),
                Param("AdminUserName", max_length=128),
                Param("AdminPassword", "secret", required=True),
                Param("InstanceName", max_length=128),
                Param("DryRun", "bool", default=False),
                mutating=True,
            ),
            _spec(
                "DeleteInstance",
                instances.delete_instance,
                "delete",
                ONE_INSTANCE,
                INSTANCE_ID,
                mutating=True,
            ),
            # ---- accounts
            _spec(
                "CreateAccount",
                accounts.create_account,
                "create",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("AccountPassword", "secret", required=True),
                Param("AccountPrivilege"),
                Param("AccountType"),
                Param("AccountDescription"),
                Param("SourceBiz"),
                mutating=True,
            ),
            _spec(
                "DescribeAccounts",
                accounts.describe_accounts,
                "read",
                ONE_INSTANCE,
                INSTANCE_ID,
                Param("AccountName"),
                Param("SearchAccountName"),
                PAGE_NUMBER,
                PAGE_SIZE,
            ),
            _spec(
                "ResetAccountPassword",
                accounts.reset_account_password,
                "update",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("AccountPassword", "secret", required=True),
                Param("SourceBiz"),
                mutating=True,
            ),
            _spec(
                "ModifyAccountPassword",
                accounts.modify_account_password,
                "update",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("OldAccountPassword", "secret", required=True),
                Param("NewAccountPassword", "secret", required=True),
                Param("SourceBiz"),
                mutating=True,
            ),
            _spec(
                "ModifyAccountDescription",
                accounts.modify_account_description,
                "update",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("AccountDescription", required=True),
                Param("SourceBiz"),
                mutating=True,
            ),
            _spec(
                "GrantAccountPrivilege",
                accounts.grant_account_privilege,
                "update",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("AccountPrivilege", required=True),
                Param("SourceBiz"),
                mutating=True,
            ),
            _spec(
                "DeleteAccount",
                accounts.delete_account,
                "delete",
                ONE_INSTANCE,
                INSTANCE_ID,
                ACCOUNT_NAME,
                Param("SourceBiz"),
                mutating=True,
            ),
        ]
    )
