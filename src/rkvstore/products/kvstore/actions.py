"""R-kvstore's actions (2015-01-01), declared once: parameters, RAM action, resource, access."""

from __future__ import annotations

from dataclasses import replace

from rkvstore.config import API_VERSION
from rkvstore.products.kvstore import (
    accounts,
    instance_settings,
    instance_surface,
    instances,
    regions,
    registered,
    sessions,
)
from rkvstore.services.audit import Trail
from rkvstore.services.params import Param
from rkvstore.services.registry import ActionSpec, SpecMaker

ALL_INSTANCES = "instance/*"
ONE_INSTANCE = "instance/{InstanceId}"

INSTANCE_ID = Param("InstanceId", required=True)
ACCOUNT_NAME = Param("AccountName", required=True)
PAGE_NUMBER = Param("PageNumber", "int", default=1, min_value=1, max_value=10**9)
PAGE_SIZE = Param("PageSize", "int", default=30, min_value=1, max_value=100)
# An extension (issue 15): the official SDKs send it through their generic call.
REVOKE_SESSIONS = Param("RevokeSessions", "bool", default=False)


# ActionTrail's names; an action on one account names the account (issue 14).
TRAIL = Trail("R-kvstore", {"instance": "ACS::Redis::DBInstance", "account": "ACS::Redis::Account"})
ONE_ACCOUNT = "account/{InstanceId}/{AccountName}"

_spec = SpecMaker(API_VERSION, "kvstore", trail=TRAIL)


def actions() -> list[ActionSpec]:
    return [
        replace(spec, event_resource=ONE_ACCOUNT) if ACCOUNT_NAME in spec.params.params else spec
        for spec in _declared()
    ]


def _declared() -> list[ActionSpec]:
    return [
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
            Param("InstanceClass", max_length=64),
            Param("ChargeType", "enum", choices=("PostPaid", "PrePaid")),
            Param("NetworkType", "enum", choices=("CLASSIC", "VPC")),
            Param("VpcId", max_length=128),
            Param("VSwitchId", max_length=128),
            Param("DryRun", "bool", default=False),
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
            registered.register_instance,
            "create",
            ALL_INSTANCES,
            # Endpoint, or SentinelEndpoints and SentinelMasterName (issue 13).
            Param("Endpoint", max_length=300),
            Param("AdminUserName", max_length=128),
            Param("AdminPassword", "secret", required=True),
            Param("InstanceName", max_length=128),
            Param("DryRun", "bool", default=False),
            # TLS to the nodes (issue 13): PEM text; the key is a secret.
            Param("TlsCaCertificate", max_length=32 * 1024),
            Param("TlsClientCertificate", max_length=32 * 1024),
            Param("TlsClientKey", "secret", max_length=16 * 1024),
            Param("TlsServerName", max_length=253),
            Param("SentinelEndpoints", max_length=2000),
            Param("SentinelMasterName", max_length=128),
            Param("SentinelPassword", "secret", max_length=256),
        ),
        _spec(
            "RotateManagementPassword",
            instances.rotate_management_password,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
        ),
        _spec(
            "DeleteInstance",
            instances.delete_instance,
            "delete",
            ONE_INSTANCE,
            INSTANCE_ID,
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
            sessions.revoking(accounts.reset_account_password),
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            ACCOUNT_NAME,
            Param("AccountPassword", "secret", required=True),
            Param("SourceBiz"),
            REVOKE_SESSIONS,
        ),
        _spec(
            "ModifyAccountPassword",
            sessions.revoking(accounts.modify_account_password),
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            ACCOUNT_NAME,
            Param("OldAccountPassword", "secret", required=True),
            Param("NewAccountPassword", "secret", required=True),
            Param("SourceBiz"),
            REVOKE_SESSIONS,
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
        ),
        _spec(
            "DeleteAccount",
            accounts.delete_account,
            "delete",
            ONE_INSTANCE,
            INSTANCE_ID,
            ACCOUNT_NAME,
            Param("SourceBiz"),
        ),
        *instance_setting_actions(),
        *instance_surface_actions(),
        *session_actions(),
    ]


# --------------------------------------------------------------- account sessions (issue 15)


def session_actions() -> list[ActionSpec]:
    """Extensions: who is logged in as an account, and putting them out."""
    return [
        _spec(
            "KillAccountSessions",
            sessions.kill_account_sessions,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            ACCOUNT_NAME,
        ),
        _spec(
            "DescribeAccountSessions",
            sessions.describe_account_sessions,
            "read",
            ONE_INSTANCE,
            INSTANCE_ID,
            ACCOUNT_NAME,
        ),
    ]


# ------------------------------------------------------------- instance settings (issue 11)


def instance_setting_actions() -> list[ActionSpec]:
    return [
        _spec(
            "ModifyInstanceAttribute",
            instance_settings.modify_instance_attribute,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            Param("InstanceName", max_length=128),
            Param("NewPassword", "secret"),
            Param("InstanceReleaseProtection", "bool"),
        ),
        _spec(
            "ModifyInstanceConfig",
            instance_settings.modify_instance_config,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            Param("Config", required=True, max_length=8192),
        ),
        _spec(
            "DescribeInstanceConfig",
            instance_settings.describe_instance_config,
            "read",
            ONE_INSTANCE,
            INSTANCE_ID,
        ),
        _spec(
            "DescribeParameters",
            instance_settings.describe_parameters,
            "read",
            "instance/{DBInstanceId}",
            Param("DBInstanceId", required=True),
            Param("NodeId", max_length=64),
        ),
        _spec(
            "ModifySecurityIps",
            instance_settings.modify_security_ips,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            Param("SecurityIps", required=True, max_length=64 * 1024),
            Param("SecurityIpGroupName", max_length=128),
            Param("ModifyMode", "enum", choices=("Cover", "Append", "Delete")),
            Param("SecurityIpGroupAttribute", max_length=128),
        ),
    ]


# --------------------------------------------------------------------------- instance surface


def instance_surface_actions() -> list[ActionSpec]:
    """What Terraform's read of an instance calls (issue 11), and the settings refused."""
    surface = instance_surface
    return [
        *(
            _spec(name, handler, "read", ONE_INSTANCE, INSTANCE_ID)
            for name, handler in (
                ("DescribeDBInstanceNetInfo", surface.describe_db_instance_net_info),
                ("DescribeBackupPolicy", surface.describe_backup_policy),
                (
                    "DescribeSecurityGroupConfiguration",
                    surface.describe_security_group_configuration,
                ),
                ("DescribeInstanceSSL", surface.describe_instance_ssl),
                ("DescribeSecurityIps", surface.describe_security_ips),
                ("DescribeEngineVersion", surface.describe_engine_version),
            )
        ),
        _spec(
            "ModifyInstanceSSL",
            surface.modify_instance_ssl,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            Param("SSLEnabled", "enum", required=True, choices=("Enable", "Disable", "Update")),
        ),
        _spec(
            "ModifyInstanceTDE",
            surface.modify_instance_tde,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            Param("TDEStatus", "enum", required=True, choices=("Enabled", "Disabled")),
            Param("EncryptionName", max_length=256),
            Param("EncryptionKey", max_length=256),
            Param("RoleArn", max_length=512),
        ),
        _spec(
            "ModifyBackupPolicy",
            surface.modify_backup_policy,
            "update",
            ONE_INSTANCE,
            INSTANCE_ID,
            # Not required: every call is refused, and Terraform sends only the one
            # it has when the other reads back empty (DescribeBackupPolicy's "").
            Param("PreferredBackupPeriod", max_length=256),
            Param("PreferredBackupTime", max_length=64),
            Param("EnableBackupLog", "int", min_value=0, max_value=1),
            Param("BackupRetentionPeriod", "int", min_value=1, max_value=730),
        ),
        _spec(
            "ModifySecurityGroupConfiguration",
            surface.modify_security_group_configuration,
            "update",
            "instance/{DBInstanceId}",  # this action names the instance DBInstanceId
            Param("DBInstanceId", required=True),
            Param("SecurityGroupId", required=True, max_length=1024),
        ),
    ]
