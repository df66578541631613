"""The audit trail (issue 14) through the official ActionTrail SDK, and ``rkvstore audit``.

One server for the module, one MASTER_SLAVE instance. The last test kills the
server at a crash point and leaves a new one in the holder.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from alibabacloud_actiontrail20200706 import models as trail_models
from alibabacloud_actiontrail20200706.client import Client as TrailClient
from alibabacloud_r_kvstore20150101 import models as kv_models
from alibabacloud_tea_openapi.exceptions import ClientException, ServerException
from alibabacloud_tea_openapi.models import Config
from sqlalchemy import select

from rkvstore.faults import VARIABLE as CRASH_VARIABLE
from rkvstore.store.db import make_engine
from tests.api.instances import MASTER_SLAVE, create_instance, new_password, rpc_client
from tests.api.ram_helpers import (
    Principal,
    create_account,
    create_tenant,
    discover_account_id,
    document,
    expect_error,
    make_user,
    reset,
    root_of,
    run_cli,
    statement,
)
from tests.api.sdk_clients import REGION
from tests.conftest import ARTIFACT_DIRS, USED_SECRETS, LiveServer, remember_secret, start_server
from tests.integration.test_resilience import kill_strays, restart, stop_server

ENV = {"RKVSTORE_RATE_LIMIT_PER_SECOND": "0", "RKVSTORE_STOP_NODES_ON_EXIT": "false"}
FORBIDDEN = (
    "Forbidden.RAM",
    "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
)
UNAVAILABLE = (
    "ServiceUnavailable",
    "The request has failed due to a temporary failure of the server.",
)
ACCOUNT_TYPE = "ACS::Redis::Account"


@dataclass
class Trail:
    server: LiveServer
    instance_id: str
    account_id: str
    user: Principal  # a RAM user allowed kvstore:* but denied ResetAccountPassword


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    path = tmp_path_factory.mktemp("audit")
    ARTIFACT_DIRS.append(path)
    holder = Trail(start_server(path, extra_env=ENV), "", "", Principal("", "", ""))
    try:
        with rpc_client(holder.server) as client:
            holder.instance_id, _ = create_instance(
                client, MASTER_SLAVE, password=new_password("Def_1")
            )
        root = root_of(holder.server)
        holder.account_id = discover_account_id(root)
        denied = document(
            statement("kvstore:*"),
            statement("kvstore:ResetAccountPassword", effect="Deny"),
        )
        holder.user = make_user(root, holder.account_id, documents=[denied])
        yield holder
    finally:
        stop_server(holder.server, delete_instances=True)
        kill_strays(path)


def trail_client(server: LiveServer, key: tuple[str, str] | None = None) -> TrailClient:
    key_id, secret = key or (server.access_key_id, server.access_key_secret)
    return TrailClient(
        Config(
            access_key_id=key_id,
            access_key_secret=secret,
            endpoint=server.endpoint,
            protocol="http",
            region_id=REGION,
        )
    )


def lookup(
    client: TrailClient, *attributes: tuple[str, str], **fields: Any
) -> trail_models.LookupEventsResponseBody:
    request = trail_models.LookupEventsRequest(
        lookup_attribute=[
            trail_models.LookupEventsRequestLookupAttribute(key=k, value=v) for k, v in attributes
        ],
        **fields,
    )
    return client.lookup_events(request).body


def utc(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary(event: dict[str, Any]) -> tuple[str, str, str, str, str]:
    who = event["userIdentity"]
    return (
        event["eventName"],
        who["type"],
        who["userName"],
        event["errorCode"],
        event["resourceName"],
    )


@pytest.fixture(scope="module")
def four(trail: Trail) -> tuple[str, list[dict[str, Any]]]:
    """Create, reset, a denied reset and delete of one account: (its resource name, the events)."""
    kv = root_of(trail.server).kv()
    name = "aud" + os.urandom(3).hex()
    create_account(kv, trail.instance_id, name, remember_secret(new_password()))
    reset(kv, trail.instance_id, name, remember_secret(new_password()))
    with pytest.raises(ClientException) as info:
        reset(trail.user.kv(), trail.instance_id, name, remember_secret(new_password()))
    assert (info.value.code, info.value.data["Message"]) == FORBIDDEN
    kv.delete_account(
        kv_models.DeleteAccountRequest(instance_id=trail.instance_id, account_name=name)
    )
    resource = f"{trail.instance_id}/{name}"
    body = lookup(trail_client(trail.server), ("ResourceName", resource))
    return resource, list(body.events)


def test_the_four_calls_are_recorded_with_principals_results_and_resources(
    trail: Trail, four: tuple[str, list[dict[str, Any]]]
) -> None:
    resource, events = four
    user = trail.user.user_name
    assert [summary(e) for e in events] == [  # newest first
        ("DeleteAccount", "root-account", "root", "", resource),
        ("ResetAccountPassword", "ram-user", user, FORBIDDEN[0], resource),
        ("ResetAccountPassword", "root-account", "root", "", resource),
        ("CreateAccount", "root-account", "root", "", resource),
    ]
    denied = events[1]
    assert denied["errorMessage"] == FORBIDDEN[1]
    assert denied["userIdentity"]["accessKeyId"] == trail.user.access_key_id
    for event in events:
        assert event["serviceName"] == "R-kvstore"
        assert event["resourceType"] == ACCOUNT_TYPE
        assert event["userIdentity"]["accountId"] == trail.account_id
        assert event["sourceIpAddress"] == "127.0.0.1"
        assert event["apiVersion"] == "2015-01-01"
        assert event["eventRW"] == "Write"
        assert len(event["requestId"]) == 36
    assert events[0]["userIdentity"]["accessKeyId"] == trail.server.access_key_id


def test_pages_follow_next_token(trail: Trail, four: tuple[str, list[dict[str, Any]]]) -> None:
    resource, events = four
    client = trail_client(trail.server)
    seen: list[str] = []
    token = None
    for _ in range(10):  # bounded: 4 pages and a last one without a token
        body = lookup(client, ("ResourceName", resource), max_results="1", next_token=token)
        seen += [e["eventId"] for e in body.events]
        token = body.next_token
        if not token:
            break
    assert seen == [e["eventId"] for e in events]
    body = lookup(client, ("ResourceName", resource), max_results="3", direction="FORWARD")
    assert [e["eventId"] for e in body.events] == [e["eventId"] for e in reversed(events)][:3]
    assert body.next_token


def test_every_attribute_filters(trail: Trail, four: tuple[str, list[dict[str, Any]]]) -> None:
    resource, events = four
    client = trail_client(trail.server)
    on = ("ResourceName", resource)

    def ids(*attributes: tuple[str, str], **fields: Any) -> list[str]:
        return [e["eventId"] for e in lookup(client, on, *attributes, **fields).events]

    every = [e["eventId"] for e in events]
    assert ids(("EventName", "ResetAccountPassword")) == every[1:3]
    assert ids(("UserName", str(trail.user.user_name))) == [every[1]]
    assert ids(("EventAccessKeyId", trail.user.access_key_id)) == [every[1]]
    assert ids(("ServiceName", "R-kvstore")) == every
    assert ids(("ServiceName", "Ram")) == []
    assert ids(("ResourceType", ACCOUNT_TYPE)) == every
    assert ids(("ResourceType", "ACS::Redis::DBInstance")) == []
    # The time window: the events' own second, or a day before it.
    first = datetime.strptime(events[-1]["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    start = first.timestamp()
    assert ids(start_time=utc(start), end_time=utc(time.time() + 1)) == every
    assert ids(start_time=utc(start - 86400), end_time=utc(start - 1)) == []
    # The instance's own events name the instance (its creation among them, however many
    # DescribeInstanceAttribute polls came after it: a page holds only the newest).
    instance_events = lookup(client, ("ResourceName", trail.instance_id)).events
    assert {e["resourceType"] for e in instance_events} == {"ACS::Redis::DBInstance"}
    created = lookup(
        client, ("ResourceName", trail.instance_id), ("EventName", "CreateInstance")
    ).events
    assert [(e["eventName"], e["resourceType"]) for e in created] == [
        ("CreateInstance", "ACS::Redis::DBInstance")
    ]


@pytest.mark.parametrize(
    ("fields", "attributes", "error"),
    [
        ({"start_time": "yesterday"}, (), "StartTime"),
        ({"end_time": "2026-13-01T00:00:00Z"}, (), "EndTime"),
        ({"end_time": "0001-01-02T00:00:00Z"}, (), "EndTime"),
        ({"start_time": "1969-12-31T23:59:59Z"}, (), "StartTime"),
        ({"start_time": "2026-01-02T00:00:00Z", "end_time": "2026-01-01T00:00:00Z"}, (), "Range"),
        ({}, (("Password", "x"),), "Attribute"),
        ({"next_token": "bm90IGEgdG9rZW4"}, (), "Token"),
        ({"max_results": "51"}, (), "Max"),
    ],
)
def test_refusals(
    trail: Trail, fields: dict[str, Any], attributes: tuple[tuple[str, str], ...], error: str
) -> None:
    expected = {
        "StartTime": (
            "InvalidParameter.StartTime",
            400,
            "The StartTime is not a UTC time in the format YYYY-MM-DDThh:mm:ssZ.",
        ),
        "EndTime": (
            "InvalidParameter.EndTime",
            400,
            "The EndTime is not a UTC time in the format YYYY-MM-DDThh:mm:ssZ.",
        ),
        "Range": ("InvalidParameter.TimeRange", 400, "The StartTime is later than the EndTime."),
        "Attribute": (
            "InvalidParameter.LookupAttribute",
            400,
            "A LookupAttribute needs a Key and a Value, and its Key must be one of EventName, "
            "ResourceName, UserName, EventAccessKeyId, ServiceName, ResourceType, EventRW, "
            "EventId.",
        ),
        "Token": (
            "InvalidParameter.NextToken",
            400,
            "The NextToken is not valid: pass the one the last page answered, with the same "
            "parameters.",
        ),
        "Max": ("InvalidParameter", 400, 'The specified parameter "MaxResults" is not valid.'),
    }[error]
    client = trail_client(trail.server)
    expect_error(lambda: lookup(client, *attributes, **fields), expected)


def test_another_tenant_sees_none(trail: Trail, four: tuple[str, list[dict[str, Any]]]) -> None:
    resource, events = four
    other = create_tenant(trail.server)
    client = trail_client(trail.server, (other.access_key_id, other.access_key_secret))
    assert lookup(client, ("ResourceName", resource)).events == []
    mine = lookup(client, max_results="50").events
    assert {e["userIdentity"]["accountId"] for e in mine} <= {other.account_id}
    # A RAM user needs actiontrail:LookupEvents (the Deny-reset user has kvstore:* only).
    denied = trail_client(trail.server, (trail.user.access_key_id, trail.user.access_key_secret))
    with pytest.raises(ClientException) as info:
        lookup(denied)
    assert (info.value.code, info.value.data["Message"]) == FORBIDDEN
    # With ActionTrail's read-only system policy it reads its own tenant's trail.
    reader = make_user(
        root_of(trail.server), trail.account_id, system=["AliyunActionTrailReadOnlyAccess"]
    )
    reading = trail_client(trail.server, (reader.access_key_id, reader.access_key_secret))
    assert [e["eventId"] for e in lookup(reading, ("ResourceName", resource)).events] == [
        e["eventId"] for e in events
    ]


def test_a_rolled_back_reset_is_recorded_as_failed(trail: Trail) -> None:
    kv = root_of(trail.server).kv()
    name = "rb" + os.urandom(3).hex()
    create_account(kv, trail.instance_id, name, remember_secret(new_password()))
    nodes = sorted((trail.server.data_dir / "nodes" / trail.instance_id).glob("*/redis.pid"))
    replica = int(nodes[-1].read_text().strip())
    os.kill(replica, signal.SIGSTOP)
    try:
        with pytest.raises(ServerException) as info:
            reset(kv, trail.instance_id, name, remember_secret(new_password()))
    finally:
        os.kill(replica, signal.SIGCONT)
    assert (info.value.code, info.value.data["Message"]) == UNAVAILABLE
    events = lookup(
        trail_client(trail.server),
        ("ResourceName", f"{trail.instance_id}/{name}"),
        ("EventName", "ResetAccountPassword"),
    ).events
    assert [(e["errorCode"], e["errorMessage"]) for e in events] == [UNAVAILABLE]


def test_the_cli_prints_json_lines_and_a_table(
    trail: Trail, four: tuple[str, list[dict[str, Any]]]
) -> None:
    resource, events = four
    env = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": trail.server.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": trail.server.access_key_secret,
        "RKVSTORE_ENDPOINT": f"http://{trail.server.endpoint}",
    }
    done = run_cli("audit", "--json", "--resource", resource, env=env)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines == events
    done = run_cli("audit", "--resource", resource, "--event-name", "DeleteAccount", env=env)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["TIME", "EVENT", "SERVICE"]
    assert f"DeleteAccount  R-kvstore  root-account:root  {trail.server.access_key_id}" in row
    assert row.endswith(f"{ACCOUNT_TYPE}:{resource}  Success")
    done = run_cli("audit", "--start", "now", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "LookupEvents: InvalidParameter.StartTime: "
        "The StartTime is not a UTC time in the format YYYY-MM-DDThh:mm:ssZ."
    )


def test_no_secret_is_in_the_events_table(trail: Trail, four: Any) -> None:
    engine = make_engine(f"sqlite:///{trail.server.data_dir / 'rkvstore.db'}")
    try:
        with engine.connect() as conn:
            from rkvstore.store.tables import audit_events

            rows = conn.execute(select(audit_events)).all()
    finally:
        engine.dispose()
    assert len(rows) > 10
    text = "\n".join(str(tuple(r)) for r in rows)
    assert [s[:3] for s in USED_SECRETS if s in text] == []


@pytest.mark.slow
def test_kill_9_between_the_nodes_and_the_record_leaves_no_success_event(
    trail: Trail,
) -> None:
    kv = root_of(trail.server).kv()
    name = "k9" + os.urandom(3).hex()
    create_account(kv, trail.instance_id, name, remember_secret(new_password()))
    trail.server.stop()
    crashing = restart(trail.server, {**ENV, CRASH_VARIABLE: "nodes-changed"})
    trail.server = crashing
    with pytest.raises(Exception):  # noqa: B017  (the connection dies with the process)
        reset(root_of(crashing).kv(), trail.instance_id, name, remember_secret(new_password()))
    assert crashing.process.wait(timeout=10) == -signal.SIGKILL
    trail.server = restart(crashing, ENV)
    events = lookup(
        trail_client(trail.server),
        ("ResourceName", f"{trail.instance_id}/{name}"),
    ).events
    assert [(e["eventName"], e["errorCode"]) for e in events] == [("CreateAccount", "")]
    # The trail goes on: a reset now is recorded.
    reset(root_of(trail.server).kv(), trail.instance_id, name, remember_secret(new_password()))
    events = lookup(trail_client(trail.server), ("ResourceName", f"{trail.instance_id}/{name}"))
    assert [e["eventName"] for e in events.events] == ["ResetAccountPassword", "CreateAccount"]
