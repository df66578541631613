"""The privilege -> ACL rule mapping, as data (the Redis servers check it in tests/integration)."""

from __future__ import annotations

import pytest

from rkvstore.domain.privileges import (
    acl_rules,
    describe_rules_markdown,
    engine_family,
    management_rules,
)

ALL = ("RoleReadOnly", "RoleReadWrite", "RoleRepl", "Super")
VERSIONS = ("6.0", "7.0")


@pytest.mark.parametrize(
    ("version", "family"),
    [("6.0", 6), ("6.2", 6), ("6.2.14", 6), ("7.0", 7), ("7.0.15", 7), ("7.2.4", 7), ("8.0", 7)],
)
def test_engine_family(version: str, family: int) -> None:
    assert engine_family(version) == family


@pytest.mark.parametrize("version", ["4.0", "5.0", "5.0.14", "", "x", "v7"])
def test_an_engine_without_acl_has_no_rules(version: str) -> None:
    with pytest.raises(ValueError):
        acl_rules("RoleReadWrite", version)


def test_an_unknown_privilege_has_no_rules() -> None:
    with pytest.raises(ValueError):
        acl_rules("RoleAdmin", "7.0")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("privilege", ALL)
def test_every_account_gets_all_keys_and_channels_and_no_admin_command(
    privilege: str, version: str
) -> None:
    rules = acl_rules(privilege, version)
    assert rules[:4] == ["~*", "&*", "+@all", "-@admin"]
    assert not {"reset", "on", "off", "nopass", "+@admin", "allcommands"} & set(rules)
    assert not any(r.startswith((">", "<", "#", "!")) for r in rules)  # passwords are not ours
    for forbidden in ("config", "shutdown", "debug", "module", "replicaof", "slaveof", "failover"):
        assert f"-{forbidden}" in rules
        assert not any(r.startswith(f"+{forbidden}") and r != "+module|list" for r in rules)
    assert not {"+acl", "+acl|setuser", "+acl|deluser", "+acl|load", "+acl|save"} & set(rules)
    assert not {"+cluster", "+client", "+client|pause", "+config|get"} & set(rules)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_privileges_build_on_read_write(version: str) -> None:
    read_write = acl_rules("RoleReadWrite", version)
    assert acl_rules("RoleRepl", version) == [*read_write, "+sync", "+psync", "+replconf"]
    read_only = acl_rules("RoleReadOnly", version)
    assert read_only[: len(read_write)] == read_write
    assert {"-@write", "-publish"} <= set(read_only[len(read_write) :])
    super_ = acl_rules("Super", version)
    assert super_[: len(read_write)] == read_write
    assert "+monitor" in super_
    assert "+sync" not in super_


def test_seven_only_subcommands_stay_off_six() -> None:
    six = {r for p in ALL for r in acl_rules(p, "6.0")}
    seven = {r for p in ALL for r in acl_rules(p, "7.0")}
    for only_seven in (
        "+cluster|shards",
        "+cluster|links",
        "+acl|dryrun",
        "+client|no-evict",
        "-spublish",
    ):
        assert only_seven in seven
        assert only_seven not in six


def test_the_rules_are_fresh_lists() -> None:
    first = acl_rules("RoleReadWrite", "7.0")
    first.append("+@admin")
    assert "+@admin" not in acl_rules("RoleReadWrite", "7.0")
    assert "+@admin" not in acl_rules("RoleRepl", "7.0")


def test_the_management_user_may_do_everything() -> None:
    assert management_rules() == ["~*", "&*", "+@all"]


def test_the_markdown_table_lists_every_privilege_and_version() -> None:
    table = describe_rules_markdown()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(ALL) * len(VERSIONS) + 1  # header, rows, management user
    for row in rows:
        # the cell separators only: every "|" inside a rule is escaped
        assert row.replace("\\|", "").count("|") == 5
    for privilege in ALL:
        assert f"| {privilege} | 6.0 |" in table
        assert f"| {privilege} | 7.0 |" in table
