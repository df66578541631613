"""Seeding for bench/scale.py: a tenant through the CLI, then instances in bulk.

The instances go in through the project's own tables (``rkvstore.store.tables``)
in a few large inserts, as many rows as a size needs; every secret is a Fernet
token of the master key the benchmark hands the server (``RKVSTORE_MASTER_KEY``),
as the server itself would seal it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _standin import HOST
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, insert

from rkvstore.store.tables import accounts, instances, nodes

ACCOUNTS = 20


def create_tenant(data_dir: Path, url: str, master_key: str) -> tuple[str, str, str]:
    """(AccountId, AccessKeyId, AccessKeySecret) of a new tenant; migrates the database."""
    command = [sys.executable, "-m", "rkvstore.cli", "tenants", "create", "bench", "--json"]
    out = subprocess.run(
        [*command, "--data-dir", str(data_dir), "--database-url", url],
        env={**os.environ, "RKVSTORE_MASTER_KEY": master_key},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    answer = json.loads(out.stdout)
    return answer["AccountId"], answer["AccessKeyId"], answer["AccessKeySecret"]


def seed(
    fleet_size: int,
    url: str,
    account_id: str,
    ports: list[int],
    *,
    master_key: str,
    management_password: str,
    account_sha256: str,
    engine_version: str,
) -> list[str]:
    """``fleet_size`` registered instances, one node each at ``ports[i]``, 20 accounts each."""
    fernet = Fernet(master_key.encode())
    base = datetime.now(UTC) - timedelta(days=1)
    ids = [f"r-bench{i:013d}" for i in range(fleet_size)]
    engine = create_engine(url)
    chunk = 2000
    try:
        for start in range(0, fleet_size, chunk):
            part = range(start, min(fleet_size, start + chunk))
            instance_rows = [
                {
                    "instance_id": ids[i],
                    "account_id": account_id,
                    "name": f"bench-{i}",
                    "status": "Normal",
                    "provider": "registered",
                    "engine_version": engine_version,
                    "architecture": "standard",
                    "node_type": "STAND_ALONE",
                    "shard_count": 1,
                    "zone_id": "cn-hangzhou-h",
                    "instance_class": "registered",
                    "charge_type": "PostPaid",
                    "host": HOST,
                    "port": ports[i],
                    "mgmt_password_encrypted": fernet.encrypt(
                        management_password.encode()
                    ).decode(),
                    "admin_user": None,
                    "admin_password_encrypted": fernet.encrypt(
                        management_password.encode()
                    ).decode(),
                    "created_at": base + timedelta(milliseconds=i),
                }
                for i in part
            ]
            node_rows = [
                {
                    "node_id": f"{ids[i]}-0",
                    "instance_id": ids[i],
                    "host": HOST,
                    "port": ports[i],
                    "role": "master",
                    "shard": 0,
                    "master_node_id": None,
                }
                for i in part
            ]
            account_rows = [
                {
                    "instance_id": ids[i],
                    "name": f"acct{a:02d}",
                    "password_sha256": account_sha256,
                    "privilege": "RoleReadWrite",
                    "account_type": "Normal",
                    "description": "bench",
                    "created_at": base + timedelta(milliseconds=i),
                }
                for i in part
                for a in range(ACCOUNTS)
            ]
            with engine.begin() as conn:
                conn.execute(insert(instances), instance_rows)
                conn.execute(insert(nodes), node_rows)
                conn.execute(insert(accounts), account_rows)
    finally:
        engine.dispose()
    return ids
