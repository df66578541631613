"""examples/redis_secret_app: its loop survives rotations with no grace by re-reading once."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.api.sdk_clients import REGION
from tests.kms.kms_helpers import (
    DUAL_PASSWORD,
    STAND_ALONE,
    KmsDeployment,
    create_secret,
    kms_client,
    kms_deployment,
    new_name,
    read_value,
    refused_everywhere,
    rotate,
)

APP = Path(__file__).parents[2] / "examples" / "redis_secret_app" / "app.py"
ROTATIONS = 5
WAIT_SECONDS = 30.0  # a bound on each wait, never asserted on
MAX_ITERATIONS = 200_000


def load_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("redis_secret_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsDeployment]:
    """A server of this module's own: its accounts stay out of the shared instances' 18."""
    with kms_deployment(tmp_path_factory.mktemp("kmsapp"), (STAND_ALONE,)) as made:
        yield made


def test_the_loop_rereads_after_each_rotation_and_no_command_fails(
    deployment: KmsDeployment,
) -> None:
    app = load_app()
    server = deployment.server
    admin = kms_client(server)
    instance_id = deployment.instances[STAND_ALONE]
    (port,) = deployment.ports(instance_id)
    name, account = new_name(), new_name("acct")
    create_secret(admin, name, instance_id, account, DUAL_PASSWORD, config={"GracePeriod": "0s"})
    app_kms = app.kms_client_from_env(
        {
            "KMS_ENDPOINT": server.endpoint,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": server.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": server.access_key_secret,
            "ALIBABA_CLOUD_REGION_ID": REGION,
        }
    )
    store = app.SecretBackedRedis(app.secret_reader(app_kms, name), "127.0.0.1", port)
    stop = threading.Event()
    done: list[Any] = []

    def loop() -> None:
        # a new connection, and so a new login, every iteration
        stats = app.run_loop(
            store, iterations=MAX_ITERATIONS, reconnect_every=1, pause=0.01, stop=stop
        )
        done.append(stats)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        for n in range(ROTATIONS):
            old = read_value(admin, name)
            rotate(admin, name, f"v{n + 2}")
            # grace 0s: the old password leaves the node with the rotation ...
            assert wait_for(lambda old=old: refused_everywhere([port], old))  # type: ignore[misc]
            # ... and the loop's next login with it is refused, and it re-reads
            assert wait_for(lambda n=n: store.rereads > n or not thread.is_alive())  # type: ignore[misc]
            assert store.credentials.version_id == f"v{n + 2}"
    finally:
        stop.set()
        thread.join(timeout=WAIT_SECONDS)
        store.close()
    assert not thread.is_alive()
    (stats,) = done
    assert stats.failures == 0
    assert store.rereads == ROTATIONS
    assert stats.iterations > ROTATIONS


def test_a_refusal_that_a_reread_does_not_cure_is_raised(deployment: KmsDeployment) -> None:
    """A secret whose value does not log in (here: a reader that returns a stale value):
    one re-read, then the refusal reaches the caller, and the loop counts it."""
    app = load_app()
    admin = kms_client(deployment.server)
    instance_id = deployment.instances[STAND_ALONE]
    (port,) = deployment.ports(instance_id)
    name, account = new_name(), new_name("acct")
    create_secret(admin, name, instance_id, account, DUAL_PASSWORD, config={"GracePeriod": "0s"})
    first = read_value(admin, name)
    rotate(admin, name, "v2")
    assert wait_for(lambda: refused_everywhere([port], first))
    stale = app.RedisCredentials(first.account, first.password, first.version_id)
    reads: list[int] = []

    def read_stale() -> Any:
        reads.append(1)
        return stale

    store = app.SecretBackedRedis(
        read_stale, "127.0.0.1", port, settle_attempts=3, settle_pause=0.01
    )
    try:
        stats = app.run_loop(store, iterations=1)
    finally:
        store.close()
    assert (stats.iterations, stats.failures, store.rereads) == (1, 1, 1)
    assert len(reads) == 1 + 1 + 3  # the first read, the re-read, and its bounded retries
