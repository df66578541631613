"""Wires the parts together once, at start; nothing happens at import time."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from rkvstore.config import Settings
from rkvstore.crypto import load_secret_box, write_private_file
from rkvstore.engine.provider import LocalProvider
from rkvstore.engine.redis_engine import RedisEngine
from rkvstore.iam.credentials import NewTenant, count_tenants, create_tenant
from rkvstore.products import background_workers, build_registry
from rkvstore.secret import Secret
from rkvstore.services.context import Deps
from rkvstore.services.reconcile import Reconciler
from rkvstore.services.tasks import TaskSlots
from rkvstore.store import repo
from rkvstore.store.db import make_engine, migrate, migration_lock

log = logging.getLogger("rkvstore")
ROOT_CREDENTIALS_FILE = "root-credentials.json"
DEFAULT_TENANT_NAME = "default"


def prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def open_database(settings: Settings) -> Engine:
    engine = make_engine(settings.effective_database_url, timeout=settings.db_timeout_seconds)
    migrate(engine)
    return engine


def build_deps(settings: Settings) -> Deps:
    """Every long-lived part; nothing is started (see ``start_background``)."""
    prepare_data_dir(settings)
    box = load_secret_box(settings.data_dir, settings.master_key)
    engine = open_database(settings)
    deps = Deps(
        settings=settings,
        engine=engine,
        box=box,
        slots=TaskSlots(
            engine,
            lease_seconds=settings.task_lease_seconds,
            wait_seconds=settings.task_wait_seconds,
        ),
        redis=RedisEngine(node_timeout=settings.node_timeout_seconds),
        local=LocalProvider(settings.data_dir / "nodes", box, settings.redis_server),
        reconciler=None,  # type: ignore[arg-type]  # needs deps; set just below
    )
    deps.reconciler = Reconciler(deps, settings.reconcile_interval_seconds)
    deps.background = background_workers(deps)
    return deps


def start_background(deps: Deps) -> None:
    """Bring local nodes up (adopting ones still running), then supervise and reconcile."""
    from rkvstore.products.kvstore.instances import resume_creation
    from rkvstore.services.instance_nodes import CREATING, LOCAL

    with deps.engine.connect() as conn:
        instances = [i for i in repo.list_instances(conn) if i.provider == LOCAL]
        rows = {i.instance_id: repo.list_nodes(conn, i.instance_id) for i in instances}
    for instance in instances:
        if instance.status == CREATING:
            resume_creation(deps, instance.instance_id)
            continue
        if not deps.local.holds(instance, rows[instance.instance_id]):
            # Another rkvstore process on this database created it, under its
            # own data dir: that process supervises the nodes; this one still
            # changes them over the network.
            log.info("instance %s: nodes held by another data dir", instance.instance_id)
            continue
        try:
            if not deps.local.resume_instance(instance, rows[instance.instance_id]):
                log.info("instance %s: being deleted; its nodes left alone", instance.instance_id)
        except Exception:
            log.exception("instance %s: starting its nodes failed", instance.instance_id)
    # A task row left from before this start is a task whose process died (or
    # one of another process, still running). A holder known dead (this host,
    # its process gone: a kill -9 of the previous rkvstore) is freed now, not
    # after its lease; either way the instance gets a pass as soon as it can.
    freed = deps.slots.take_over_dead_holders()
    with deps.engine.connect() as conn:
        held = repo.instances_with_tasks(conn)
    for instance_id in sorted({*freed, *held}):
        deps.reconciler.mark_dirty(instance_id)
    deps.local.manager.on_restart = deps.reconciler.mark_dirty
    deps.local.start()
    deps.reconciler.start()
    for worker in deps.background:
        worker.start()


def stop_background(deps: Deps, build_timeout: float = 60.0) -> None:
    """Finish instance builds in flight, stop reconciling, stop the local nodes, close."""
    stop_supervision(deps, build_timeout)
    close_deps(deps)


def finish_builds(deps: Deps, build_timeout: float = 60.0) -> None:
    """Wait (bounded) for this process's instance builds still in flight."""
    deadline = time.monotonic() + build_timeout
    for thread in list(deps.builds):
        thread.join(timeout=max(0.0, deadline - time.monotonic()))


def stop_supervision(
    deps: Deps, build_timeout: float = 60.0, *, stop_nodes: bool | None = None
) -> None:
    """Undo ``start_background``: builds finished, reconciler and node supervisor stopped;
    the nodes too unless ``stop_nodes`` is False (default: ``stop_nodes_on_exit``)."""
    finish_builds(deps, build_timeout)
    for worker in deps.background:
        worker.stop()
    deps.reconciler.stop()
    deps.local.stop(
        stop_nodes=deps.settings.stop_nodes_on_exit if stop_nodes is None else stop_nodes
    )


def close_deps(deps: Deps) -> None:
    """Close the connections to the nodes and to the database."""
    deps.redis.close()
    deps.engine.dispose()


@dataclass(frozen=True)
class RootKey:
    created: NewTenant
    credentials_file: Path | None


def ensure_root_tenant(deps: Deps) -> RootKey | None:
    """On an empty database, create the first tenant and its root AccessKey.

    Returns what was created (``None`` when a tenant already existed). A random
    key is written to ``root-credentials.json`` (mode 0600) and printed once
    to stderr; a key given through the environment is neither.
    """
    settings = deps.settings
    with migration_lock(deps.engine) as conn:
        if count_tenants(conn):
            return None
        given_id = settings.bootstrap_access_key_id
        given_secret = settings.bootstrap_access_key_secret
        tenant = create_tenant(
            conn,
            deps.box,
            DEFAULT_TENANT_NAME,
            access_key_id=given_id or None,
            access_key_secret=Secret(given_secret) if given_id and given_secret else None,
        )
        conn.commit()
    if given_id and given_secret:
        log.info(
            "created tenant %s with the root AccessKey from the environment", tenant.account_id
        )
        return RootKey(tenant, None)
    path = settings.data_dir / ROOT_CREDENTIALS_FILE
    write_private_file(
        path,
        json.dumps(
            {
                "AccountId": tenant.account_id,
                "AccessKeyId": tenant.access_key_id,
                "AccessKeySecret": tenant.access_key_secret.reveal(),
            },
            indent=2,
        ).encode(),
    )
    # Printed straight to the terminal, once; never through logging.
    sys.stderr.write(
        f"rkvstore: created tenant {tenant.account_id} and its root AccessKey (also in {path}):\n"
        f"  AccessKeyId:     {tenant.access_key_id}\n"
        f"  AccessKeySecret: {tenant.access_key_secret.reveal()}\n"
    )
    sys.stderr.flush()
    log.info("created tenant %s; root AccessKey written to %s", tenant.account_id, path)
    return RootKey(tenant, path)


__all__ = ["build_deps", "build_registry", "ensure_root_tenant"]
