"""Issue 9, finding 1: RAM's address and TLS conditions cannot be lifted with unsigned headers.

``acs:SourceIp`` and ``acs:SecureTransport`` are the connection's own unless
the operator names a trusted proxy (``RKVSTORE_TRUSTED_PROXIES``); then, and
only for requests from that proxy, ``X-Forwarded-For``/``-Proto`` count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.ram_helpers import (
    FORBIDDEN_RAM,
    GENEROUS_RATE,
    Principal,
    discover_account_id,
    document,
    make_user,
    root_of,
    statement,
)
from tests.conftest import ARTIFACT_DIRS, HTTP_STACKS, LiveServer, start_server

ONLY_FROM_10_1_2 = {"IpAddress": {"acs:SourceIp": "10.1.2.0/24"}}
NOT_OVER_TLS = {"Bool": {"acs:SecureTransport": "false"}}


@pytest.fixture(
    scope="module",
    params=[
        (proxy, stack)
        for proxy in ("no proxy trusted", "loopback trusted")
        for stack in sorted(HTTP_STACKS)
    ],
    ids=lambda param: "-".join(param).replace(" ", "-"),
)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, bool]]:
    """Each HTTP stack gives the app the connection's own address and scheme."""
    proxy, stack = request.param
    trusted = proxy == "loopback trusted"
    data_dir = tmp_path_factory.mktemp("forwarded")
    ARTIFACT_DIRS.append(data_dir)
    env = {
        **GENEROUS_RATE,
        **HTTP_STACKS[stack],
        "RKVSTORE_TRUSTED_PROXIES": "127.0.0.1" if trusted else "",
    }
    live = start_server(data_dir, extra_env=env)
    try:
        yield live, trusted
    finally:
        live.stop()


def call(user: Principal, headers: dict[str, str]) -> httpx.Response:
    http = httpx.Client(timeout=30, headers=headers)  # sent beside the signed headers
    with RpcClient(
        user.endpoint, user.access_key_id, Secret(user.access_key_secret), http=http
    ) as client:
        return client.request("DescribeRegions")


def assert_denied(response: httpx.Response) -> None:
    body = response.json()
    assert (body["Code"], response.status_code, body["Message"]) == FORBIDDEN_RAM


def test_an_address_condition_reads_the_connection_not_a_header(
    server: tuple[LiveServer, bool],
) -> None:
    live, trusted = server
    root = root_of(live)
    account_id = discover_account_id(root)
    user = make_user(
        root,
        account_id,
        documents=[document(statement("kvstore:DescribeRegions", condition=ONLY_FROM_10_1_2))],
    )
    assert_denied(call(user, {}))
    forged = call(user, {"X-Forwarded-For": "10.1.2.3"})
    if trusted:  # the operator said 127.0.0.1 is a proxy: its header is the client's address
        assert forged.status_code == 200, forged.text
    else:
        assert_denied(forged)


def test_a_deny_unless_tls_is_not_lifted_by_a_header(server: tuple[LiveServer, bool]) -> None:
    live, trusted = server
    root = root_of(live)
    account_id = discover_account_id(root)
    user = make_user(
        root,
        account_id,
        documents=[
            document(
                statement("kvstore:DescribeRegions"),
                statement("kvstore:*", effect="Deny", condition=NOT_OVER_TLS),
            )
        ],
    )
    assert_denied(call(user, {}))
    forged = call(user, {"X-Forwarded-Proto": "https"})
    if trusted:
        assert forged.status_code == 200, forged.text
    else:
        assert_denied(forged)


def test_the_readme_says_how_to_trust_a_proxy() -> None:
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "`RKVSTORE_TRUSTED_PROXIES`" in text
    assert "Forwarded headers (`X-Forwarded-For`, `X-Forwarded-Proto`)\nare ignored" in text
