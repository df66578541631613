"""What an instance's nodes say about themselves: version, listening addresses, TLS.

One batch per node (``INFO server``, ``CONFIG GET bind``, ``CONFIG GET tls-port``),
every node at once, within one deadline. Nothing is changed. The Describe
actions of the instance surface answer from this, not from the database.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rkvstore.engine.acl import Node, _short, exchange_batches

FACTS_BATCH = (("INFO", "server"), ("CONFIG", "GET", "bind"), ("CONFIG", "GET", "tls-port"))
# Anything at all, as a whitelist: what a node that listens beyond loopback admits.
ANYWHERE = "0.0.0.0/0"
LOOPBACK = "127.0.0.1"
# The one whitelist group an instance has (DescribeSecurityIps, ModifySecurityIps).
DEFAULT_IP_GROUP = "default"


@dataclass(frozen=True)
class NodeFacts:
    redis_version: str  # INFO server's redis_version, e.g. "7.0.15"
    bind: tuple[str, ...]  # the addresses it listens on, as CONFIG GET bind says
    tls_port: int  # 0: no TLS listener (and so for Redis before 6, which has none)


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def info_field(info: Any, name: str) -> str:
    """One field of an ``INFO`` reply (``""`` if it has none)."""
    for line in text(info).splitlines():
        if line.startswith(f"{name}:"):
            return line.partition(":")[2].strip()
    return ""


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # "*", a name, anything else: not provably loopback
        return False


def config_value(reply: Any) -> str:
    """The value of a one-name CONFIG GET: ``[name, value]`` (RESP2), ``{name: value}``,
    or nothing for a name this Redis does not know (``tls-port`` before 6.0)."""
    if isinstance(reply, dict):
        return text(next(iter(reply.values()), ""))
    if isinstance(reply, list | tuple) and len(reply) >= 2:
        return text(reply[1])
    return ""


def parse_facts(replies: Sequence[Any]) -> NodeFacts:
    """The facts from the batch's replies; ``ValueError`` if the node said something else."""
    info, bind, tls = replies
    if isinstance(info, Exception):
        raise ValueError(f"INFO server refused: {_short(info)}")
    version = info_field(info, "redis_version")
    if not version:
        raise ValueError("INFO server gave no redis_version")
    if isinstance(bind, Exception):
        raise ValueError(f"CONFIG GET bind refused: {_short(bind)}")
    addresses = tuple(config_value(bind).split())
    tls_text = "" if isinstance(tls, Exception) else config_value(tls)
    return NodeFacts(version, addresses, int(tls_text) if tls_text.isdigit() else 0)


def read_facts(nodes: Sequence[Node]) -> dict[str, NodeFacts | str]:
    """Every node's facts at once, or why a node could not say (by node label)."""
    out: dict[str, NodeFacts | str] = {}
    batch = [list(command) for command in FACTS_BATCH]
    for label, replies in exchange_batches([(node, batch) for node in nodes]).items():
        if isinstance(replies, str):
            out[label] = replies
            continue
        try:
            out[label] = parse_facts(replies)
        except (ValueError, TypeError) as exc:
            out[label] = _short(exc)
    return out


def whitelist_of(binds: Iterable[str]) -> str:
    """Who can connect, as a whitelist, from each node's ``bind``: ``127.0.0.1`` when
    every node listens on loopback addresses only, else ``0.0.0.0/0``. Redis filters
    no client address and neither does rkvstore, so a node reachable beyond its host
    admits any address that reaches it; ``bind`` is the one address rule there is."""
    binds = list(binds)
    return LOOPBACK if binds and all(_loopback_only(b) for b in binds) else ANYWHERE


def _loopback_only(bind: str) -> bool:
    # Redis 7 writes an optional address with a leading "-" ("-::1"): it is still one.
    addresses = [a.lstrip("-") for a in bind.split()]
    return bool(addresses) and all(_is_loopback(a) for a in addresses)  # none: every interface


def security_ips(facts: Sequence[NodeFacts]) -> str:
    return whitelist_of(" ".join(f.bind) for f in facts)
