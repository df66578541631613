"""Wires the parts together once, at start; nothing happens at import time."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from rkvstore.config import Settings
from rkvstore.crypto import load_secret_box, write_private_file
from rkvstore.iam.credentials import NewTenant, count_tenants, create_tenant
from rkvstore.secret import Secret
from rkvstore.services.actions import build_registry
from rkvstore.services.context import Deps
from rkvstore.store.db import make_engine, migrate, migration_lock

log = logging.getLogger("rkvstore")
ROOT_CREDENTIALS_FILE = "root-credentials.json"
DEFAULT_TENANT_NAME = "default"


def prepare_data_dir(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


def open_database(settings: Settings) -> Engine:
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    return engine


def build_deps(settings: Settings) -> Deps:
    prepare_data_dir(settings)
    box = load_secret_box(settings.data_dir, settings.master_key)
    return Deps(settings=settings, engine=open_database(settings), box=box)


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
        log.info("created tenant %s with the root AccessKey from the environment", tenant.account_id)
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
        "rkvstore: created tenant {} and its root AccessKey (also in {}):\n"
        "  AccessKeyId:     {}\n  AccessKeySecret: {}\n".format(
            tenant.account_id, path, tenant.access_key_id, tenant.access_key_secret.reveal()
        )
    )
    sys.stderr.flush()
    log.info("created tenant %s; root AccessKey written to %s", tenant.account_id, path)
    return RootKey(tenant, path)


__all__ = ["build_deps", "build_registry", "ensure_root_tenant"]
