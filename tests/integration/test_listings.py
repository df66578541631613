"""Listings in SQL (issue 10) answer exactly as the listings in Python did, on both engines.

A database of 1,000 instances (and accounts, RAM users, groups, policies,
attachments, keys) is seeded once per engine through the store
(``listings_seed``). Every answer of the new DescribeInstances, DescribeAccounts
and RAM List actions is compared in full with the answer of the code before
(``listings_before``, copied from it) on the same data, for the root and for RAM
users whose policies allow everything, deny one instance, allow prefixes,
patterns with ``*`` and ``?`` in the middle, NotResource, conditions, and
patterns SQL cannot carry (evaluated id by id). The actions are called as the
dispatcher calls them: parameters parsed by the action's spec, then the handler.

The PostgreSQL database is created with an ICU ``en-US`` collation, whose order
is not the code-point order Python sorts by: a listing that forgot to say
``COLLATE "C"`` answers differently there.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select, text, update

from rkvstore.client import RpcClient
from rkvstore.config import Settings
from rkvstore.crypto import SecretBox
from rkvstore.errors import ApiError
from rkvstore.iam import visibility
from rkvstore.iam.attached_policies import GROUP, USER
from rkvstore.iam.credentials import AccessKey
from rkvstore.iam.visibility import caller_rules, id_condition
from rkvstore.products import build_registry
from rkvstore.secret import Secret
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.params import parse_params
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import instances, ram_groups, tenants
from tests.conftest import (
    ARTIFACT_DIRS,
    PG_ADMIN_URL,
    PG_AVAILABLE,
    LiveServer,
    fresh_pg_database,
    remember_secret,
    start_server,
)
from tests.integration import listings_before as before
from tests.integration.listings_seed import (
    CHARGES,
    ENGINES,
    NODE_TYPES,
    REGION,
    SPECIAL_IDS,
    STATUSES,
    ZONES,
    Seeded,
    seed,
)

SPECS = {spec.name: spec for spec in build_registry()}
SEARCH_KEYS = ("%", "_", "a%b", "a_b", "ABC", "abc", "shop", "Shop", "\u00e9", "[1]", "r-", "zz")
SEARCH_KEYS += ("nothing-like-it", " ", "LOG_100%", "100%", "cache_1", "cache%1")


class _Reconciler:
    """What DescribeAccounts asks of the reconciler: is this account in line?"""

    def __init__(self, out_of_line: set[str], dirty: dict[str, set[str]]) -> None:
        self.out_of_line = out_of_line
        self.dirty = dirty
        self._asked = ""  # the instance whose flags were taken last

    def in_line(self, instance_id: str, account: str | None = None) -> bool:
        if instance_id in self.out_of_line:
            return False
        flagged = self.dirty.get(instance_id)
        return not flagged or (account is not None and account not in flagged)

    def unwritten(self, instance_id: str) -> set[str]:
        """The flags of ``instance_id`` (taken before the read, as the reconciler's are)."""
        self._asked = instance_id
        return set(self.dirty.get(instance_id, ()))

    def line_as_read(
        self, flagged: set[str], _dirty: str | None, _unreachable: str | None
    ) -> tuple[str | None, str | None]:
        """The same state as ``reconcile.in_line_from`` reads it (the seeded
        database has no reconcile rows: what was read is ignored)."""
        unreachable = "node" if self._asked in self.out_of_line else None
        return " ".join(sorted(flagged)) or None, unreachable


@dataclass
class _Deps:
    settings: Settings
    engine: Any
    reconciler: _Reconciler

    @property
    def single(self) -> Any:
        return self.engine


@contextlib.contextmanager
def _pg_database_not_in_code_point_order() -> Iterator[str]:
    name = f"rkv_listings_{secrets.token_hex(6)}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text(
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        )
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class World:
    seeded: Seeded
    deps: Deps
    root: AccessKey

    def ctx(self, caller: AccessKey | None = None, *, secure: bool = False) -> CallContext:
        return CallContext(
            "req-listings", caller or self.root, "127.0.0.1", secure, self.deps, time.time()
        )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('listings') / 'rkvstore.db'}"
        else:
            if not PG_AVAILABLE:
                pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
            url = stack.enter_context(_pg_database_not_in_code_point_order())
        engine = make_engine(url)
        stack.callback(engine.dispose)
        migrate(engine)
        seeded = seed(engine, SecretBox(Fernet.generate_key()))
        ids = seeded.account_instances
        reconciler = _Reconciler({ids[4]}, {ids[0]: {"acct002", "b_3"}})
        settings = Settings(region=REGION, data_dir=tmp_path_factory.mktemp("unused"))
        deps = cast(Deps, _Deps(settings, engine, reconciler))
        root = AccessKey("LTAIroot", seeded.account_id, None, cast(Any, None), "Active")
        yield World(seeded, deps, root)


def _call(
    world: World, action: str, values: dict[str, str], caller: AccessKey | None = None
) -> Any:
    spec = SPECS[action]
    params = parse_params(spec.params, values)
    ctx = world.ctx(caller)
    return spec.handler(ctx, params), ctx, params


def _outcome(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ApiError as exc:
        return ("error", exc.code, exc.message)


# --------------------------------------------------------------------------- DescribeInstances


def _instance_queries(world: World) -> list[dict[str, str]]:
    ids = world.seeded.instance_ids
    queries: list[dict[str, str]] = [{}]
    for size in ("30", "100", "1", "7"):
        total = len(ids)
        last = math.ceil(total / int(size))
        # Pages nearer the end are read from the end: 7 of 10 pages of 100, the last ones.
        for page in {"1", "2", "7", "17", str(last - 1), str(last), str(last + 1), "1000000000"}:
            queries.append({"PageNumber": page, "PageSize": size})
    for key, values in (
        ("InstanceStatus", (*sorted(set(STATUSES)), "normal", "Nope")),
        ("ArchitectureType", ("standard", "cluster", "Standard")),
        ("EngineVersion", (*ENGINES, "7")),
        ("NodeType", (*NODE_TYPES, "single")),
        ("ZoneId", (*ZONES, "cn-beijing-a")),
        ("ChargeType", CHARGES),
        ("SearchKey", SEARCH_KEYS),
    ):
        for value in values:
            queries.append({key: value})
            queries.append({key: value, "PageNumber": "2", "PageSize": "10"})
    other = world.seeded.other_instance_ids[0]
    for instance_ids in (
        ids[500],
        f"{ids[9]},{ids[1]},{ids[700]}",
        f" {ids[9]} , ,{ids[9]},r-unknown0000000000,{other}",
        "r-unknown0000000000",
        ",",
        ",".join(ids[:150]),
        ",".join(SPECIAL_IDS),
    ):
        queries.append({"InstanceIds": instance_ids})
        queries.append({"InstanceIds": instance_ids, "PageSize": "3", "PageNumber": "2"})
    queries += [
        {"InstanceStatus": "Normal", "ZoneId": ZONES[0], "PageSize": "50", "PageNumber": "3"},
        {"NodeType": "MASTER_SLAVE", "EngineVersion": "7.0", "SearchKey": "a"},
        {"InstanceIds": ",".join(ids[:180]), "InstanceStatus": "Creating", "PageSize": "5"},
        {
            "ArchitectureType": "cluster",
            "ChargeType": "PrePaid",
            "SearchKey": "-",
            "PageNumber": "2",
        },
        {"SearchKey": "r-a", "InstanceStatus": "Normal", "ZoneId": ZONES[1]},
    ]
    return queries


def test_describe_instances_as_root_answers_as_before(world: World) -> None:
    compared = 0
    for values in _instance_queries(world):
        new, ctx, params = _call(world, "DescribeInstances", values)
        assert new == before.describe_instances(ctx, params), values
        compared += 1
    assert compared > 100


def test_the_seeded_data_is_what_the_comparison_needs(world: World) -> None:
    """The answers compared above are not all empty, nor all the same."""
    full, _, _ = _call(world, "DescribeInstances", {"PageSize": "100"})
    assert full["TotalCount"] == 1000
    shown = full["Instances"]["KVStoreInstance"]
    assert len(shown) == 100
    assert {i["NodeCount"] for i in shown} >= {0, 1, 2, 4}
    creation = [i["CreateTime"] for i in shown]
    assert len(set(creation)) < len(creation), "no instances created at the same moment"
    with world.deps.engine.connect() as conn:
        other = conn.execute(
            select(instances.c.account_id).where(
                instances.c.instance_id == world.seeded.other_instance_ids[0]
            )
        ).scalar_one()
        assert other != world.seeded.account_id
        assert conn.execute(select(tenants.c.account_id)).all()
    hits = {
        key: {
            i["InstanceId"]
            for i in _call(world, "DescribeInstances", {"SearchKey": key, "PageSize": "100"})[0][
                "Instances"
            ]["KVStoreInstance"]
        }
        for key in ("%", "_", "ABC", "abc", "a%b")
    }
    assert all(hits.values()), hits
    assert hits["ABC"] == {"r-ABCdef000000000001"}, "SearchKey is case-sensitive"
    assert hits["abc"] == {"r-abcdef000000000001"}, "SearchKey is case-sensitive"
    assert hits["a%b"] == {"r-a%b_c000000000000"}, "a % in SearchKey is no wildcard"


@pytest.mark.parametrize(
    "role",
    [
        "read-only",
        "deny-one",
        "prefix",
        "middle",
        "not-resource",
        "conditions",
        "elsewhere",
        "action-case",
        "other-action",
        "nothing",
        "exact",
        "many",
        "nul",
    ],
)
def test_describe_instances_as_a_ram_user_answers_as_before(
    world: World, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if role == "many":
        monkeypatch.setattr(visibility, "MAX_PATTERNS", 10)
    caller = world.seeded.callers[role]
    queries = [
        {},
        {"PageSize": "100"},
        {"PageSize": "100", "PageNumber": "2"},
        {"PageSize": "7", "PageNumber": "3"},
        {"PageNumber": "1000"},
        {"SearchKey": "r-a"},
        {"SearchKey": "%"},
        {"InstanceStatus": "Normal", "PageSize": "13", "PageNumber": "2"},
        {"InstanceIds": ",".join(world.seeded.instance_ids[:20])},
        {"InstanceIds": ",".join(SPECIAL_IDS)},
    ]
    totals = set()
    for values in queries:
        new, ctx, params = _call(world, "DescribeInstances", values, caller)
        assert new == before.describe_instances(ctx, params), (role, values)
        totals.add(new["TotalCount"])
    # The last page of everything the caller sees, whatever its size.
    total = _call(world, "DescribeInstances", {}, caller)[0]["TotalCount"]
    for size in (1, 30, 100):
        last = max(1, math.ceil(total / size))
        for page in {last, max(1, last * 7 // 10)}:  # the last, and one read from the end
            values = {"PageSize": str(size), "PageNumber": str(page)}
            new, ctx, params = _call(world, "DescribeInstances", values, caller)
            assert new == before.describe_instances(ctx, params), (role, values)
    expected_empty = {"elsewhere", "other-action", "nothing"}
    if role in expected_empty:
        assert total in (0, 1)
    else:
        assert total > 0, role
    if role == "deny-one":
        assert total == 998  # everything but two instances, one denied directly, one by group


@pytest.mark.parametrize("role", ["many", "nul"])
def test_policies_sql_cannot_hold_are_evaluated_id_by_id(
    world: World, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(visibility, "MAX_PATTERNS", 10)
    caller, other = world.seeded.callers[role], world.seeded.callers["prefix"]
    with world.deps.engine.connect() as conn:
        dialect = conn.dialect.name
        rules = caller_rules(conn, caller, "kvstore:DescribeInstances", {})
        simple = caller_rules(conn, other, "kvstore:DescribeInstances", {})
    prefix = f"acs:kvstore:{REGION}:{world.seeded.account_id}:instance/"
    assert id_condition(rules, prefix, instances.c.instance_id, dialect) is None
    assert id_condition(simple, prefix, instances.c.instance_id, dialect) is not None


# --------------------------------------------------------------------------- DescribeAccounts


def test_describe_accounts_answers_as_before(world: World) -> None:
    queries: list[dict[str, str]] = [{}]
    for size in ("30", "100", "1", "9"):
        for page in ("1", "2", "9", "27", "30", "1000000000"):
            queries.append({"PageSize": size, "PageNumber": page})
    for name in ("acct001", "Acct001", "default", "b_3", "nobody", "\u00e91", "a%b1"):
        queries.append({"AccountName": name})
    for key in ("%", "_", "a%b", "b_", "acct", "Acct", "\u00e9", "1", "E", "e", "zzz"):
        queries.append({"SearchAccountName": key})
        queries.append({"SearchAccountName": key, "PageSize": "5", "PageNumber": "2"})
    queries.append({"SearchAccountName": "acct", "AccountName": "acct001"})
    queries.append({"SearchAccountName": "b", "AccountName": "acct001"})
    compared = 0
    for instance_id in [*world.seeded.account_instances, world.seeded.instance_ids[900]]:
        for values in queries:
            values = {"InstanceId": instance_id, **values}
            spec = SPECS["DescribeAccounts"]
            params = parse_params(spec.params, values)
            ctx = world.ctx()
            new = _outcome(spec.handler, ctx, params)
            assert new == _outcome(before.describe_accounts, ctx, params), values
            compared += 1
    assert compared > 300
    ids = world.seeded.account_instances
    statuses = {}
    for k, name in ((0, "acct001"), (0, "acct002"), (1, "acct001"), (1, "default")):
        values = {"InstanceId": ids[k], "AccountName": name}
        found = _call(world, "DescribeAccounts", values)[0]["Accounts"]["Account"]
        statuses[(k, name)] = found[0]["AccountStatus"]
    assert statuses == {
        (0, "acct001"): "Available",
        (0, "acct002"): "Unavailable",  # flagged by the reconciler
        (1, "acct001"): "Unavailable",  # a task is changing it
        (1, "default"): "Available",
    }
    assert _call(world, "DescribeAccounts", {"InstanceId": ids[0]})[0]["TotalCount"] == 260


def test_describe_accounts_of_an_unknown_or_foreign_instance_is_not_found(world: World) -> None:
    spec = SPECS["DescribeAccounts"]
    for instance_id in ("r-unknown0000000000", world.seeded.other_instance_ids[0]):
        params = parse_params(spec.params, {"InstanceId": instance_id})
        with pytest.raises(ApiError) as caught:
            spec.handler(world.ctx(), params)
        assert (caught.value.code, caught.value.message) == (
            "InvalidInstanceId.NotFound",
            "The specified instance is not found.",
        )


# --------------------------------------------------------------------------- RAM


def _walk(world: World, action: str, values: dict[str, str], old: Any) -> int:
    """Every page, following the markers the new code gives, compared page by page."""
    marker: str | None = values.pop("Marker", None)
    for pages in range(1, 1000):  # bounded: 242 users at one a page at most
        query = {**values, **({"Marker": marker} if marker is not None else {})}
        new, ctx, params = _call(world, action, query)
        assert new == old(ctx, params), query
        if not new["IsTruncated"]:
            return pages
        marker = new["Marker"]
    raise AssertionError("the pages never ended")


def test_list_users_answers_as_before(world: World) -> None:
    assert _walk(world, "ListUsers", {}, before.list_users) == 3  # 242 users, 100 a page
    for size in ("1", "7", "1000"):
        _walk(world, "ListUsers", {"MaxItems": size}, before.list_users)
    users = world.seeded.users
    for marker in (
        "",
        "A",
        "a",
        "Alice",
        "alice",
        "bob",
        "bob-smith",
        "-",
        "_",
        "~",
        "\u00e9",
        users[50],
    ):
        for size in ("1", "10", "100"):
            values = {"Marker": marker, "MaxItems": size}
            new, ctx, params = _call(world, "ListUsers", values)
            assert new == before.list_users(ctx, params), values


def test_list_policies_answers_as_before(world: World) -> None:
    for policy_type in (None, "Custom", "System"):
        base = {} if policy_type is None else {"PolicyType": policy_type}
        for size in ("1", "3", "100", "1000"):
            _walk(world, "ListPolicies", {**base, "MaxItems": size}, before.list_policies)
        for marker in (
            "",
            "A",
            "Custom",
            "Custom:",
            "Custom:a",
            "Custom:Custom",
            "Custom:zzzzzz",
            "Custom;",
            "Cz",
            "Sys",
            "System:",
            "System:AliyunKvstoreFullAccess",
            "System:AliyunKvstoreReadOnlyAccess",
            "Z",
            "\u00e9",
        ):
            for size in ("1", "2", "50"):
                values = {**base, "Marker": marker, "MaxItems": size}
                new, ctx, params = _call(world, "ListPolicies", values)
                assert new == before.list_policies(ctx, params), values
    everything = _call(world, "ListPolicies", {"MaxItems": "1000"})[0]["Policies"]["Policy"]
    assert {p["AttachmentCount"] for p in everything} > {0, 1}


def test_lists_of_one_user_or_group_answer_as_before(world: World) -> None:
    with world.deps.engine.connect() as conn:
        groups = [str(g) for g in conn.execute(select(ram_groups.c.group_name)).scalars()]
    users = [*world.seeded.users, *(c.user_name or "" for c in world.seeded.callers.values())]
    seen_policies = 0
    for user in users:
        new, ctx, _ = _call(world, "ListPoliciesForUser", {"UserName": user})
        assert new == before.list_policies_for(ctx, USER, user), user
        seen_policies += len(new["Policies"]["Policy"])
        new, ctx, _ = _call(world, "ListGroupsForUser", {"UserName": user})
        assert new == before.list_groups_for_user(ctx, user), user
        new, ctx, _ = _call(world, "ListAccessKeys", {"UserName": user})
        assert new == before.list_access_keys(ctx, user), user
    for group in groups:
        new, ctx, _ = _call(world, "ListPoliciesForGroup", {"GroupName": group})
        assert new == before.list_policies_for(ctx, GROUP, group), group
    new, ctx, _ = _call(world, "ListAccessKeys", {})
    assert new == before.list_access_keys(ctx, None)
    assert seen_policies > 100


def test_lists_of_a_missing_user_or_group_say_so(world: World) -> None:
    for action, values, expected in (
        ("ListPoliciesForUser", {"UserName": "nobody"}, "EntityNotExist.User"),
        ("ListGroupsForUser", {"UserName": "nobody"}, "EntityNotExist.User"),
        ("ListPoliciesForGroup", {"GroupName": "nobody"}, "EntityNotExist.Group"),
    ):
        with pytest.raises(ApiError) as caught:
            _call(world, action, values)
        assert caught.value.code == expected
        assert caught.value.message == (
            "The user does not exist." if expected.endswith("User") else "The group does not exist."
        )


# --------------------------------------------------------------------------- signed HTTP


@dataclass
class Served:
    world: World
    server: LiveServer


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """A live server on a seeded database; the same data seen in-process, for the reference."""
    data_dir = tmp_path_factory.mktemp("listings-served")
    ARTIFACT_DIRS.append(data_dir)
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{data_dir / 'rkvstore.db'}"
        else:
            if not PG_AVAILABLE:
                pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
            url = stack.enter_context(fresh_pg_database())
        master_key = Fernet.generate_key()
        engine = make_engine(url)
        stack.callback(engine.dispose)
        migrate(engine)
        seeded = seed(engine, SecretBox(master_key))
        remember_secret(seeded.root_key[1])
        for caller in seeded.callers.values():
            remember_secret(caller.secret.reveal())
        # No node is behind these instances: none local (the server would start its
        # nodes), Normal (the reconciler would visit it) or Creating (to be built).
        with engine.begin() as conn:
            conn.execute(update(instances).values(provider="registered"))
            conn.execute(
                update(instances)
                .where(instances.c.status.in_(("Normal", "Creating")))
                .values(status="Unavailable")
            )
        server = start_server(
            data_dir,
            database_url=url,
            access_key=seeded.root_key,
            extra_env={
                "RKVSTORE_MASTER_KEY": master_key.decode(),
                "RKVSTORE_RATE_LIMIT_PER_SECOND": "2000",
                "RKVSTORE_RATE_LIMIT_BURST": "2000",
            },
        )
        stack.callback(server.stop)
        settings = Settings(region=REGION, data_dir=data_dir)
        deps = cast(Deps, _Deps(settings, engine, _Reconciler(set(), {})))
        root = AccessKey(seeded.root_key[0], seeded.account_id, None, cast(Any, None), "Active")
        yield Served(World(seeded, deps, root), server)


def _signed(served: Served, action: str, values: dict[str, str], caller: AccessKey | None) -> Any:
    key_id, secret = (
        served.server.access_key_id,
        Secret(served.server.access_key_secret),
    )
    if caller is not None:
        key_id, secret = caller.access_key_id, caller.secret
    version = SPECS[action].version
    with RpcClient(served.server.endpoint, key_id, secret, version=version, timeout=30) as client:
        body = client.call(action, values)
    assert body.pop("RequestId")
    return body


def test_signed_calls_answer_as_before(served: Served) -> None:
    world = served.world
    seeded = world.seeded
    last = str(math.ceil(len(seeded.instance_ids) / 30))
    accounts = seeded.account_instances[0]
    calls: list[tuple[str, dict[str, str], AccessKey | None]] = [
        ("DescribeInstances", {}, None),
        ("DescribeInstances", {"PageNumber": last}, None),
        ("DescribeInstances", {"InstanceIds": seeded.instance_ids[42]}, None),
        ("DescribeInstances", {"SearchKey": "a%b", "PageSize": "100"}, None),
        ("DescribeInstances", {"InstanceStatus": "Flushing", "PageNumber": "2"}, None),
        ("DescribeAccounts", {"InstanceId": accounts, "PageNumber": "3"}, None),
        ("DescribeAccounts", {"InstanceId": accounts, "SearchAccountName": "_"}, None),
        ("ListUsers", {"MaxItems": "20", "Marker": "Bob"}, None),
        ("ListPolicies", {"MaxItems": "50", "Marker": "Custom:a"}, None),
    ]
    for role in ("deny-one", "conditions", "not-resource"):
        caller = seeded.callers[role]
        calls += [
            ("DescribeInstances", {"PageSize": "100", "PageNumber": "2"}, caller),
            ("DescribeInstances", {"InstanceIds": ",".join(SPECIAL_IDS)}, caller),
        ]
    for action, values, caller in calls:
        got = _signed(served, action, values, caller)
        params = parse_params(SPECS[action].params, values)
        ctx = world.ctx(caller)
        old = {
            "DescribeInstances": before.describe_instances,
            "DescribeAccounts": before.describe_accounts,
            "ListUsers": before.list_users,
            "ListPolicies": before.list_policies,
        }[action](ctx, params)
        assert got == json.loads(json.dumps(old)), (action, values, caller)
        assert got != {}
