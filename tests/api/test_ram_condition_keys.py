"""Condition keys through the official RAM SDK (issue 9, finding 2).

A key rkvstore does not know is refused by CreatePolicy and CreatePolicyVersion
with ``MalformedPolicyDocument`` (code, status and message as the SDK sees
them), and nothing is stored; a known key in another letter case is stored and
enforced: a RAM user under a Deny written with ``ACS:SECURETRANSPORT`` is denied
over plain HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_ram20150501 import models as ram_models
from alibabacloud_ram20150501.client import Client as RamClient

from tests.api.ram_helpers import (
    Principal,
    create_policy,
    discover_account_id,
    document,
    expect_denied,
    expect_error,
    make_user,
    ram_server,
    root_of,
    statement,
    unique,
)
from tests.conftest import LiveServer

POLICY_NOT_EXIST = ("EntityNotExist.Policy", 404, "The policy does not exist.")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with ram_server(tmp_path_factory.mktemp("ram-keys")) as server:
        yield server


@pytest.fixture(scope="module")
def root(live_server: LiveServer) -> Principal:
    return root_of(live_server)


@pytest.fixture(scope="module")
def ram(root: Principal) -> RamClient:
    return root.ram()


@pytest.mark.parametrize(
    "key", ["acs:SourceIp ", "acs:SourceIpAddress", "acs:MFAPresent", "kvstore:Tag"]
)
def test_an_unknown_condition_key_is_refused_and_nothing_is_stored(
    ram: RamClient, key: str
) -> None:
    bad = document(
        statement("kvstore:*", effect="Deny", condition={"NotIpAddress": {key: "10.0.0.0/8"}})
    )
    error = ("MalformedPolicyDocument", 400, f'The condition key "{key}" is not supported.')
    name = unique("typo")
    expect_error(
        lambda: ram.create_policy(
            ram_models.CreatePolicyRequest(policy_name=name, policy_document=bad)
        ),
        error,
    )
    expect_error(
        lambda: ram.get_policy(ram_models.GetPolicyRequest(policy_name=name, policy_type="Custom")),
        POLICY_NOT_EXIST,
    )
    good = create_policy(ram, document(statement("kvstore:Describe*")))
    expect_error(
        lambda: ram.create_policy_version(
            ram_models.CreatePolicyVersionRequest(
                policy_name=good, policy_document=bad, set_as_default=True
            )
        ),
        error,
    )
    got = ram.get_policy(ram_models.GetPolicyRequest(policy_name=good, policy_type="Custom")).body
    assert (got.policy.default_version, got.default_policy_version.version_id) == ("v1", "v1")


def test_a_known_key_in_another_case_is_stored_and_enforced(root: Principal) -> None:
    account_id = discover_account_id(root)
    allow = statement("kvstore:DescribeRegions")
    deny = statement(
        "kvstore:DescribeRegions",
        effect="Deny",
        condition={"Bool": {"ACS:SECURETRANSPORT": "false"}},  # this server speaks HTTP
    )
    allowed = make_user(root, account_id, documents=[document(allow)])
    allowed.kv().describe_regions(kv_models.DescribeRegionsRequest())
    denied = make_user(root, account_id, documents=[document(allow, deny)])
    expect_denied(
        lambda: denied.kv().describe_regions(kv_models.DescribeRegionsRequest()),
        denied,
        "kvstore:DescribeRegions",
        "ExplicitDeny",
    )
