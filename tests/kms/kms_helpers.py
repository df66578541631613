"""The official KMS SDK pointed at rkvstore, and what a secret's credentials reach."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import redis
from alibabacloud_kms20160120 import models as kms_models
from alibabacloud_kms20160120.client import Client as KmsClient
from alibabacloud_tea_openapi.models import Config
from cryptography.fernet import Fernet
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from sqlalchemy import Engine, select

from rkvstore.store.db import make_engine
from rkvstore.store.tables import nodes
from tests.api.instances import (
    MASTER_SLAVE,
    STAND_ALONE,
    can_login,
    delete_instance,
    rpc_client,
    start_creating,
    wait_normal,
)
from tests.api.sdk_clients import REGION
from tests.conftest import ARTIFACT_DIRS, LiveServer, remember_secret, start_server

CLUSTER: Final = "CLUSTER"
DOUBLE_USERS: Final = "DoubleUsers"
DUAL_PASSWORD: Final = "DualPassword"


def kms_client(
    server: LiveServer,
    *,
    v1: bool = False,
    key: tuple[str, str] | None = None,
) -> KmsClient:
    key_id, key_secret = key or (server.access_key_id, server.access_key_secret)
    ca = None if server.ca is None else str(server.ca)
    return KmsClient(
        Config(
            access_key_id=key_id,
            access_key_secret=key_secret,
            endpoint=server.endpoint,
            protocol="https" if ca else "http",
            ca=ca,
            region_id=REGION,
            signature_algorithm="v2" if v1 else None,
        )
    )


def new_name(prefix: str = "app") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def create_secret(
    client: KmsClient,
    name: str,
    instance_id: str,
    account: str,
    mode: str,
    *,
    version_id: str = "v1",
    privilege: str | None = "RoleReadWrite",
    **extra: Any,
) -> Any:
    config: dict[str, Any] = {
        "SecretSubType": mode,
        "InstanceId": instance_id,
        "RegionId": REGION,
        "AccountName": account,
    }
    if privilege is not None:
        config["AccountPrivilege"] = privilege
    if mode == DOUBLE_USERS:
        config["CloneAccountName"] = account + "_clone"
    config.update(extra.pop("config", {}))
    fields: dict[str, Any] = {"secret_type": "Redis", "secret_data": "$Auto", **extra}
    request = kms_models.CreateSecretRequest(
        secret_name=name, version_id=version_id, extended_config=config, **fields
    )
    return client.create_secret(request).body


@dataclass(frozen=True)
class Credentials:
    account: str
    password: str
    version_id: str


def read_value(client: KmsClient, name: str, stage: str = "ACSCurrent") -> Credentials:
    body = client.get_secret_value(
        kms_models.GetSecretValueRequest(secret_name=name, version_stage=stage)
    ).body
    data = json.loads(body.secret_data)
    assert set(data) == {"AccountName", "AccountPassword"}
    remember_secret(data["AccountPassword"])  # the run's last test looks for it everywhere
    return Credentials(data["AccountName"], data["AccountPassword"], body.version_id)


def rotate(client: KmsClient, name: str, version_id: str) -> None:
    client.rotate_secret(kms_models.RotateSecretRequest(secret_name=name, version_id=version_id))


def logs_in_everywhere(ports: list[int], creds: Credentials) -> bool:
    return all(can_login(p, creds.account, creds.password) for p in ports)


def refused_everywhere(ports: list[int], creds: Credentials) -> bool:
    return not any(can_login(p, creds.account, creds.password) for p in ports)


@dataclass
class KmsDeployment:
    server: LiveServer
    engine: Engine
    master_key: str
    instances: dict[str, str]  # STAND_ALONE / MASTER_SLAVE / CLUSTER -> instance ID

    def ports(self, instance_id: str) -> list[int]:
        with self.engine.connect() as conn:
            found = conn.execute(select(nodes.c.port).where(nodes.c.instance_id == instance_id))
            return sorted(int(p) for p in found.scalars())


@contextmanager
def kms_deployment(
    path: Path, kinds: tuple[str, ...], extra_env: dict[str, str] | None = None
) -> Iterator[KmsDeployment]:
    """A server on SQLite (rotation intervals down to 1 s) with an instance of each kind."""
    key = Fernet.generate_key().decode()
    ARTIFACT_DIRS.append(path)
    env = {
        "RKVSTORE_MASTER_KEY": key,
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_KMS_MIN_ROTATION_INTERVAL": "1s",
        "RKVSTORE_KMS_SCHEDULER_INTERVAL_SECONDS": "0.2",
        **(extra_env or {}),
    }
    server = start_server(path, extra_env=env)
    engine = make_engine(f"sqlite:///{path / 'rkvstore.db'}")
    made: dict[str, str] = {}
    try:
        with rpc_client(server) as client:
            try:
                for kind in kinds:
                    if kind == CLUSTER:
                        params = {"NodeType": MASTER_SLAVE, "ShardCount": 2}
                        made[kind] = client.call("CreateInstance", params)["InstanceId"]
                    else:
                        made[kind] = start_creating(client, kind)[0]
                for instance_id in made.values():
                    wait_normal(client, instance_id)
                yield KmsDeployment(server, engine, key, made)
            finally:
                for instance_id in made.values():
                    delete_instance(client, instance_id)
    finally:
        engine.dispose()
        server.stop()


# --------------------------------------------------------------------------- an application


def _refused(exc: BaseException) -> bool:
    """An answer that says the credentials were refused (the cluster client wraps it)."""
    text = f"{exc} {exc.__cause__ or ''}"
    return "WRONGPASS" in text or "invalid username-password" in text


class App:
    """An application's loop: every command on a fresh connection (the harshest case: it
    logs in each time), credentials from GetSecretValue, re-read once on an auth failure."""

    def __init__(self, client: KmsClient, name: str, ports: list[int], cluster: bool) -> None:
        self.client, self.name, self.ports, self.cluster = client, name, ports, cluster
        self.creds = read_value(client, name)
        self.commands = 0
        self.rereads = 0
        self.failures: list[str] = []  # commands that failed after a re-read
        self.crashed: BaseException | None = None
        self.stop = threading.Event()
        self.master = ports[0]
        for port in ports:  # which node takes writes
            with redis.Redis(
                port=port, username=self.creds.account, password=self.creds.password
            ) as r:
                if r.info("replication")["role"] == "master":
                    self.master = port

    def _once(self, port: int, key: str) -> None:
        creds = self.creds
        if self.cluster:
            client: Any = RedisCluster(
                host="127.0.0.1",
                port=port,
                username=creds.account,
                password=creds.password,
                socket_timeout=5,
            )
        else:
            client = redis.Redis(
                port=port, username=creds.account, password=creds.password, socket_timeout=5
            )
        try:
            if self.cluster or port == self.master:
                client.set(key, "v")
                assert client.get(key) == b"v"
            else:
                client.get(key)  # a replica: read-only
        finally:
            client.close()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # the test reports it
            self.crashed = exc

    def _run(self) -> None:
        for i in range(100_000):  # bounded; stopped by the test
            if self.stop.is_set():
                return
            port = self.ports[i % len(self.ports)]
            key = f"app:{i % 16}"
            try:
                self._once(port, key)
            except (redis.AuthenticationError, redis.ResponseError, RedisClusterException) as exc:
                if not _refused(exc):
                    raise
                self.rereads += 1
                self.creds = read_value(self.client, self.name)
                try:
                    self._once(port, key)
                except redis.RedisError as again:
                    self.failures.append(type(again).__name__)
            self.commands += 1


@contextmanager
def running(app: App) -> Iterator[App]:
    """``app`` in a thread for the block; it must end without a failure after a re-read."""
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        yield app
    finally:
        app.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert app.crashed is None, f"{app.crashed!r}: {app.crashed}"
    assert app.failures == []


__all__ = ["MASTER_SLAVE", "STAND_ALONE"]
