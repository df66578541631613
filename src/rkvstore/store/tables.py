"""The database schema. Migrations in ``migrations/versions`` create exactly this."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

access_keys = Table(
    "access_keys",
    metadata,
    Column("access_key_id", String(64), primary_key=True),
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # NULL: the tenant's root principal; else the RAM user's name.
    Column("user_name", String(64), nullable=True),
    # Fernet token of the secret; the plaintext is never stored.
    Column("secret_encrypted", Text, nullable=False),
    Column("status", String(16), nullable=False),  # Active | Inactive
    Column("created_at", DateTime(timezone=True), nullable=False),
    # A RAM user's key cannot outlive its user, and follows its renames (issue 9).
    # A root key (user_name NULL) is not checked: a NULL never references.
    ForeignKeyConstraint(
        ["account_id", "user_name"],
        ["ram_users.account_id", "ram_users.user_name"],
        name="fk_access_keys_user_ram_users",
        onupdate="CASCADE",
    ),
    Index("ix_access_keys_account_id_user_name", "account_id", "user_name"),
)

# A nonce may be used once per AccessKey within the timestamp window. The
# primary key makes the check-and-insert one atomic statement on every engine.
nonces = Table(
    "nonces",
    metadata,
    Column("access_key_id", String(64), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),  # unix seconds
    Index("ix_nonces_expires_at", "expires_at"),
)

instances = Table(
    "instances",
    metadata,
    Column("instance_id", String(32), primary_key=True),
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("provider", String(16), nullable=False),  # local | registered
    Column("engine_version", String(8), nullable=False),  # "7.0"
    Column("architecture", String(16), nullable=False),  # standard | cluster
    Column("node_type", String(16), nullable=False),  # STAND_ALONE | MASTER_SLAVE
    Column("shard_count", Integer, nullable=False),
    Column("zone_id", String(64), nullable=False),
    Column("instance_class", String(64), nullable=False),
    Column("charge_type", String(16), nullable=False),
    Column("host", String(255), nullable=False),  # ConnectionDomain
    Column("port", Integer, nullable=False),
    # The management user's password, and for a registered deployment the
    # operator's admin credentials: Fernet tokens only.
    Column("mgmt_password_encrypted", Text, nullable=False),
    Column("admin_user", String(128), nullable=True),
    Column("admin_password_encrypted", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Redis before 6.0: passwords of the last changes begun (Fernet tokens, one
    # per line), a way back in to a node a change left without recording it.
    Column("pending_password_encrypted", Text, nullable=True),
    # DeleteInstance refuses the instance while set (migration 0011).
    Column("release_protection", Boolean, nullable=False, server_default=false()),
    # A registered node keeps accounts in memory only (no ACL file, no config
    # file); how to reach the nodes over TLS, a Fernet token (migration 0015).
    Column("accounts_in_memory", Boolean, nullable=False, server_default=false()),
    Column("tls_encrypted", Text, nullable=True),
    # The Sentinels that manage a registered deployment, a Fernet token (migration 0015).
    Column("sentinel_encrypted", Text, nullable=True),
    # DescribeInstances pages a tenant's instances in this order, and counts them,
    # from this index alone (migration 0010).
    Index("ix_instances_account_id_created_at", "account_id", "created_at", "instance_id"),
)

# How many instances each tenant has, kept by triggers on ``instances`` (migration
# 0010), whatever inserts or deletes them: DescribeInstances' TotalCount of a whole
# tenant is one row, not a count of 10,000. A tenant without a row has none.
instance_counts = Table(
    "instance_counts",
    metadata,
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("instances", Integer, nullable=False),
)

# The nodes rkvstore knows of. Local nodes keep their port for life; for
# registered deployments this is what discovery found last.
nodes = Table(
    "nodes",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column(
        "instance_id",
        String(32),
        ForeignKey("instances.instance_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("role", String(16), nullable=False),  # master | replica
    Column("shard", Integer, nullable=False),
    Column("master_node_id", String(64), nullable=True),
    Index("ix_nodes_instance_id", "instance_id"),
    UniqueConstraint("host", "port", name="uq_nodes_host_port"),
)

# Desired state of every account; Redis is brought in line with it. Only the
# SHA-256 of a password is kept, the same thing Redis keeps.
accounts = Table(
    "accounts",
    metadata,
    Column(
        "instance_id",
        String(32),
        ForeignKey("instances.instance_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column("password_sha256", String(64), nullable=False),
    Column("privilege", String(32), nullable=False),  # RoleReadWrite | ... | Super
    Column("account_type", String(16), nullable=False),  # Normal | Super
    Column("description", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The password a secret's rotation keeps valid for its grace period (migration 0012).
    Column("previous_sha256", String(64), nullable=True),
    # The KMS secret managing the account: R-kvstore's actions may not change it.
    Column("managed_by", String(64), nullable=True),
)

# Users a CreateAccount put on the nodes before its account was recorded. A
# row left behind (the change failed) tells the reconciler to take the user off
# every node, registered deployments included; a recorded account drops it.
pending_users = Table(
    "pending_users",
    metadata,
    Column(
        "instance_id",
        String(32),
        ForeignKey("instances.instance_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# At most one mutating task per instance, across every process on the
# database: the primary key is the lock. A holder that died leaves a row whose
# lease runs out, and the next task takes it over.
tasks = Table(
    "tasks",
    metadata,
    Column("instance_id", String(32), primary_key=True),
    Column("task_id", String(36), nullable=False),
    Column("action", String(64), nullable=False),
    # The account the task changes; NULL: the whole instance.
    Column("account_name", String(128), nullable=True),
    Column("holder", String(128), nullable=False),
    Column("lease_expires_at", Float, nullable=False),  # unix seconds
    UniqueConstraint("task_id", name="uq_tasks_task_id"),
)

# What the reconciler knows of each instance, shared by every process on the
# database (issue 10). A request may LEFT JOIN it onto the instance row: no row
# reads as "in line, never verified". Flags and the schedule live here, not in
# one process's memory, so a flag raised anywhere reaches whichever process
# reconciles, and the processes divide the rolling verify between them.
reconcile_state = Table(
    "reconcile_state",
    metadata,
    Column(
        "instance_id",
        String(32),
        ForeignKey("instances.instance_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    # Accounts a failed change may have left out of line: NULL none, "*" all,
    # else names separated by one space (a name never holds one).
    Column("dirty", Text, nullable=True),
    # Raised by every flag: a pass clears ``dirty`` only if none came meanwhile.
    Column("flags", Integer, nullable=False, server_default="0"),
    # Node labels (host:port, one per line) out of reach at the last pass.
    Column("unreachable", Text, nullable=True),
    # The next scheduled verify (unix seconds), and how many were due so far.
    Column("due_at", Float, nullable=False),
    Column("round", Integer, nullable=False, server_default="0"),
    # A pass out of turn is wanted from this time on (a flag, a node out of
    # reach, a busy slot); NULL: none.
    Column("retry_at", Float, nullable=True),
    # The claim of the process verifying it now, and until when it holds.
    Column("claimed_by", String(64), nullable=True),
    Column("claimed_until", Float, nullable=True),
    Column("verified_at", Float, nullable=True),
    Index("ix_reconcile_state_due_at", "due_at"),
    Index("ix_reconcile_state_retry_at", "retry_at"),
)

# --------------------------------------------------------------------------- RAM (issue 4)

ram_users = Table(
    "ram_users",
    metadata,
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("user_name", String(64), primary_key=True),
    Column("user_id", String(32), nullable=False, unique=True),
    Column("display_name", String(128), nullable=False),
    Column("email", String(256), nullable=False),
    Column("mobile_phone", String(64), nullable=False),
    Column("comments", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ram_groups = Table(
    "ram_groups",
    metadata,
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("group_name", String(64), primary_key=True),
    Column("group_id", String(32), nullable=False, unique=True),
    Column("comments", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ram_group_members = Table(
    "ram_group_members",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("group_name", String(64), primary_key=True),
    Column("user_name", String(64), primary_key=True),
    Column("joined_at", DateTime(timezone=True), nullable=False),
    # A membership cannot outlive its user or group (issue 9).
    ForeignKeyConstraint(
        ["account_id", "user_name"],
        ["ram_users.account_id", "ram_users.user_name"],
        name="fk_ram_group_members_user_ram_users",
        onupdate="CASCADE",
    ),
    ForeignKeyConstraint(
        ["account_id", "group_name"],
        ["ram_groups.account_id", "ram_groups.group_name"],
        name="fk_ram_group_members_group_ram_groups",
        onupdate="CASCADE",
    ),
    Index("ix_ram_group_members_account_id_user_name", "account_id", "user_name"),
)

# Custom policies; the system policies exist in every tenant without a row.
ram_policies = Table(
    "ram_policies",
    metadata,
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("policy_name", String(128), primary_key=True),
    Column("description", String(1024), nullable=False),
    Column("default_version", String(16), nullable=False),
    Column("next_version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

ram_policy_versions = Table(
    "ram_policy_versions",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("policy_name", String(128), primary_key=True),
    Column("version_id", String(16), primary_key=True),
    Column("document", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ram_attachments = Table(
    "ram_attachments",
    metadata,
    Column("account_id", String(16), primary_key=True),
    Column("principal_type", String(8), primary_key=True),  # User | Group
    Column("principal_name", String(64), primary_key=True),
    Column("policy_type", String(8), primary_key=True),  # System | Custom
    Column("policy_name", String(128), primary_key=True),
    Column("attached_at", DateTime(timezone=True), nullable=False),
    # ListPolicies counts the attachments of a page of policies (migration 0010).
    Index("ix_ram_attachments_account_id_policy", "account_id", "policy_type", "policy_name"),
)

# --------------------------------------------------------------------------- KMS secrets (issue 12)

# A Redis secret (docs/kms.md): one or two accounts of an instance whose
# passwords rkvstore generates, rotates and hands out. Times are epoch seconds.
kms_secrets = Table(
    "kms_secrets",
    metadata,
    Column("secret_id", String(32), primary_key=True),
    Column(
        "account_id",
        String(16),
        ForeignKey("tenants.account_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(192), nullable=False),
    Column("sub_type", String(16), nullable=False),  # DoubleUsers | DualPassword
    # No foreign key: a secret outlives its instance (AutomaticRotation: Invalid).
    Column("instance_id", String(32), nullable=False),
    Column("extended_config", Text, nullable=False),  # as answered (JSON)
    Column("description", String(1024), nullable=False),
    Column("tags", Text, nullable=False),  # JSON [{"TagKey":..,"TagValue":..}]
    # The secret's data key (Fernet), sealed by the master key: envelope encryption.
    Column("data_key", Text, nullable=False),
    Column("rotation_enabled", Boolean, nullable=False),
    Column("rotation_interval", Integer, nullable=True),  # seconds
    Column("grace_period", Integer, nullable=True),  # seconds; None: until the next rotation
    Column("next_rotation_at", Float, nullable=True),
    Column("last_rotation_at", Float, nullable=True),
    Column("planned_delete_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The scheduler's next look at a secret whose last attempt failed (migration 0016).
    Column("retry_at", Float, nullable=True),
    UniqueConstraint("account_id", "name", name="uq_kms_secrets_account_id_name"),
    Index("ix_kms_secrets_next_rotation_at", "next_rotation_at"),
)

# A secret's versions. A version with a stage holds the password that stage
# names (sealed with the secret's data key); a version without one has lost its
# password, which is gone from Redis and from here. ``Pending``: a rotation
# written down before any node was touched (finished after a crash).
kms_secret_versions = Table(
    "kms_secret_versions",
    metadata,
    Column(
        "secret_id",
        String(32),
        ForeignKey("kms_secrets.secret_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),  # order of creation within the secret
    Column("stage", String(16), nullable=True),  # ACSCurrent | ACSPrevious | Pending | None
    Column("account_name", String(128), nullable=False),
    Column("password_sealed", Text, nullable=True),
    Column(
        "grace_until", Float, nullable=True
    ),  # an ACSPrevious that ends before the next rotation
    Column("created_at", Float, nullable=False),
)

# --------------------------------------------------------------------------- audit trail (issue 14)

# One ActionTrail event per API call that reached authorization (allowed or
# denied). Never a password, secret, signature or AccessKey secret: only names.
# ``event_ms``: epoch milliseconds, the order LookupEvents pages in.
audit_events = Table(
    "audit_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    # No foreign key: the trail outlives a deleted tenant until retention ends it.
    Column("account_id", String(16), nullable=False),
    Column("event_ms", BigInteger, nullable=False),
    Column("event_name", String(64), nullable=False),
    Column("service_name", String(32), nullable=False),
    Column("api_version", String(16), nullable=False),
    Column("event_rw", String(8), nullable=False),  # Read | Write
    Column("principal_type", String(16), nullable=False),  # root-account | ram-user
    Column("principal_name", String(64), nullable=False),
    Column("access_key_id", String(64), nullable=False),
    Column("source_ip", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_name", String(512), nullable=False),
    Column("error_code", String(128), nullable=True),  # NULL: success
    Column("error_message", String(1024), nullable=True),
    Index("ix_audit_events_account_id_event_ms", "account_id", "event_ms", "event_id"),
    Index("ix_audit_events_event_ms", "event_ms"),
)
