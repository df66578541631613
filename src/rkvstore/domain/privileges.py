"""The decided mapping from an account privilege to Redis ACL rules (api.md §3).

``acl_rules`` returns the rule tokens that follow ``reset on #<sha256>`` in
``ACL SETUSER``. Every list is accepted by Redis 6.2 and 7.x and gives the same
effective permissions on both, which the integration tests check command by
command. Two facts shape the lists:

- Redis 6.x cannot *remove* a subcommand (``-config|set`` is rejected) but can
  *add* one (``+config|get``); so every partial permission is written as "deny
  the command, then add the allowed subcommands back".
- Redis 7.x validates subcommand names (``+cluster|shards`` is fine there,
  ``+client|setinfo`` fails on 7.0) and files more subcommands under ``@admin``
  one by one (``client|kill`` is ``@admin``, ``client|setname`` is not), while
  6.2 files whole commands (``CLIENT``, ``ACL``) under ``@admin``. The 6.2 lists
  add back the subcommands that 7.x leaves outside ``@admin``.

Every list starts from ``+@all -@admin`` rather than from ``-@all``: new data
commands (a module's, a newer Redis's) are usable without a release of
rkvstore, and new administrative commands are denied for the same reason.
The contract's forbidden commands are then denied by name as well, so they stay
denied if a Redis release ever moves one out of ``@admin``.

Deliberately left in: RoleReadWrite keeps every non-admin command that works
on data, including FLUSHALL, SWAPDB, MIGRATE (which makes the Redis host
connect to an address the client names) and SCRIPT/FUNCTION management.
RoleReadOnly keeps SCRIPT LOAD/FLUSH/KILL and FUNCTION KILL: they change no
data, and scripts run with the caller's rights, so a read-only account's
script cannot write either.

The README table is ``describe_rules_markdown()``.
"""

from __future__ import annotations

from typing import Final

PRIVILEGE_READ_ONLY: Final = "RoleReadOnly"
PRIVILEGE_READ_WRITE: Final = "RoleReadWrite"
PRIVILEGE_REPL: Final = "RoleRepl"
PRIVILEGE_SUPER: Final = "Super"  # the instance's default accounts only

# The families the rules are written for. Redis 6.0.x (no Pub/Sub ACLs, so no
# ``&*``) is not supported: "6" means 6.2, which reports itself as "6.0".
_V6: Final = 6
_V7: Final = 7

_ALL_KEYS_AND_CHANNELS: Final = ("~*", "&*")

# Denied by name on top of ``-@admin`` (they are all in ``@admin`` on 6.2 and 7.x).
_FORBIDDEN: Final = (
    "-acl",
    "-config",
    "-shutdown",
    "-debug",
    "-module",
    "-replicaof",
    "-slaveof",
    "-monitor",
    "-failover",
    "-cluster",
    "-sync",
    "-psync",
    "-replconf",
    "-save",
    "-bgsave",
    "-bgrewriteaof",
)

# ACL subcommands that concern only the caller or are static: 7.x leaves them
# outside @admin; naming them keeps 6.2 the same.
_ACL_SELF: Final = ("+acl|whoami", "+acl|cat", "+acl|genpass", "+acl|help")

# What a cluster client library runs: slot map, topology, key hashing, and the
# replica read switch (READONLY/READWRITE are ordinary connection commands).
_CLUSTER_CLIENT: Final = (
    "+cluster|slots",
    "+cluster|nodes",
    "+cluster|info",
    "+cluster|keyslot",
    "+cluster|myid",
    "+cluster|help",
)
_CLUSTER_CLIENT_7: Final = ("+cluster|shards",)

# The CLIENT subcommands 7.x leaves outside @admin (connection state only), and
# the HELP texts it leaves there too; 6.2 files these whole commands under
# @admin, so they are added back there.
_CLIENT_CONNECTION_6: Final = (
    "+client|id",
    "+client|info",
    "+client|setname",
    "+client|getname",
    "+client|reply",
    "+client|tracking",
    "+client|trackinginfo",
    "+client|caching",
    "+client|getredir",
    "+client|help",
    "+slowlog|help",
    "+latency|help",
)

# ROLE is read-only and says no more than INFO replication; 7.x files it under
# @admin, 6.2 does not. Replication-aware clients use it to find the master.
_ROLE: Final = ("+role",)

_REPLICATION: Final = ("+sync", "+psync", "+replconf")

# Read-only introspection for the instance's owner. Not CONFIG GET: it returns
# masterauth and requirepass in plaintext, a path to another account's secret.
_SUPER_EXTRA: Final = (
    "+acl|users",
    "+acl|list",
    "+acl|getuser",
    "+acl|log",
    "+slowlog",
    "+latency",
    "+lastsave",
    "+monitor",
    "+client|list",
    "+client|kill",
    "+client|unblock",
    "+module|list",
    "+cluster|countkeysinslot",
    "+cluster|getkeysinslot",
    "+cluster|replicas",
    "+cluster|slaves",
)
_SUPER_EXTRA_7: Final = ("+acl|dryrun", "+client|no-evict", "+cluster|links")

# Pub/Sub publishing is a side effect other clients see, and it is replicated:
# a read-only account observes (SUBSCRIBE) but does not emit.
_NO_PUBLISH: Final = ("-publish",)
_NO_PUBLISH_7: Final = ("-spublish",)
# 6.2's XGROUP is one @write command; 7.x's XGROUP HELP is not @write.
_READ_ONLY_HELP_6: Final = ("+xgroup|help",)


def engine_family(engine_version: str) -> int:
    """6 or 7 from ``"6.0"``, ``"6.2.14"``, ``"7.0"``, ``"7.2.4"`` …; ValueError below 6."""
    head = engine_version.strip().split(".", 1)[0]
    if not head.isdigit():
        raise ValueError(f"not an engine version: {engine_version!r}")
    major = int(head)
    if major < _V6:
        raise ValueError(f"Redis {engine_version} has no ACL")
    return _V7 if major >= _V7 else _V6


def _read_write(family: int) -> list[str]:
    rules = [*_ALL_KEYS_AND_CHANNELS, "+@all", "-@admin", *_FORBIDDEN, *_ACL_SELF]
    rules += _CLUSTER_CLIENT
    if family >= _V7:
        rules += _CLUSTER_CLIENT_7
    else:
        rules += _CLIENT_CONNECTION_6
    rules += _ROLE
    return rules


def acl_rules(privilege: str, engine_version: str) -> list[str]:
    """The ACL SETUSER rule tokens for ``privilege``, after ``reset on #<hash>``."""
    family = engine_family(engine_version)
    rules = _read_write(family)
    if privilege == PRIVILEGE_READ_WRITE:
        return rules
    if privilege == PRIVILEGE_READ_ONLY:
        rules += ["-@write", *_NO_PUBLISH]
        rules += _NO_PUBLISH_7 if family >= _V7 else _READ_ONLY_HELP_6
        return rules
    if privilege == PRIVILEGE_REPL:
        return rules + list(_REPLICATION)
    if privilege == PRIVILEGE_SUPER:
        rules += _SUPER_EXTRA
        if family >= _V7:
            rules += _SUPER_EXTRA_7
        return rules
    raise ValueError(f"unknown privilege: {privilege!r}")


def management_rules() -> list[str]:
    """rkvstore's own management user: every key, channel and command."""
    return [*_ALL_KEYS_AND_CHANNELS, "+@all"]


_MEANING: Final = {
    PRIVILEGE_READ_WRITE: (
        "Every data, scripting, transaction, Pub/Sub and connection command on all keys "
        "and channels; INFO, PING, ROLE; ACL WHOAMI/CAT/GENPASS; CLUSTER SLOTS/NODES/INFO/"
        "KEYSLOT/MYID (+SHARDS on 7.x). Denied: every other ACL subcommand, CONFIG, "
        "SHUTDOWN, DEBUG, MODULE, REPLICAOF/SLAVEOF, MONITOR, FAILOVER, CLUSTER changes, "
        "SYNC/PSYNC/REPLCONF, SAVE/BGSAVE/BGREWRITEAOF, SLOWLOG, LATENCY, CLIENT "
        "LIST/KILL/PAUSE, and anything else in @admin."
    ),
    PRIVILEGE_READ_ONLY: (
        "RoleReadWrite minus every @write command and PUBLISH/SPUBLISH: reads, SCAN/KEYS, "
        "SUBSCRIBE, transactions, scripts (the ACL applies inside them, so a script cannot "
        "write either), connection commands, INFO, PING."
    ),
    PRIVILEGE_REPL: "RoleReadWrite plus SYNC, PSYNC and REPLCONF (a replica's master link).",
    PRIVILEGE_SUPER: (
        "RoleReadWrite plus read-only introspection: ACL USERS/LIST/GETUSER/LOG "
        "(+DRYRUN on 7.x), SLOWLOG, LATENCY, LASTSAVE, MONITOR, CLIENT LIST/KILL/UNBLOCK "
        "(+NO-EVICT on 7.x), MODULE LIST, CLUSTER COUNTKEYSINSLOT/GETKEYSINSLOT/"
        "REPLICAS/SLAVES (+LINKS on 7.x). Still denied: ACL changes, all of CONFIG "
        "(CONFIG GET shows masterauth in plaintext), persistence, SHUTDOWN, DEBUG, "
        "MODULE LOAD, replication and cluster topology, CLIENT PAUSE."
    ),
}


def describe_rules_markdown() -> str:
    """A Markdown table of every privilege's rules per engine family, for the README."""
    lines = [
        "| Privilege | Engine | Rules after `reset on #<sha256>` | Allows / forbids |",
        "|---|---|---|---|",
    ]
    for privilege in (PRIVILEGE_READ_ONLY, PRIVILEGE_READ_WRITE, PRIVILEGE_REPL, PRIVILEGE_SUPER):
        for version in ("6.0", "7.0"):
            # "|" inside a table cell must be escaped, code span or not (GFM).
            rules = " ".join(acl_rules(privilege, version)).replace("|", "\\|")
            lines.append(f"| {privilege} | {version} | `{rules}` | {_MEANING[privilege]} |")
    lines.append(
        f"| (management user) | 6.0, 7.0 | `{' '.join(management_rules())}` | everything |"
    )
    return "\n".join(lines) + "\n"
