"""R-kvstore's own error codes (api.md §3, §4; issue 11), in the kernel's one catalogue.

The codes every product shares (signatures, parameters, instances, the task
slot) are in ``rkvstore.errors``; these are the ones only R-kvstore's actions
answer with.
"""

from __future__ import annotations

from rkvstore.errors import CATALOGUE

_e = CATALOGUE.add

# --- accounts and instances (api.md §3, §4)
ACCOUNT_NAME_FORMAT = _e("InvalidAccountName.Format", 400, "Specified AccountName is not valid.")
ACCOUNT_NAME_FORBID = _e("InvalidAccountName.Forbid", 400, "Specified AccountName is a keyword.")
ACCOUNT_NAME_DUPLICATE = _e(
    "InvalidAccountName.Duplicate", 400, "Specified AccountName already exists."
)
ACCOUNT_NAME_NOT_FOUND = _e(
    "InvalidAccountName.NotFound", 404, "Specified AccountName does not exist."
)
ACCOUNT_PASSWORD_FORMAT = _e(
    "InvalidAccountPassword.Format", 400, "Specified AccountPassword is not valid."
)
ACCOUNT_PASSWORD_NOT_MATCH = _e(
    "InvalidAccountPassword.NotMatch", 400, "The old password is incorrect."
)
ACCOUNT_DESCRIPTION_FORMAT = _e(
    "InvalidAccountDescription.Format", 400, "Specified AccountDescription is not valid."
)
ACCOUNT_PRIVILEGE_MALFORMED = _e(
    "InvalidAccountPrivilege.Malformed", 400, "Specified AccountPrivilege is not valid."
)
ACCOUNT_PRIVILEGE_FORMAT = _e(
    "InvalidAccountPrivilege.Format", 400, "Specified AccountPrivilege is not valid."
)
ENGINE_VERSION_FORMAT = _e(
    "InvalidEngineVersion.Format", 400, "Current EngineVersion does not support operations."
)
ACCOUNT_MANAGED_BY_SECRET = _e(  # kms.md §5: a secret's account changes only through the secret
    "OperationDenied.AccountManagedBySecret",
    403,
    "The account is managed by a KMS secret: rotate or delete the secret instead.",
)
ACCOUNT_LIMIT_EXCEEDED = _e("AccountLimitExceeded", 403, "Exceeding the allowed amount of account.")
DRY_RUN_OPERATION = _e(
    "DryRunOperation", 400, "Request validation has been passed with DryRun flag set."
)
INVALID_REGION = _e("InvalidRegionId.NotFound", 404, "The specified region is not found.")
INVALID_ZONE = _e("InvalidZoneId.NotFound", 404, "The specified zone is not found.")
INVALID_ENDPOINT = _e(
    "InvalidEndpoint.Unreachable",
    400,
    "The specified Redis endpoint cannot be reached or authenticated.",
)

QUOTA_EXCEEDED_INSTANCES = _e(
    "QuotaExceeded.Instances", 403, "The tenant has its quota of {quota} local instances already."
)
QUOTA_EXCEEDED_NODES = _e(
    "QuotaExceeded.Nodes",
    403,
    "The instance would take the tenant past its quota of {quota} local Redis nodes.",
)
INVALID_ENDPOINT_NOT_ALLOWED = _e(
    "InvalidEndpoint.NotAllowed",
    400,
    "The specified Redis endpoint, or a node of its deployment, is outside the networks "
    "that may be registered.",
)
INVALID_ENDPOINT_REGISTERED = _e(
    "InvalidEndpoint.Registered", 400, "A node of the specified Redis endpoint is already managed."
)

# --- instance settings (issue 11: ModifyInstanceAttribute, ModifyInstanceConfig, ModifySecurityIps)
# Alibaba's ModifyInstanceConfig documents InvalidParameters.Format (400, "Specified
# parameters is not valid."); rkvstore adds which parameter and its rule.
INVALID_PARAMETERS_FORMAT = _e(
    "InvalidParameters.Format", 400, 'Specified parameters is not valid: "{name}" {rule}.'
)
PARAMETER_NOT_SUPPORTED = _e(
    "ParamNotSupported",
    400,
    'Parameter "{name}" cannot be modified: rkvstore modifies only {allowed}.',
)
# No Alibaba code for it is published; in the style of OperationDenied.* (403).
RELEASE_PROTECTED = _e(
    "OperationDenied.ReleaseProtection",
    403,
    "The instance has release protection enabled; set InstanceReleaseProtection to false "
    "with ModifyInstanceAttribute before deleting it.",
)
NO_CONFIG_FILE = _e(
    "OperationDenied.NoConfigFile",
    403,
    "Node {node} of the instance runs without a config file: a parameter set on it would "
    "not survive a restart, so none is set.",
)
SECURITY_IPS_FORMAT = _e(
    "InvalidSecurityIPs.Format", 400, "Specified security IP list is not valid."
)
SECURITY_IPS_NOT_ENFORCEABLE = _e(
    "OperationDenied.SecurityIps",
    403,
    "rkvstore cannot filter clients by address (Redis has no such setting): the whitelist "
    "of the instance is {current}, as its nodes' bind address makes it, and cannot be changed.",
)

# --- the instance surface (issue 11): settings rkvstore cannot make true are refused,
# never recorded. Alibaba's family for "this instance cannot do that" is
# OperationDenied.*, with 403; each message names the limit.
VPC_NOT_SUPPORTED = _e(
    "OperationDenied.VpcNotSupported",
    403,
    "rkvstore instances are on the classic network only: NetworkType VPC, VpcId and "
    "VSwitchId are not supported.",
)
PREPAID_NOT_SUPPORTED = _e(
    "OperationDenied.PrePaidNotSupported",
    403,
    "rkvstore instances are pay-as-you-go only: ChargeType PrePaid is not supported.",
)
SSL_NOT_SUPPORTED = _e(
    "OperationDenied.SSLNotSupported",
    403,
    "rkvstore does not set up TLS on an instance's nodes: SSL cannot be enabled or updated.",
)
BACKUP_NOT_SUPPORTED = _e(
    "OperationDenied.BackupNotSupported",
    403,
    "rkvstore runs no backups: a backup policy cannot be set.",
)
SECURITY_GROUP_NOT_SUPPORTED = _e(
    "OperationDenied.SecurityGroupNotSupported",
    403,
    "rkvstore has no ECS security groups: none can be bound to an instance.",
)
TDE_NOT_SUPPORTED = _e(
    "OperationDenied.TDENotSupported",
    403,
    "rkvstore does not encrypt data at rest: TDE cannot be enabled.",
)

# --- account sessions (issue 15). A node that did not answer is never skipped in
# silence: the call fails, naming it, and calling again is safe (closing is idempotent).
SESSIONS_NOT_CLOSED = _e(
    "SessionsNotClosed",
    503,
    "The account's sessions could not be closed on node(s) {nodes}, which did not answer; "
    "those on the other nodes were closed. Call KillAccountSessions again.",
)
PASSWORD_CHANGED_SESSIONS_NOT_CLOSED = _e(
    "SessionsNotClosed.PasswordChanged",
    503,
    "The password was changed on every node, but the account's sessions could not be closed "
    "on node(s) {nodes}, which did not answer. Call KillAccountSessions.",
)
