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
QUOTA_EXCEEDED_INSTANCES = _e(
    "QuotaExceeded.Instances", 403, "The tenant has its quota of {quota} local instances already."
)
QUOTA_EXCEEDED_NODES = _e(
    "QuotaExceeded.Nodes",
    403,
    "The instance would take the tenant past its quota of {quota} local Redis nodes.",
)
# --- RegisterInstance (issue 13): one code per reason, each message saying what to do.
# No registration problem answers ServiceUnavailable. ``{node}`` is host:port.
INVALID_ENDPOINT_NOT_ALLOWED = _e(
    "InvalidEndpoint.NotAllowed",
    400,
    "The specified Redis endpoint, or a node of its deployment, is outside the networks "
    "that may be registered.",
)
INVALID_ENDPOINT = _e(
    "InvalidEndpoint.Unreachable",
    400,
    "Redis node {node} cannot be reached, or did not answer as Redis in time: check its host "
    "and port, that it runs, and that it accepts connections from rkvstore's host.",
)
INVALID_ENDPOINT_AUTH = _e(
    "InvalidEndpoint.AuthenticationFailed",
    400,
    "Redis node {node} refused AdminUserName and AdminPassword: give a user of its ACL with "
    "that user's password, or AdminUserName default with its requirepass.",
)
INVALID_ENDPOINT_PERMISSION = _e(
    "InvalidEndpoint.PermissionDenied",
    400,
    "User {user} may not run {command} on Redis node {node}: rkvstore needs INFO, CONFIG GET, "
    "CONFIG REWRITE, CLUSTER NODES and ACL LIST, SETUSER, DELUSER and SAVE; register with a "
    "user that may run them (for example one with +@all).",
)
INVALID_ENDPOINT_VERSION = _e(
    "InvalidEndpoint.VersionTooOld",
    400,
    "Redis node {node} runs Redis {version}: rkvstore registers Redis 4.0 or later (6.0 or "
    "later for accounts beyond requirepass); upgrade it first.",
)
INVALID_ENDPOINT_REGISTERED = _e(
    "InvalidEndpoint.Registered",
    400,
    "A node of the specified Redis endpoint is already managed by rkvstore: delete the instance "
    "that manages it (DeleteInstance) before registering it again.",
)
INVALID_ENDPOINT_MASTER = _e(
    "InvalidEndpoint.MasterUnreachable",
    400,
    "Redis node {node} is a replica of {master}, which cannot be reached: register the master's "
    "own address instead, or make {master} reachable from rkvstore's host.",
)
INVALID_ENDPOINT_CLUSTER = _e(
    "InvalidEndpoint.ClusterIncomplete",
    400,
    "The cluster of Redis node {node} cannot be managed as a whole: {reason}. Register it when "
    "every node of the cluster answers and every slot is served.",
)
INVALID_ENDPOINT_TLS_REQUIRED = _e(
    "InvalidEndpoint.TLSRequired",
    400,
    "Redis node {node} accepts TLS connections only: register it with TlsCaCertificate (and "
    "TlsClientCertificate and TlsClientKey if it asks clients for a certificate).",
)
INVALID_ENDPOINT_TLS_HANDSHAKE = _e(
    "InvalidEndpoint.TLSHandshakeFailed",
    400,
    "The TLS handshake with Redis node {node} failed ({reason}): check TlsCaCertificate, "
    "TlsServerName and the client certificate, and that the port speaks TLS.",
)
INVALID_ENDPOINT_NOT_PERSISTENT = _e(
    "InvalidEndpoint.NotPersistent",
    400,
    "Redis node {node} has neither an ACL file nor a config file, so accounts set on it last "
    "only until it restarts, and this rkvstore refuses such nodes "
    "(RKVSTORE_REFUSE_NONPERSISTENT_NODES): start it with an aclfile or a config file.",
)
INVALID_ENDPOINT_SENTINEL = _e(
    "InvalidEndpoint.SentinelUnreachable",
    400,
    "No Sentinel of {sentinels} answered{why}: check SentinelEndpoints (and SentinelPassword "
    "if they have a requirepass), and that they accept connections from rkvstore's host.",
)
INVALID_ENDPOINT_SENTINEL_MASTER = _e(
    "InvalidEndpoint.SentinelMasterUnknown",
    400,
    'The Sentinels do not monitor a master named "{name}": check SentinelMasterName '
    "(SENTINEL MASTERS lists the names they know).",
)
INVALID_TLS_PARAMETER = _e(
    "InvalidParameter.Tls",
    400,
    'The specified parameter "{name}" is not valid: {reason}.',
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
