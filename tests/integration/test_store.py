"""The store on both engines: schema, tenants and keys, nonces, bootstrap.

Every test here takes ``database_url``, so it runs on SQLite and on a fresh
PostgreSQL database.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import queue
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from sqlalchemy import Engine, MetaData, event, func, insert, inspect, select, text

from rkvstore.bootstrap import ROOT_CREDENTIALS_FILE, build_deps, ensure_root_tenant
from rkvstore.config import Settings
from rkvstore.crypto import KEY_FILE_NAME, SecretBox
from rkvstore.iam.credentials import ACTIVE, create_tenant, find_access_key
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.store import db as store_db
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.nonces import purge_expired_nonces, use_nonce
from rkvstore.store.tables import access_keys, metadata, nonces, tenants
from tests.conftest import remember_secret

# At least these; other tables may join tables.py, each with its migration.
CORE_TABLES = {"tenants", "access_keys", "nonces"}
MIGRATIONS = Path(store_db.__file__).parent / "migrations"
DDL = ("CREATE", "ALTER", "DROP")
SETTINGS_ENV = (
    "RKVSTORE_MASTER_KEY",
    "RKVSTORE_BOOTSTRAP_ACCESS_KEY_ID",
    "RKVSTORE_BOOTSTRAP_ACCESS_KEY_SECRET",
    "RKVSTORE_DATABASE_URL",
    "RKVSTORE_DATA_DIR",
)


@pytest.fixture(autouse=True)
def _no_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ``RKVSTORE_*``: only what a test passes may count."""
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


def _schema_diff(engine: Engine, target: MetaData) -> list[Any]:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))


def _head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def _alembic_revisions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())


def _tenant_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(tenants)).scalar_one())


def _unique_secret(prefix: str = "PlainSk") -> str:
    return remember_secret(prefix + secrets.token_hex(12))


# --------------------------------------------------------------------------- schema


def test_migrate_creates_the_schema_of_tables_py(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []
        migrate(engine)
        assert set(metadata.tables) >= CORE_TABLES
        assert set(inspect(engine).get_table_names()) == {*metadata.tables, "alembic_version"}
        assert _alembic_revisions(engine) == [_head_revision()]
        assert _schema_diff(engine, metadata) == []
        # The comparison sees the tables at all: against an empty model it reports them.
        removed = {d[1].name for d in _schema_diff(engine, MetaData()) if d[0] == "remove_table"}
        assert removed == set(metadata.tables)
    finally:
        engine.dispose()


def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        revisions = _alembic_revisions(engine)
        assert revisions == [_head_revision()]
        box = SecretBox(Fernet.generate_key())
        with engine.begin() as conn:
            tenant = create_tenant(conn, box, "kept", access_key_secret=Secret(_unique_secret()))
        assert use_nonce(engine, tenant.access_key_id, "n-kept", 2**40)

        statements: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement.strip())

        again = make_engine(database_url)  # and from another engine, as a restart would
        try:
            for eng in (engine, again):
                event.listen(eng, "before_cursor_execute", record)
                migrate(eng)
                event.remove(eng, "before_cursor_execute", record)
        finally:
            again.dispose()
        assert statements, "the recorder saw nothing: it would prove nothing"
        ddl = [s for s in statements if s.upper().startswith(DDL)]
        assert ddl == [], "a second migrate changed the schema"

        assert _alembic_revisions(engine) == revisions
        assert _schema_diff(engine, metadata) == []
        assert _tenant_count(engine) == 1
        with engine.connect() as conn:
            key = find_access_key(conn, box, tenant.access_key_id)
        assert key is not None and key.account_id == tenant.account_id
        assert not use_nonce(engine, tenant.access_key_id, "n-kept", 2**40)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- concurrent bootstrap


def _bootstrap_worker(
    data_dir: str,
    database_url: str,
    master_key: str,
    key_id: str,
    key_secret: str,
    start: Any,
    results: Any,
) -> None:
    """Start like ``rkvstore serve`` does (migrate, then the root tenant); report back.

    Module level so that the spawn context can import it in a fresh interpreter.
    """
    try:
        settings = Settings(
            data_dir=Path(data_dir),
            database_url=database_url,
            master_key=master_key,
            bootstrap_access_key_id=key_id,
            bootstrap_access_key_secret=key_secret,
        )
        start.wait(timeout=60)
        deps = build_deps(settings)
        try:
            created = ensure_root_tenant(deps) is not None
            with deps.engine.connect() as conn:
                key = find_access_key(conn, deps.box, key_id)
            readable = key is not None and key.secret.reveal() == key_secret
        finally:
            deps.engine.dispose()
        results.put(("ok", created, readable))
    except BaseException as exc:  # report everything: the parent asserts on it
        results.put(("error", f"{type(exc).__name__}: {exc}"[:500], False))


def _run_in_threads(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    results: queue.Queue[Any] = queue.Queue()
    start = threading.Barrier(len(args))
    workers = [
        threading.Thread(target=target, args=(*a, start, results), daemon=True) for a in args
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "a bootstrap thread hangs"
    return [results.get_nowait() for _ in workers]


def _run_in_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    start = ctx.Barrier(len(args))
    workers = [ctx.Process(target=target, args=(*a, start, results)) for a in args]
    for w in workers:
        w.start()
    try:
        out = [results.get(timeout=120) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=30)
            if w.is_alive():
                w.kill()
                w.join()
        results.close()
        results.join_thread()
    return out


def _concurrently(calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` in threads released together; each one's result, or its exception text."""
    start = threading.Barrier(len(calls))
    outcomes: list[object] = []
    lock = threading.Lock()

    def run(call: Callable[[], object]) -> None:
        start.wait(timeout=30)
        try:
            outcome = call()
        except Exception as exc:  # a bug to report, not a reason to hang
            outcome = f"{type(exc).__name__}: {exc}"[:300]
        with lock:
            outcomes.append(outcome)

    workers = [threading.Thread(target=run, args=(c,), daemon=True) for c in calls]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert len(outcomes) == len(calls), "a thread hangs"
    return outcomes


def _wipe(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
            metadata.drop_all(conn)
    finally:
        engine.dispose()


@pytest.mark.parametrize(("runner", "rounds"), [("threads", 4), ("spawn", 2)])
def test_concurrent_first_start_makes_exactly_one_tenant(
    database_url: str, data_dir: Path, runner: str, rounds: int
) -> None:
    """Two servers starting at once on one empty database: both start, one tenant.

    They share the master key (as every process of a scaled-out deployment must)
    and the bootstrap key, but not a data dir.
    """
    run = _run_in_threads if runner == "threads" else _run_in_processes
    master_key = Fernet.generate_key().decode()
    for round_no in range(rounds):
        _wipe(database_url)
        key_id = f"LTAIrace{round_no}{secrets.token_hex(6)}"
        key_secret = _unique_secret("RaceSk")
        args = [
            (str(data_dir / f"r{round_no}-w{i}"), database_url, master_key, key_id, key_secret)
            for i in range(2)
        ]
        results = run(_bootstrap_worker, args)

        errors = [r[1] for r in results if r[0] != "ok"]
        assert not errors, f"round {round_no}: a concurrent start failed: {errors}"
        assert sorted(r[1] for r in results) == [False, True], "exactly one creates the tenant"
        assert all(r[2] for r in results), "each process reads the root key"
        engine = make_engine(database_url)
        try:
            assert _tenant_count(engine) == 1
            assert _alembic_revisions(engine) == [_head_revision()]
        finally:
            engine.dispose()


def test_concurrent_root_tenant_on_a_migrated_database(database_url: str, data_dir: Path) -> None:
    """The tenant half of the race alone: the schema is there, two servers bootstrap at once."""
    master_key = Fernet.generate_key().decode()
    for round_no in range(4):
        _wipe(database_url)
        key_id = f"LTAIroot{round_no}{secrets.token_hex(6)}"
        key_secret = _unique_secret("RootSk")
        all_deps = [
            build_deps(  # one after the other: migrations are not what this test races
                Settings(
                    data_dir=data_dir / f"r{round_no}-w{i}",
                    database_url=database_url,
                    master_key=master_key,
                    bootstrap_access_key_id=key_id,
                    bootstrap_access_key_secret=key_secret,
                )
            )
            for i in range(2)
        ]
        try:
            outcomes = _concurrently([functools.partial(_created_root, deps) for deps in all_deps])
        finally:
            for deps in all_deps:
                deps.engine.dispose()
        assert sorted(outcomes, key=repr) == [False, True], f"round {round_no}: {outcomes}"
        engine = make_engine(database_url)
        try:
            assert _tenant_count(engine) == 1
        finally:
            engine.dispose()


def _created_root(deps: Deps) -> bool:
    return ensure_root_tenant(deps) is not None


# --------------------------------------------------------------------------- tenants and keys


def _database_bytes(engine: Engine, database_url: str) -> bytes:
    """Everything the database holds about access keys, as bytes."""
    if engine.dialect.name == "sqlite":
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]
        return b"".join(f.read_bytes() for f in files if f.exists())
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT CAST(a AS text) FROM access_keys AS a")).scalars().all()
    return "\n".join(rows).encode()


def test_create_tenant_stores_the_secret_only_encrypted(engine: Engine, database_url: str) -> None:
    box = SecretBox(Fernet.generate_key())
    plaintext = _unique_secret()
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "acme", access_key_secret=Secret(plaintext))
    assert len(tenant.account_id) == 16
    assert tenant.account_id.isdigit() and tenant.account_id[0] != "0"
    assert tenant.access_key_secret.reveal() == plaintext

    with engine.connect() as conn:
        key = find_access_key(conn, box, tenant.access_key_id)
        token = conn.execute(
            select(access_keys.c.secret_encrypted).where(
                access_keys.c.access_key_id == tenant.access_key_id
            )
        ).scalar_one()
        stored_tenant = conn.execute(select(tenants)).one()
    assert key is not None
    assert isinstance(key.secret, Secret)
    assert key.secret.reveal() == plaintext
    assert (key.account_id, key.user_name, key.status) == (tenant.account_id, None, ACTIVE)
    assert key.is_root
    assert (stored_tenant.account_id, stored_tenant.name) == (tenant.account_id, "acme")

    assert token != plaintext and token.startswith("gAAAAA")  # a Fernet token
    stored = _database_bytes(engine, database_url)
    assert token.encode() in stored, "the scan must see the row it looks for the secret in"
    assert plaintext.encode() not in stored


def test_random_root_key_and_lookup_of_unknown_key(engine: Engine) -> None:
    box = SecretBox(Fernet.generate_key())
    with engine.begin() as conn:
        first = create_tenant(conn, box, "one")
        second = create_tenant(conn, box, "two")
    assert first.account_id != second.account_id
    assert first.access_key_id != second.access_key_id
    assert first.access_key_id.startswith("LTAI") and len(first.access_key_secret) >= 24
    with engine.connect() as conn:
        assert find_access_key(conn, box, "LTAIdoesnotexist") is None
        assert find_access_key(conn, box, "") is None
        key = find_access_key(conn, box, second.access_key_id)
    assert key is not None and key.account_id == second.account_id
    assert key.secret.reveal() == second.access_key_secret.reveal()


def test_another_master_key_cannot_open_the_secret(engine: Engine) -> None:
    box = SecretBox(Fernet.generate_key())
    other = SecretBox(Fernet.generate_key())
    with engine.begin() as conn:
        tenant = create_tenant(conn, box, "acme", access_key_secret=Secret(_unique_secret()))
    with engine.connect() as conn:
        token = conn.execute(select(access_keys.c.secret_encrypted)).scalar_one()
        with pytest.raises(RuntimeError, match="cannot be decrypted") as info:
            find_access_key(conn, other, tenant.access_key_id)
    assert tenant.access_key_secret.reveal() not in str(info.value)
    with pytest.raises(RuntimeError):
        other.open(token)
    assert box.open(token).reveal() == tenant.access_key_secret.reveal()


# --------------------------------------------------------------------------- nonces


def test_a_nonce_is_used_once_per_key(engine: Engine) -> None:
    assert use_nonce(engine, "LTAIone", "nonce-1", 2_000_000_000) is True
    assert use_nonce(engine, "LTAIone", "nonce-1", 2_000_000_000) is False
    assert use_nonce(engine, "LTAIone", "nonce-1", 1) is False  # whatever the expiry
    assert use_nonce(engine, "LTAItwo", "nonce-1", 2_000_000_000) is True
    assert use_nonce(engine, "LTAIone", "nonce-2", 2_000_000_000) is True
    assert use_nonce(engine, "LTAIone", "x" * 128, 2_000_000_000) is True


def test_purge_removes_only_expired_nonces(engine: Engine) -> None:
    now = 1_700_000_000
    for nonce, expires_at in [("old", now - 3600), ("just-old", now - 1), ("now", now)]:
        assert use_nonce(engine, "LTAIk", nonce, expires_at)
    assert use_nonce(engine, "LTAIk", "future", now + 900)
    assert use_nonce(engine, "LTAIother", "old", now - 10)

    assert purge_expired_nonces(engine, now) == 3

    with engine.connect() as conn:
        rows = conn.execute(select(nonces.c.access_key_id, nonces.c.nonce)).all()
    left = {(row.access_key_id, row.nonce) for row in rows}
    assert left == {("LTAIk", "now"), ("LTAIk", "future")}
    assert use_nonce(engine, "LTAIk", "old", now + 900) is True  # purged: usable again
    assert use_nonce(engine, "LTAIk", "future", now + 900) is False
    assert purge_expired_nonces(engine, now) == 0


def test_concurrent_use_of_one_nonce_succeeds_once(engine: Engine) -> None:
    threads = 8
    for attempt in range(5):
        use = functools.partial(use_nonce, engine, "LTAIrace", f"shared-{attempt}", 2_000_000_000)
        outcomes = _concurrently([use] * threads)
        assert sorted(outcomes, key=repr) == [False] * (threads - 1) + [True], outcomes


def test_nonce_rows_do_not_need_a_known_key(engine: Engine) -> None:
    """Nonces are recorded before the key is known to exist, so no foreign key."""
    with engine.begin() as conn:
        conn.execute(insert(nonces).values(access_key_id="nobody", nonce="n", expires_at=0))
    assert use_nonce(engine, "nobody", "n", 0) is False


# --------------------------------------------------------------------------- bootstrap


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bootstrap_with_a_given_key_writes_no_credentials_file(
    database_url: str, data_dir: Path
) -> None:
    key_id = "LTAIgiven" + secrets.token_hex(6)
    key_secret = _unique_secret("GivenSk")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_access_key_id=key_id,
        bootstrap_access_key_secret=key_secret,
    )
    deps = build_deps(settings)
    try:
        root = ensure_root_tenant(deps)
        assert root is not None
        assert root.credentials_file is None
        assert root.created.access_key_id == key_id
        assert not (data_dir / ROOT_CREDENTIALS_FILE).exists()
        assert _mode(data_dir / KEY_FILE_NAME) == 0o600
        with deps.engine.connect() as conn:
            key = find_access_key(conn, deps.box, key_id)
        assert key is not None and key.is_root
        assert key.secret.reveal() == key_secret
        assert key.account_id == root.created.account_id

        assert ensure_root_tenant(deps) is None  # a second start creates nothing
        assert _tenant_count(deps.engine) == 1
    finally:
        deps.engine.dispose()


def test_bootstrap_without_a_key_writes_a_random_one_0600(
    database_url: str, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deps = build_deps(Settings(data_dir=data_dir, database_url=database_url))
    try:
        root = ensure_root_tenant(deps)
        assert root is not None
        path = data_dir / ROOT_CREDENTIALS_FILE
        assert root.credentials_file == path
        assert _mode(path) == 0o600
        assert _mode(data_dir / KEY_FILE_NAME) == 0o600
        written = json.loads(path.read_text())
        assert set(written) == {"AccountId", "AccessKeyId", "AccessKeySecret"}
        remember_secret(written["AccessKeySecret"])
        assert written["AccountId"] == root.created.account_id
        assert written["AccessKeyId"] == root.created.access_key_id
        assert written["AccessKeySecret"] == root.created.access_key_secret.reveal()
        assert len(written["AccountId"]) == 16 and written["AccountId"].isdigit()
        assert capsys.readouterr().err.count(written["AccessKeySecret"]) == 1  # printed once

        with deps.engine.connect() as conn:
            key = find_access_key(conn, deps.box, written["AccessKeyId"])
        assert key is not None and key.secret.reveal() == written["AccessKeySecret"]

        before = path.read_bytes()
        assert ensure_root_tenant(deps) is None
        assert path.read_bytes() == before, "a second start must not replace the key file"
        assert written["AccessKeySecret"] not in capsys.readouterr().err
    finally:
        deps.engine.dispose()


def test_two_deployments_get_different_random_keys(database_url: str, data_dir: Path) -> None:
    """The random root key and account id are not derived from anything fixed."""
    other = data_dir / "other"
    deps = build_deps(Settings(data_dir=data_dir, database_url=database_url))
    try:
        first = ensure_root_tenant(deps)
    finally:
        deps.engine.dispose()
    assert first is not None
    remember_secret(first.created.access_key_secret.reveal())
    _wipe(database_url)
    deps = build_deps(Settings(data_dir=other, database_url=database_url))
    try:
        second = ensure_root_tenant(deps)
    finally:
        deps.engine.dispose()
    assert second is not None
    remember_secret(second.created.access_key_secret.reveal())
    assert first.created.account_id != second.created.account_id
    assert first.created.access_key_id != second.created.access_key_id
    assert first.created.access_key_secret.reveal() != second.created.access_key_secret.reveal()
    assert (data_dir / KEY_FILE_NAME).read_bytes() != (other / KEY_FILE_NAME).read_bytes()


def test_master_key_setting_writes_no_key_file(database_url: str, data_dir: Path) -> None:
    master_key = Fernet.generate_key().decode()
    key_id = "LTAImk" + secrets.token_hex(6)
    key_secret = _unique_secret("MasterSk")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        master_key=master_key,
        bootstrap_access_key_id=key_id,
        bootstrap_access_key_secret=key_secret,
    )
    deps = build_deps(settings)
    try:
        assert ensure_root_tenant(deps) is not None
        with deps.engine.connect() as conn:
            token = conn.execute(select(access_keys.c.secret_encrypted)).scalar_one()
    finally:
        deps.engine.dispose()
    assert not (data_dir / KEY_FILE_NAME).exists()
    assert SecretBox(master_key.encode()).open(token).reveal() == key_secret
    with pytest.raises(RuntimeError):
        SecretBox(Fernet.generate_key()).open(token)

    # A restart with the same key reads it; no key file appears then either.
    deps = build_deps(settings)
    try:
        assert ensure_root_tenant(deps) is None
        with deps.engine.connect() as conn:
            key = find_access_key(conn, deps.box, key_id)
        assert key is not None and key.secret.reveal() == key_secret
    finally:
        deps.engine.dispose()
    assert not (data_dir / KEY_FILE_NAME).exists()


def test_master_key_file_is_reused_across_restarts(database_url: str, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir / "fresh", database_url=database_url)
    deps = build_deps(settings)
    try:
        root = ensure_root_tenant(deps)
    finally:
        deps.engine.dispose()
    assert root is not None
    remember_secret(root.created.access_key_secret.reveal())
    assert _mode(settings.data_dir) == 0o700
    key_file = settings.data_dir / KEY_FILE_NAME
    assert _mode(key_file) == 0o600
    before = key_file.read_bytes()
    deps = build_deps(settings)
    try:
        with deps.engine.connect() as conn:
            key = find_access_key(conn, deps.box, root.created.access_key_id)
    finally:
        deps.engine.dispose()
    assert key_file.read_bytes() == before
    assert key is not None
    assert key.secret.reveal() == root.created.access_key_secret.reveal()
