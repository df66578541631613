"""A seeded database for the listing tests: 1,000 instances and what hangs from them.

Not a test module. Everything goes in through the project's own store (repo,
ram_store, credentials), in a few transactions, from a fixed random seed. The
data is chosen to find where SQL and Python disagree: names and ids that differ
only in case, that hold ``%``, ``_``, ``[`` or non-ASCII letters, instances
created at the very same moment (order by id), instances without nodes.
"""

from __future__ import annotations

import json
import random
import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, update

from rkvstore.crypto import SecretBox
from rkvstore.iam.attached_policies import CUSTOM, GROUP, SYSTEM, USER
from rkvstore.iam.credentials import ACTIVE, AccessKey, add_access_key, create_tenant
from rkvstore.products.ram import store as ram_store
from rkvstore.secret import Secret
from rkvstore.services.tasks import RECONCILE
from rkvstore.store import repo
from rkvstore.store.tables import instances, tasks

INSTANCES = 1000
REGION = "cn-hangzhou"
STATUSES = ("Normal", "Normal", "Normal", "Creating", "Unavailable", "Flushing")
ENGINES = ("4.0", "5.0", "6.0", "7.0")
ZONES = ("cn-hangzhou-h", "cn-hangzhou-i")
CHARGES = ("PostPaid", "PrePaid")
NODE_TYPES = ("STAND_ALONE", "MASTER_SLAVE")
# Ids and names the generated ones would never hit.
SPECIAL_IDS = (
    "r-ABCdef000000000001",
    "r-abcdef000000000001",
    "r-a%b_c000000000000",
    "r-a_bXc000000000000",
    "r-axb_c000000000000",
    "r-x[1]y000000000000",
    "r-x1y0000000000000",
    "r-\u00e9t\u00e90000000000",
    "r-Zz",
    "r-zz",
)
NAMES = ("shop-{i}", "Shop-{i}", "cache_{i}", "cache%{i}", "db-\u00e9-{i}", "LOG_100%", "{id}")
ACCOUNT_NAMES = ("acct{i:03d}", "Acct{i:03d}", "b_{i}", "b{i}", "\u00e9{i}", "E{i}", "a%b{i}")
USER_CHARS = string.ascii_letters + string.digits + "._-"
POLICY_CHARS = string.ascii_letters + string.digits + "-"


@dataclass
class Seeded:
    engine: Engine
    box: SecretBox
    account_id: str
    other_account_id: str
    instance_ids: list[str]
    other_instance_ids: list[str]
    # instance -> its accounts' names; the one with many accounts first
    account_instances: list[str]
    users: list[str]
    groups: list[str]
    policies: list[str]
    callers: dict[str, AccessKey] = field(default_factory=dict)  # RAM users, by role
    root_key: tuple[str, str] = ("", "")  # the tenant's root AccessKey: id, secret


def _document(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "1", "Statement": list(statements)})


def _allow(
    resource: Any, action: Any = "kvstore:DescribeInstances", **extra: Any
) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


def _deny(resource: Any, action: Any = "kvstore:DescribeInstances", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": action, "Resource": resource, **extra}


def seed(engine: Engine, box: SecretBox) -> Seeded:
    rng = random.Random(10)  # issue 10
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "listings")
        other = create_tenant(conn, box, "listings-other")
    sealed = box.seal(Secret("not-a-real-management-password"))
    ids = list(SPECIAL_IDS)
    while len(ids) < INSTANCES:
        ids.append(
            "r-" + "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(18))
        )
    other_ids = ["r-other" + str(i).zfill(13) for i in range(30)]
    with engine.begin() as conn:
        for n, instance_id in enumerate(ids):
            _instance(conn, rng, tenant.account_id, instance_id, n, sealed)
        for n, instance_id in enumerate(other_ids):
            _instance(conn, rng, other.account_id, instance_id, INSTANCES + n, sealed)
        # Instances created at the same moment are ordered by id; some created
        # "before" others that were inserted earlier.
        base = datetime(2020, 1, 1, tzinfo=UTC)
        for k, group in enumerate((ids[::37], ids[5::41], ids[11::53])):
            conn.execute(
                update(instances)
                .where(instances.c.instance_id.in_(group))
                .values(created_at=base + timedelta(days=k))
            )
    account_instances = [ids[3], ids[100], ids[200], ids[300], ids[400]]
    with engine.begin() as conn:
        _accounts(conn, rng, account_instances)
    seeded = Seeded(
        engine,
        box,
        tenant.account_id,
        other.account_id,
        ids,
        other_ids,
        account_instances,
        [],
        [],
        [],
    )
    seeded.root_key = (tenant.access_key_id, tenant.access_key_secret.reveal())
    with engine.begin() as conn:
        _ram(conn, rng, seeded)
        _callers(conn, seeded)
    return seeded


def _instance(
    conn: Connection, rng: random.Random, account_id: str, instance_id: str, n: int, sealed: str
) -> None:
    shards = rng.choice((1, 1, 1, 2, 4))
    node_type = rng.choice(NODE_TYPES)
    status = rng.choice(STATUSES)
    repo.insert_instance(
        conn,
        {
            "instance_id": instance_id,
            "account_id": account_id,
            "name": rng.choice(NAMES).format(i=n % 97, id=instance_id),
            "status": status,
            "provider": rng.choice(("local", "registered")),
            "engine_version": rng.choice(ENGINES),
            "architecture": "cluster" if shards > 1 else "standard",
            "node_type": node_type,
            "shard_count": shards,
            "zone_id": rng.choice(ZONES),
            "instance_class": "redis.master.small.default",
            "charge_type": rng.choice(CHARGES),
            "host": f"10.{n // 250}.{n % 250}.1",
            "port": 6379,
            "mgmt_password_encrypted": sealed,
            "admin_user": None,
            "admin_password_encrypted": None,
        },
    )
    if status == "Creating" and n % 2:
        return  # no nodes yet: counts 0
    per_shard = 2 if node_type == "MASTER_SLAVE" else 1
    rows = [
        {
            "node_id": f"{instance_id}-{k}",
            "host": f"10.{n // 250}.{n % 250}.1",
            "port": 7000 + k,
            "role": "master" if k < shards else "replica",
            "shard": k % shards,
            "master_node_id": None,
        }
        for k in range(shards * per_shard)
    ]
    repo.replace_nodes(conn, instance_id, rows)


def _accounts(conn: Connection, rng: random.Random, instance_ids: list[str]) -> None:
    sizes = (260, 7, 7, 7, 3)
    for instance_id, size in zip(instance_ids, sizes, strict=True):
        names = {"default", instance_id, "acct001"}
        if size > 100:
            names |= {"acct001", "acct002", "Acct001", "b_3", "\u00e91", "a%b1"}
        while len(names) < size:
            names.add(rng.choice(ACCOUNT_NAMES).format(i=rng.randrange(150)))
        for name in sorted(names):
            super_ = name in ("default", instance_id)
            repo.insert_account(
                conn,
                {
                    "instance_id": instance_id,
                    "name": name,
                    "password_sha256": "0" * 64,
                    "privilege": "Super"
                    if super_
                    else rng.choice(("RoleReadOnly", "RoleReadWrite")),
                    "account_type": "Super" if super_ else "Normal",
                    "description": f"about {name}",
                },
            )
    # A task changing one account, one changing all, and the reconciler's (which changes none).
    moments = {1: "acct001", 2: None, 3: None}
    actions = {1: "ResetAccountPassword", 2: "RotateManagementPassword", 3: RECONCILE}
    for k in (1, 2, 3):
        conn.execute(
            insert(tasks).values(
                instance_id=instance_ids[k],
                task_id=f"task-{k}",
                action=actions[k],
                account_name=moments[k],
                holder="someone:1:2:3:4",
                lease_expires_at=2.0e9,
            )
        )


def _ram(conn: Connection, rng: random.Random, seeded: Seeded) -> None:
    account_id = seeded.account_id
    users = {"alice", "Alice", "bob.smith", "bob_smith", "bob-smith", "Bob", "_x", "-y", "0user"}
    while len(users) < 230:
        users.add("".join(rng.choice(USER_CHARS) for _ in range(rng.randint(1, 12))))
    seeded.users = sorted(users)
    for name in seeded.users:
        ram_store.insert_user(
            conn,
            account_id,
            {
                "user_name": name,
                "user_id": str(rng.randrange(10**15, 10**16)),
                "display_name": name.upper(),
                "email": f"{name}@example.com",
                "mobile_phone": "",
                "comments": "",
            },
        )
    seeded.groups = [f"group-{k}" for k in range(8)] + ["Group-A", "group_b"]
    for name in seeded.groups:
        ram_store.insert_group(
            conn,
            account_id,
            {"group_name": name, "group_id": str(rng.randrange(10**15, 10**16)), "comments": name},
        )
    for name in rng.sample(seeded.users, 60):
        for group in rng.sample(seeded.groups, rng.randint(1, 5)):
            ram_store.add_member(conn, account_id, group, name)
    policies = {"aa", "AA", "Custom", "System", "ZZ", "zz", "a-b", "a0"}
    while len(policies) < 130:
        policies.add("".join(rng.choice(POLICY_CHARS) for _ in range(rng.randint(1, 10))))
    seeded.policies = sorted(policies)
    for name in seeded.policies:
        ram_store.insert_policy(conn, account_id, name, f"policy {name}", _document(_allow("*")))
    system = ["AliyunKvstoreFullAccess", "AliyunKvstoreReadOnlyAccess"]
    for _ in range(400):
        principal_type = rng.choice((USER, USER, GROUP))
        principal = rng.choice(seeded.users if principal_type == USER else seeded.groups)
        policy_type = rng.choice((CUSTOM, CUSTOM, CUSTOM, SYSTEM))
        policy = rng.choice(seeded.policies if policy_type == CUSTOM else system)
        if not any(
            a["policy_type"] == policy_type and a["policy_name"] == policy
            for a in ram_store.attachments_of(conn, account_id, principal_type, principal)
        ):
            ram_store.attach(conn, account_id, principal_type, principal, policy_type, policy)
    for k, name in enumerate(rng.sample(seeded.users, 20)):
        for j in range(1 + k % 2):
            add_access_key(
                conn, seeded.box, account_id, name, f"LTAIseed{k:03d}{j}", Secret("s" * 30)
            )


def _callers(conn: Connection, seeded: Seeded) -> None:
    """RAM users whose policies each exercise one way of allowing or hiding instances."""
    account_id, ids = seeded.account_id, seeded.instance_ids
    arn = f"acs:kvstore:{REGION}:{account_id}:instance/"
    exact = [f"acs:kvstore:*:*:instance/{i}" for i in ids[:30]]
    prefixes = [f"acs:kvstore:*:*:instance/r-{a}*" for a in "abcdefghijkl"]
    roles: dict[str, list[str]] = {
        "read-only": [],  # the system policy, below
        "deny-one": [
            _document(_allow("*", "kvstore:*"), _deny(arn + ids[7])),
        ],
        "prefix": [
            _document(
                _allow(["acs:kvstore:*:*:instance/r-a*", arn + "r-x*"]),
                _deny("acs:kvstore:*:*:instance/r-abc*"),
            )
        ],
        "middle": [
            _document(
                _allow(
                    [
                        "acs:kvstore:*:*:instance/r-?b*c*",
                        "acs:kvstore:cn-*:*:instance/*[1]*",
                        "acs:kvstore:*:*:instance/r-a%b_*",
                        "acs:*:instance/r-*9?",
                        "*instance/r-\u00e9*",
                    ]
                ),
                _deny("acs:kvstore:*:*:instance/r-*z?*"),
            )
        ],
        "not-resource": [
            _document(
                {"Effect": "Allow", "Action": "kvstore:Describe*", "NotResource": arn + "r-a*"},
                {"Effect": "Deny", "Action": "*", "NotResource": ["*0*", "*1*"]},
            )
        ],
        "conditions": [
            _document(
                _allow("*", Condition={"IpAddress": {"acs:SourceIp": "127.0.0.0/8"}}),
                _deny(arn + "r-a*", Condition={"Bool": {"acs:SecureTransport": "true"}}),
                _deny(arn + "r-b*", Condition={"NotIpAddress": {"acs:SourceIp": "10.0.0.0/8"}}),
            )
        ],
        "elsewhere": [
            _document(
                _allow("acs:kvstore:cn-beijing:*:instance/*"),
                _allow(f"acs:kvstore:*:{seeded.other_account_id}:instance/*"),
                _allow("acs:kvstore:*:*:instance/R-*"),  # ids are lower-case "r-"
                _allow("acs:kvstore:*:*:instance/r-ABC*"),  # exactly one id
            )
        ],
        "action-case": [_document(_allow(arn + "r-1*", "KVSTORE:describeinstances"))],
        "other-action": [_document(_allow("*", "kvstore:DescribeAccounts"))],
        "nothing": [],
        # Many exact ARNs: one IN (...) in SQL.
        "exact": [_document(_allow(exact), _deny(arn + ids[3]))],
        # More patterns than one SQL condition takes (the test lowers the bound to
        # see it with few): ids are evaluated one by one.
        "many": [_document(_allow(prefixes), _deny(arn + ids[3]))],
        # A pattern SQL cannot hold (a NUL): evaluated one by one too.
        "nul": [_document(_allow(["acs:kvstore:*:*:instance/r-\u0000*", arn + "r-2*"]))],
    }
    for n, (role, documents) in enumerate(roles.items()):
        user = f"caller.{role}"
        ram_store.insert_user(
            conn,
            seeded.account_id,
            {
                "user_name": user,
                "user_id": str(2 * 10**15 + n),
                "display_name": role,
                "email": "",
                "mobile_phone": "",
                "comments": "",
            },
        )
        for k, document in enumerate(documents):
            name = f"caller-{role}-{k}"
            ram_store.insert_policy(conn, account_id, name, role, document)
            ram_store.attach(conn, account_id, USER, user, CUSTOM, name)
        key_id, secret = f"LTAIcaller{n:02d}", Secret("Sk" + secrets.token_urlsafe(24))
        add_access_key(conn, seeded.box, account_id, user, key_id, secret)
        seeded.callers[role] = AccessKey(key_id, account_id, user, secret, ACTIVE)
    ram_store.attach(
        conn, account_id, USER, "caller.read-only", SYSTEM, "AliyunKvstoreReadOnlyAccess"
    )
    # Through a group: a Deny of another instance for deny-one.
    ram_store.insert_policy(conn, account_id, "group-deny", "", _document(_deny(arn + ids[8])))
    ram_store.insert_group(
        conn, account_id, {"group_name": "deniers", "group_id": str(3 * 10**15), "comments": ""}
    )
    ram_store.attach(conn, account_id, GROUP, "deniers", CUSTOM, "group-deny")
    ram_store.add_member(conn, account_id, "deniers", "caller.deny-one")
