"""The instance surface Terraform and the MCP servers read (issue 11), and its refusals.

Each Describe answers what is true of a self-hosted instance: its connection
address, no backups, no ECS security groups, and, read from the nodes
themselves (``engine.node_facts``), its TLS listener, who can connect and its
Redis version. A Modify that asks for something rkvstore cannot make true is
refused with an ``OperationDenied.*`` error naming the limit (errors.py), after
the instance is found, and nothing is recorded; one that asks for what already
holds (SSL or TDE off) changes nothing and answers as a success.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Iterator
from typing import Any

from rkvstore import errors
from rkvstore.engine import bounded
from rkvstore.engine.acl import Node
from rkvstore.engine.node_facts import DEFAULT_IP_GROUP, NodeFacts, read_facts, security_ips
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.services.context import CallContext
from rkvstore.services.instance_nodes import (
    CLUSTER,
    CREATING,
    FILE,
    LOCAL,
    MASTER_SLAVE,
    MEMORY,
    instance_addresses,
    instance_tls,
    is_legacy,
    load_instance,
)
from rkvstore.store.repo import InstanceRow

log = logging.getLogger("rkvstore.instances")

# The one network an instance is on, in each of the answer's spellings.
CLASSIC = "CLASSIC"
CLASSIC_NET_TYPE = "1"  # DBInstanceNetType: 0 Internet, 1 classic, 2 VPC
CLASSIC_IP_TYPE = "Inner"  # IPType: Public, Inner (classic), Private (VPC)
# EndTime of a pay-as-you-go resource, which does not expire: Alibaba's own sentinel
# for "never" (SLB and VPC answer it); the SDK model's EndTime is a string.
NEVER_EXPIRES = "2999-09-08T16:00:00Z"


# --------------------------------------------------------------------------- the fields


def _shared_fields(instance: InstanceRow) -> dict[str, Any]:
    """What both listings say beyond the basics, from the instance's row alone."""
    fields: dict[str, Any] = {
        "SlaveReadOnlyCount": 0,  # no secondary zone, no read replicas in one
        "SlaveReplicaCount": 0,
        "Tags": {"Tag": []},  # no tags are kept
    }
    if instance.charge_type == "PostPaid":
        fields["EndTime"] = NEVER_EXPIRES
    return fields


def attribute_fields(instance: InstanceRow) -> dict[str, Any]:
    """DescribeInstanceAttribute's fields beyond the basics, typed as SDK 7.0.0's model."""
    fields = {
        **_shared_fields(instance),
        "RealInstanceClass": instance.instance_class,  # no virtual class over shards
        "IsSupportTDE": False,
        "IsOrderCompleted": True,  # no order is ever pending
        "HasRenewChangeOrder": "false",  # a string in this model
        # Set by ModifyInstanceAttribute; DeleteInstance refuses the instance while on.
        "InstanceReleaseProtection": instance.release_protection,
        "ReadOnlyCount": 0,  # no read/write splitting
        "AutoSecondaryZone": False,
        "ZoneType": "singlezone",
        "AuditLogRetention": "0",  # no audit log
        # (extension) Where the nodes keep accounts: File (an ACL file or redis.conf),
        # or Memory (a registered node with neither: lost at its restart, put back
        # by the reconciler within RKVSTORE_IN_MEMORY_VERIFY_SECONDS and a pass).
        "AccountsPersistence": MEMORY if instance.accounts_in_memory else FILE,
    }
    if instance.architecture == CLUSTER:
        fields["ReplicationMode"] = "cluster"
    elif instance.node_type == MASTER_SLAVE:
        fields["ReplicationMode"] = "master-slave"
    if instance.provider == LOCAL or is_legacy(instance):
        # The default account always has a password: rkvstore sets it (a local
        # instance), or it is requirepass, rkvstore's own login (Redis before 6.0).
        # A registered 6.0+ deployment's default user is its operator's: not said.
        fields["VpcAuthMode"] = "Open"
    return fields


def listing_fields(instance: InstanceRow) -> dict[str, Any]:
    """DescribeInstances' fields beyond the basics (no node is read for a listing)."""
    return {
        **_shared_fields(instance),
        "ReadOnlyCount": "0",  # a string in this model
        "HasRenewChangeOrder": False,  # a boolean in this one
        "EditionType": "Community",  # open-source Redis
        "ConnectionMode": "Standard",  # clients reach the nodes directly, no proxy
    }


# --------------------------------------------------------------------------- the nodes


@contextlib.contextmanager
def _reading_nodes(ctx: CallContext, instance: InstanceRow) -> Iterator[list[Node]]:
    """The instance's nodes, logged in to for a read: as the management user, or
    (Redis before 6.0, no users) with ``requirepass``, on clients closed after."""
    deps = ctx.deps
    addresses = instance_addresses(deps, instance)
    password = deps.box.open(instance.mgmt_password_encrypted)
    if not is_legacy(instance):
        yield deps.redis.nodes(addresses, password, instance_tls(deps, instance))
        return
    clients = [
        bounded.client(
            a.host,
            a.port,
            password=password.reveal(),
            timeout=deps.settings.node_timeout_seconds,
            protocol=2,  # no HELLO before 6.0
        )
        for a in addresses
    ]
    try:
        yield [Node(a.label, c) for a, c in zip(addresses, clients, strict=True)]
    finally:
        for client in clients:
            client.close()


def node_facts(ctx: CallContext, instance: InstanceRow) -> list[NodeFacts]:
    """What every node says now, masters first; ``ServiceUnavailable`` if one cannot say."""
    if instance.status == CREATING:
        raise ApiError(errors.INCORRECT_INSTANCE_STATE)
    # One deadline for the whole read: a registered deployment's look at its
    # topology (instance_addresses) as well as the nodes' answers.
    with (
        bounded.exchange(ctx.deps.settings.node_timeout_seconds),
        _reading_nodes(ctx, instance) as nodes,
    ):
        answers = read_facts(nodes)
    failed = {label: a for label, a in answers.items() if isinstance(a, str)}
    if failed:
        log.warning(
            "request %s: nodes of %s could not be read: %s",
            ctx.request_id,
            instance.instance_id,
            "; ".join(f"{label}: {why}" for label, why in sorted(failed.items())),
        )
        raise ApiError(errors.SERVICE_UNAVAILABLE)
    return [a for a in answers.values() if not isinstance(a, str)]


def _ssl_enabled(facts: list[NodeFacts]) -> bool:
    """TLS only if every node has a TLS listener (a client may land on any of them)."""
    return bool(facts) and all(f.tls_port > 0 for f in facts)


# --------------------------------------------------------------------------- Describe*


def describe_db_instance_net_info(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """The one address clients connect to (the first master), on the classic network."""
    instance = load_instance(ctx, params["InstanceId"])
    item: dict[str, Any] = {
        "ConnectionString": instance.host,
        "Port": str(instance.port),
        "DBInstanceNetType": CLASSIC_NET_TYPE,
        "IPType": CLASSIC_IP_TYPE,
        "DirectConnection": 0,
        "Upgradeable": "0",  # the address does not expire
    }
    with contextlib.suppress(ValueError):  # a registered deployment may be named, not numbered
        item["IPAddress"] = str(ipaddress.ip_address(instance.host))
    return {"InstanceNetworkType": CLASSIC, "NetInfoItems": {"InstanceNetInfo": [item]}}


def describe_backup_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """rkvstore runs no backups: no period, no time, nothing kept, no log."""
    load_instance(ctx, params["InstanceId"])
    return {
        "PreferredBackupPeriod": "",
        "PreferredBackupTime": "",
        "BackupRetentionPeriod": "0",
        "EnableBackupLog": 0,
        "DbsInstance": "0",
    }


def describe_security_group_configuration(
    ctx: CallContext, params: dict[str, Any]
) -> dict[str, Any]:
    load_instance(ctx, params["InstanceId"])
    return {"Items": {"EcsSecurityGroupRelation": []}}


def describe_instance_ssl(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """``Enable`` only if every node has a TLS listener (``CONFIG GET tls-port``)."""
    instance = load_instance(ctx, params["InstanceId"])
    enabled = _ssl_enabled(node_facts(ctx, instance))
    return {
        "InstanceId": instance.instance_id,
        "SSLEnabled": "Enable" if enabled else "Disable",
    }


def describe_security_ips(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """One group, ``default``: who the nodes let connect (``engine.node_facts.security_ips``)."""
    instance = load_instance(ctx, params["InstanceId"])
    ips = security_ips(node_facts(ctx, instance))
    group = {
        "SecurityIpGroupName": DEFAULT_IP_GROUP,
        "SecurityIpGroupAttribute": "",
        "SecurityIpList": ips,
    }
    return {"SecurityIpGroups": {"SecurityIpGroup": [group]}}


def describe_engine_version(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """The version the master at the connection address runs (``INFO server``).

    Nothing here upgrades an instance, so no upgrade is offered, and none is automatic.
    """
    instance = load_instance(ctx, params["InstanceId"])
    facts = node_facts(ctx, instance)
    version = facts[0].redis_version  # masters first: the first is where clients connect
    return {
        "Engine": "redis",
        "MajorVersion": f"{version.split('.')[0]}.0",
        "MinorVersion": version,
        "EnableUpgradeMajorVersion": False,
        "EnableUpgradeMinorVersion": False,
        "IsAutoUpgradeOpen": "0",
        "IsSSLEnable": "1" if _ssl_enabled(facts) else "0",
    }


# --------------------------------------------------------------------------- refusals


def modify_instance_ssl(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """``Disable`` where no node has TLS holds already; anything else cannot be made true."""
    instance = load_instance(ctx, params["InstanceId"])
    if params["SSLEnabled"] != "Disable" or _ssl_enabled(node_facts(ctx, instance)):
        raise ApiError(kvstore_errors.SSL_NOT_SUPPORTED)
    return {}


def modify_instance_tde(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """``Disabled`` holds already (nothing is encrypted at rest); ``Enabled`` cannot."""
    load_instance(ctx, params["InstanceId"])
    if params["TDEStatus"] != "Disabled":
        raise ApiError(kvstore_errors.TDE_NOT_SUPPORTED)
    return {}


def modify_backup_policy(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    load_instance(ctx, params["InstanceId"])
    raise ApiError(kvstore_errors.BACKUP_NOT_SUPPORTED)


def modify_security_group_configuration(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    load_instance(ctx, params["DBInstanceId"])
    raise ApiError(kvstore_errors.SECURITY_GROUP_NOT_SUPPORTED)


def refuse_what_create_cannot_make(params: dict[str, Any]) -> None:
    """CreateInstance asking for a VPC or a subscription: refused, not silently dropped."""
    if params["NetworkType"] == "VPC" or params["VpcId"] or params["VSwitchId"]:
        raise ApiError(kvstore_errors.VPC_NOT_SUPPORTED)
    if params["ChargeType"] == "PrePaid":
        raise ApiError(kvstore_errors.PREPAID_NOT_SUPPORTED)
