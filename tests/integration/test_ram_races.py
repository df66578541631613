"""RAM under concurrency, on SQLite and PostgreSQL (issue 9, finding 1).

Each test starts the racing calls together (a barrier) on real engines, through
the RAM service functions with the parameters parsed as the API parses them,
and repeats the race a bounded number of rounds. Every answer must be a
success or one of RAM's own codes; an exception that is not an ``ApiError``
(an ``IntegrityError`` that would be a 500) fails the test. After each round
the store must hold no key, attachment or membership of a user that does not
exist, and the per-user and per-policy limits must hold.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, event, func, select

from rkvstore.crypto import SecretBox
from rkvstore.errors import ApiError
from rkvstore.iam.credentials import (
    ACTIVE,
    AccessKey,
    AccessKeyCache,
    create_tenant,
    find_access_key,
)
from rkvstore.products.ram.actions import actions as ram_actions
from rkvstore.services.context import CallContext, Deps
from rkvstore.services.params import parse_params
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import (
    access_keys,
    ram_attachments,
    ram_group_members,
    ram_policy_versions,
    ram_users,
)

ROUNDS = 25  # every race below lost at least once in 25 rounds before the fix
PAUSE_SECONDS = 0.004
SPECS = {spec.name: spec for spec in ram_actions()}
FULL_ACCESS = "AliyunKvstoreFullAccess"
DOCUMENT = json.dumps(
    {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "kvstore:*", "Resource": "*"}]}
)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    code: str  # "" when ok; else RAM's code, or "500:<exception>" for anything else
    body: dict[str, Any]


class Ram:
    """Calls RAM actions as the root of one tenant, as the dispatcher would."""

    def __init__(self, engine: Engine, box: SecretBox, root: AccessKey) -> None:
        self.engine = engine
        self.box = box
        self.deps = cast(Deps, _Deps(engine, box))
        self.root = root
        self.names = itertools.count()

    @property
    def account_id(self) -> str:
        return self.root.account_id

    def name(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def call(self, action: str, **values: str) -> Outcome:
        spec = SPECS[action]
        ctx = CallContext("req", self.root, "127.0.0.1", False, self.deps, time.time())
        try:
            body = spec.handler(ctx, parse_params(spec.params, values))
        except ApiError as exc:
            return Outcome(False, exc.code, {})
        except Exception as exc:  # what the client would see as a 500 (or a 503)
            return Outcome(False, f"500:{type(exc).__name__}", {})
        return Outcome(True, "", body)

    def must(self, action: str, **values: str) -> dict[str, Any]:
        outcome = self.call(action, **values)
        assert outcome.ok, (action, outcome.code)
        return outcome.body


@dataclass
class _Deps:
    engine: Engine
    box: SecretBox
    access_keys: AccessKeyCache = field(default_factory=AccessKeyCache)

    @property
    def single(self) -> Engine:
        return self.engine


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate(eng)
    # Every statement takes a little longer, by a random amount, as over a network:
    # the racing calls then interleave between their statements, in ever other orders.
    event.listen(
        eng, "before_cursor_execute", lambda *_: time.sleep(random.uniform(0, PAUSE_SECONDS))
    )
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def ram(engine: Engine) -> Ram:
    box = SecretBox(Fernet.generate_key())
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "acme")
    root = AccessKey(
        tenant.access_key_id, tenant.account_id, None, tenant.access_key_secret, ACTIVE
    )
    return Ram(engine, box, root)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=8) as executor:
        yield executor


def race(pool: ThreadPoolExecutor, *calls: Callable[[], Outcome]) -> list[Outcome]:
    """Run ``calls`` at once (released together by a barrier); their outcomes, in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Outcome]) -> Outcome:
        barrier.wait()
        return call()

    return [f.result(timeout=60) for f in [pool.submit(run, c) for c in calls]]


def no_500(outcomes: list[Outcome]) -> None:
    crashed = [o.code for o in outcomes if o.code.startswith("500")]
    assert not crashed, f"a race reached the client as an internal error: {crashed}"


# --------------------------------------------------------------------------- what the store holds


def _count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def user_exists(ram: Ram, name: str) -> bool:
    return bool(
        _count(
            ram.engine,
            ram_users,
            ram_users.c.account_id == ram.account_id,
            ram_users.c.user_name == name,
        )
    )


def keys_of(ram: Ram, name: str) -> int:
    return _count(
        ram.engine,
        access_keys,
        access_keys.c.account_id == ram.account_id,
        access_keys.c.user_name == name,
    )


def attachments_of(ram: Ram, principal_type: str, name: str) -> int:
    return _count(
        ram.engine,
        ram_attachments,
        ram_attachments.c.account_id == ram.account_id,
        ram_attachments.c.principal_type == principal_type,
        ram_attachments.c.principal_name == name,
    )


def memberships_of(ram: Ram, name: str) -> int:
    return _count(
        ram.engine,
        ram_group_members,
        ram_group_members.c.account_id == ram.account_id,
        ram_group_members.c.user_name == name,
    )


def authenticates(ram: Ram, key_id: str) -> bool:
    """What the dispatcher's authentication finds for ``key_id`` (before the signature)."""
    with ram.engine.connect() as conn:
        key = find_access_key(conn, ram.box, key_id)
    return key is not None and key.status == ACTIVE


# --------------------------------------------------------------------------- deletes against adds


def test_delete_user_racing_create_access_key_leaves_no_key(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        deleted, created = race(
            pool,
            partial(ram.call, "DeleteUser", UserName=user),
            partial(ram.call, "CreateAccessKey", UserName=user),
        )
        no_500([deleted, created])
        if deleted.ok:
            assert created.code == "EntityNotExist.User", created.code
            assert keys_of(ram, user) == 0
        else:
            assert deleted.code == "DeleteConflict.User.AccessKey", deleted
            assert created.ok and keys_of(ram, user) == 1
        if created.ok:
            key_id = created.body["AccessKey"]["AccessKeyId"]
            assert authenticates(ram, key_id) == user_exists(ram, user), (
                "a deleted user's key still authenticates"
            )


def test_delete_user_racing_attach_policy_leaves_nothing_to_inherit(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        deleted, attached = race(
            pool,
            partial(ram.call, "DeleteUser", UserName=user),
            partial(
                ram.call,
                "AttachPolicyToUser",
                PolicyType="System",
                PolicyName=FULL_ACCESS,
                UserName=user,
            ),
        )
        no_500([deleted, attached])
        if deleted.ok:
            assert attached.code == "EntityNotExist.User", attached
            assert attachments_of(ram, "User", user) == 0
            # A new user of the same name starts with nothing.
            ram.must("CreateUser", UserName=user)
            listed = ram.must("ListPoliciesForUser", UserName=user)
            assert listed["Policies"]["Policy"] == [], "the new user inherited a policy"
        else:
            assert deleted.code == "DeleteConflict.User.Policy", deleted
            assert attached.ok


def test_delete_user_racing_add_to_group_leaves_no_membership(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    group = ram.name("g")
    ram.must("CreateGroup", GroupName=group)
    ram.must("AttachPolicyToGroup", PolicyType="System", PolicyName=FULL_ACCESS, GroupName=group)
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        deleted, joined = race(
            pool,
            partial(ram.call, "DeleteUser", UserName=user),
            partial(ram.call, "AddUserToGroup", GroupName=group, UserName=user),
        )
        no_500([deleted, joined])
        if deleted.ok:
            assert joined.code == "EntityNotExist.User", joined
            assert memberships_of(ram, user) == 0
            ram.must("CreateUser", UserName=user)
            listed = ram.must("ListGroupsForUser", UserName=user)
            assert listed["Groups"]["Group"] == [], "the new user inherited a group"
        else:
            assert deleted.code == "DeleteConflict.User.Group", deleted
            assert joined.ok


def test_rename_racing_create_access_key_leaves_no_orphan(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    for _ in range(ROUNDS):
        old, new = ram.name("u"), ram.name("renamed")
        ram.must("CreateUser", UserName=old)
        renamed, created = race(
            pool,
            partial(ram.call, "UpdateUser", UserName=old, NewUserName=new),
            partial(ram.call, "CreateAccessKey", UserName=old),
        )
        no_500([renamed, created])
        assert renamed.ok
        assert keys_of(ram, old) == 0, "a key was left under the old name"
        if created.ok:
            assert keys_of(ram, new) == 1  # created first, then renamed with its user
            assert authenticates(ram, created.body["AccessKey"]["AccessKeyId"])
        else:
            assert created.code == "EntityNotExist.User", created.code


def test_rename_racing_create_user_of_the_new_name(ram: Ram, pool: ThreadPoolExecutor) -> None:
    for _ in range(ROUNDS):
        old, new = ram.name("u"), ram.name("taken")
        ram.must("CreateUser", UserName=old)
        renamed, created = race(
            pool,
            partial(ram.call, "UpdateUser", UserName=old, NewUserName=new),
            partial(ram.call, "CreateUser", UserName=new),
        )
        no_500([renamed, created])
        assert sorted([renamed.code, created.code]) == ["", "EntityAlreadyExists.User"]


def test_delete_policy_racing_attach_leaves_nothing_for_a_new_policy_of_that_name(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    user = ram.name("u")
    ram.must("CreateUser", UserName=user)
    for _ in range(ROUNDS):
        policy = ram.name("p")
        ram.must("CreatePolicy", PolicyName=policy, PolicyDocument=DOCUMENT)
        deleted, attached = race(
            pool,
            partial(ram.call, "DeletePolicy", PolicyName=policy),
            partial(
                ram.call,
                "AttachPolicyToUser",
                PolicyType="Custom",
                PolicyName=policy,
                UserName=user,
            ),
        )
        no_500([deleted, attached])
        if deleted.ok:
            assert attached.code == "EntityNotExist.Policy", attached
            left = _count(
                ram.engine,
                ram_attachments,
                ram_attachments.c.account_id == ram.account_id,
                ram_attachments.c.policy_name == policy,
            )
            assert left == 0, "an attachment outlived its policy"
        else:
            assert deleted.code == "DeleteConflict.Policy.User", deleted
            assert attached.ok
            ram.must("DetachPolicyFromUser", PolicyType="Custom", PolicyName=policy, UserName=user)


# --------------------------------------------------------------------------- duplicates


def _duplicates(
    pool: ThreadPoolExecutor, call: Callable[[], Outcome], conflict: str, copies: int = 4
) -> None:
    outcomes = race(pool, *[call] * copies)
    no_500(outcomes)
    assert Counter(o.code for o in outcomes) == {"": 1, conflict: copies - 1}


def test_concurrent_duplicate_attach_policy_to_user(ram: Ram, pool: ThreadPoolExecutor) -> None:
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        _duplicates(
            pool,
            partial(
                ram.call,
                "AttachPolicyToUser",
                PolicyType="System",
                PolicyName=FULL_ACCESS,
                UserName=user,
            ),
            "EntityAlreadyExists.User.Policy",
        )
        assert attachments_of(ram, "User", user) == 1


def test_concurrent_duplicate_attach_policy_to_group(ram: Ram, pool: ThreadPoolExecutor) -> None:
    for _ in range(ROUNDS):
        group = ram.name("g")
        ram.must("CreateGroup", GroupName=group)
        _duplicates(
            pool,
            partial(
                ram.call,
                "AttachPolicyToGroup",
                PolicyType="System",
                PolicyName=FULL_ACCESS,
                GroupName=group,
            ),
            "EntityAlreadyExists.Group.Policy",
        )
        assert attachments_of(ram, "Group", group) == 1


def test_concurrent_duplicate_add_user_to_group(ram: Ram, pool: ThreadPoolExecutor) -> None:
    group = ram.name("g")
    ram.must("CreateGroup", GroupName=group)
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        _duplicates(
            pool,
            partial(ram.call, "AddUserToGroup", GroupName=group, UserName=user),
            "EntityAlreadyExists.User.Group",
        )
        assert memberships_of(ram, user) == 1


# --------------------------------------------------------------------------- limits hold


def test_access_key_limit_holds_under_concurrency(ram: Ram, pool: ThreadPoolExecutor) -> None:
    for _ in range(ROUNDS):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        outcomes = race(pool, *[partial(ram.call, "CreateAccessKey", UserName=user)] * 5)
        no_500(outcomes)
        assert Counter(o.code for o in outcomes) == {"": 2, "LimitExceeded.User.AccessKey": 3}
        assert keys_of(ram, user) == 2


def test_root_access_key_limit_holds_under_concurrency(ram: Ram, pool: ThreadPoolExecutor) -> None:
    # The root starts with one key; one more may be created, however many ask at once.
    for _ in range(ROUNDS // 5):
        outcomes = race(pool, *[partial(ram.call, "CreateAccessKey")] * 5)
        no_500(outcomes)
        assert Counter(o.code for o in outcomes) == {"": 1, "LimitExceeded.User.AccessKey": 4}
        root_keys = _count(
            ram.engine,
            access_keys,
            access_keys.c.account_id == ram.account_id,
            access_keys.c.user_name.is_(None),
        )
        assert root_keys == 2
        (created,) = [o for o in outcomes if o.ok]
        ram.must("DeleteAccessKey", UserAccessKeyId=created.body["AccessKey"]["AccessKeyId"])


def test_group_limit_holds_under_concurrency(ram: Ram, pool: ThreadPoolExecutor) -> None:
    groups = [ram.name("g") for _ in range(7)]
    for group in groups:
        ram.must("CreateGroup", GroupName=group)
    for _ in range(ROUNDS // 5):
        user = ram.name("u")
        ram.must("CreateUser", UserName=user)
        outcomes = race(
            pool,
            *[
                partial(ram.call, "AddUserToGroup", GroupName=group, UserName=user)
                for group in groups
            ],
        )
        no_500(outcomes)
        assert Counter(o.code for o in outcomes) == {"": 5, "LimitExceeded.User.Group": 2}
        assert memberships_of(ram, user) == 5


def test_policy_version_limit_holds_under_concurrency(ram: Ram, pool: ThreadPoolExecutor) -> None:
    for _ in range(ROUNDS // 2):
        policy = ram.name("p")
        ram.must("CreatePolicy", PolicyName=policy, PolicyDocument=DOCUMENT)
        outcomes = race(
            pool,
            *[partial(ram.call, "CreatePolicyVersion", PolicyName=policy, PolicyDocument=DOCUMENT)]
            * 6,
        )
        no_500(outcomes)
        assert Counter(o.code for o in outcomes) == {"": 4, "LimitExceeded.Policy.Version": 2}
        versions = [o.body["PolicyVersion"]["VersionId"] for o in outcomes if o.ok]
        assert sorted(versions) == ["v2", "v3", "v4", "v5"]
        stored = _count(
            ram.engine,
            ram_policy_versions,
            ram_policy_versions.c.account_id == ram.account_id,
            ram_policy_versions.c.policy_name == policy,
        )
        assert stored == 5


def test_rotating_policy_versions_under_concurrency_keeps_five(
    ram: Ram, pool: ThreadPoolExecutor
) -> None:
    policy = ram.name("p")
    ram.must("CreatePolicy", PolicyName=policy, PolicyDocument=DOCUMENT)
    for _ in range(ROUNDS // 5):
        outcomes = race(
            pool,
            *[
                partial(
                    ram.call,
                    "CreatePolicyVersion",
                    PolicyName=policy,
                    PolicyDocument=DOCUMENT,
                    SetAsDefault="true",
                    RotateStrategy="DeleteOldestNonDefaultVersionWhenLimitExceeded",
                )
            ]
            * 6,
        )
        no_500(outcomes)
        assert all(o.ok for o in outcomes), [o.code for o in outcomes]
        stored = _count(
            ram.engine,
            ram_policy_versions,
            ram_policy_versions.c.account_id == ram.account_id,
            ram_policy_versions.c.policy_name == policy,
        )
        assert stored <= 5
        with ram.engine.connect() as conn:
            kept = set(
                conn.execute(
                    select(ram_policy_versions.c.version_id).where(
                        ram_policy_versions.c.account_id == ram.account_id,
                        ram_policy_versions.c.policy_name == policy,
                    )
                ).scalars()
            )
        info = ram.must("GetPolicy", PolicyName=policy, PolicyType="Custom")
        assert info["Policy"]["DefaultVersion"] in kept, "the default version was rotated away"
