"""Why a registration cannot go on, in words that say what to do (issue 13).

Every way ``RegisterInstance`` can fail at a node has its own code
(errors.py, ``InvalidEndpoint.*``); none answers ``ServiceUnavailable``. The
checks here read the nodes as the operator's admin before anything is changed:
whether each keeps accounts on disk (an ACL file or a config file), and
whether the admin may run what rkvstore needs there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rkvstore.engine.acl import Node, exchange_batches
from rkvstore.engine.discovery import DiscoveryError, FoundNode, refused_command
from rkvstore.engine.node_facts import config_value, info_field
from rkvstore.engine.node_tls import NodeTls, TlsSettingsError, speaks_tls
from rkvstore.engine.sentinel import SentinelError, SentinelSettings, master_of
from rkvstore.errors import ApiError
from rkvstore.products.kvstore import errors as kvstore_errors
from rkvstore.secret import Secret

# Asked of every node before registering it (as the operator's admin).
PROBE = (("INFO", "server"), ("CONFIG", "GET", "aclfile"))


@dataclass(frozen=True)
class Where:
    """How the endpoint was given and reached, for messages that name what the user typed."""

    given: str  # host:port as in Endpoint
    reached: str  # ip:port connected to
    admin_user: str  # as the nodes know it ("default" for requirepass)

    def name(self, label: str) -> str:
        return self.given if label == self.reached else label


def tls_settings(params: dict[str, Any]) -> NodeTls | None:
    """The TLS parameters as settings (checked by building their context), or ``None``."""
    ca: str = params["TlsCaCertificate"] or ""
    cert: str | None = params["TlsClientCertificate"] or None
    key: Secret | None = params["TlsClientKey"] or None
    server_name: str | None = params["TlsServerName"] or None
    if not ca:
        for name, value in (
            ("TlsClientCertificate", cert),
            ("TlsClientKey", key),
            ("TlsServerName", server_name),
        ):
            if value:
                raise ApiError(
                    kvstore_errors.INVALID_TLS_PARAMETER,
                    name=name,
                    reason="it needs TlsCaCertificate",
                )
        return None
    tls = NodeTls(ca=ca, cert=cert, key=key, server_name=server_name)
    try:
        tls.context()
    except TlsSettingsError as exc:
        raise ApiError(
            kvstore_errors.INVALID_TLS_PARAMETER, name=exc.name, reason=exc.reason
        ) from exc
    return tls


def master_by_sentinels(settings: SentinelSettings, timeout: float) -> tuple[str, int]:
    """The master the Sentinels name, or why none does."""
    try:
        return master_of(settings, timeout)
    except SentinelError as exc:
        if exc.kind == "unknown":
            raise ApiError(
                kvstore_errors.INVALID_ENDPOINT_SENTINEL_MASTER, name=settings.master_name
            ) from exc
        why = " (they refused SentinelPassword)" if exc.kind == "auth" else ""
        raise ApiError(
            kvstore_errors.INVALID_ENDPOINT_SENTINEL, sentinels=settings.labels, why=why
        ) from exc


def explain_discovery(
    exc: DiscoveryError, where: Where, tls: NodeTls | None, timeout: float
) -> ApiError:
    """The answer for a deployment that could not be found from its seed."""
    node = where.name(exc.node)
    if exc.kind == "auth":
        return ApiError(kvstore_errors.INVALID_ENDPOINT_AUTH, node=node)
    if exc.kind == "noperm":
        return ApiError(
            kvstore_errors.INVALID_ENDPOINT_PERMISSION,
            user=where.admin_user,
            command=exc.detail,
            node=node,
        )
    if exc.kind == "outside":  # the seed's master: never connected to, nor probed
        return ApiError(kvstore_errors.INVALID_ENDPOINT_NOT_ALLOWED)
    if exc.kind == "master":
        return ApiError(kvstore_errors.INVALID_ENDPOINT_MASTER, node=node, master=exc.detail)
    if exc.kind == "cluster":
        return ApiError(kvstore_errors.INVALID_ENDPOINT_CLUSTER, node=node, reason=exc.detail)
    if exc.kind == "tls":
        return ApiError(kvstore_errors.INVALID_ENDPOINT_TLS_HANDSHAKE, node=node, reason=exc.detail)
    return unreachable(exc.node, where, tls, timeout, exc.detail)


# A TLS handshake takes milliseconds where it works at all: the probe waits no longer.
TLS_PROBE_SECONDS = 1.0


def unreachable(
    label: str, where: Where, tls: NodeTls | None, timeout: float, why: str = ""
) -> ApiError:
    """A node that did not answer as Redis: one that speaks TLS only, asked in plain
    text, says so (a TLS handshake is tried, unless the node answered nothing in
    time: a TLS port closes a plain-text connection at once); any other is out of reach."""
    host, _, port = label.rpartition(":")
    probe = tls is None and why != "TimeoutError" and port.isdigit()
    if probe and speaks_tls(host, int(port), min(timeout, TLS_PROBE_SECONDS)):
        return ApiError(kvstore_errors.INVALID_ENDPOINT_TLS_REQUIRED, node=where.name(label))
    return ApiError(kvstore_errors.INVALID_ENDPOINT, node=where.name(label))


def explain_node_failure(
    failed: dict[str, str], where: Where, cluster: bool, tls: NodeTls | None, timeout: float
) -> ApiError:
    """The answer for nodes that refused or missed a step (by label, ``_short`` reasons)."""
    label, reason = sorted(failed.items())[0]
    node = where.name(label)
    if reason.startswith("AuthenticationError"):
        return ApiError(kvstore_errors.INVALID_ENDPOINT_AUTH, node=node)
    if reason.startswith("NoPermissionError"):
        return ApiError(
            kvstore_errors.INVALID_ENDPOINT_PERMISSION,
            user=where.admin_user,
            command=refused_command(reason),
            node=node,
        )
    if cluster:
        return ApiError(
            kvstore_errors.INVALID_ENDPOINT_CLUSTER,
            node=where.given,
            reason=f"node {node} cannot be reached",
        )
    return unreachable(label, where, tls, timeout)


def accounts_in_memory(
    nodes: Sequence[Node],
    found: Sequence[FoundNode],
    where: Where,
    cluster: bool,
    tls: NodeTls | None,
    timeout: float,
) -> str | None:
    """The first node that keeps accounts in memory only (neither an ACL file nor a
    config file), or ``None``. A master that cannot answer refuses the
    registration (``ApiError``); a replica that cannot is left out later anyway."""
    masters = {f"{n.host}:{n.port}" for n in found if n.role == "master"}
    batch = [list(command) for command in PROBE]
    answers = exchange_batches([(node, batch) for node in nodes])
    failed: dict[str, str] = {}
    in_memory: list[str] = []
    for label, replies in sorted(answers.items()):
        if isinstance(replies, str):
            failed[label] = replies
            continue
        refused = next((r for r in replies if isinstance(r, Exception)), None)
        if refused is not None:
            failed[label] = f"{type(refused).__name__}: {refused}"
            continue
        info, aclfile = replies
        config_file = info_field(info, "config_file")
        if not config_file and not config_value(aclfile):
            in_memory.append(label)
    refusing = {k: v for k, v in failed.items() if k in masters}
    if refusing:
        raise explain_node_failure(refusing, where, cluster, tls, timeout)
    return where.name(in_memory[0]) if in_memory else None
