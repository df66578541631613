"""aliyun-secret-manager-client, unmodified, reads a Redis secret from rkvstore over HTTPS.

The client pins ``typing-extensions<=4.1.1``, which rkvstore's own dependencies
cannot live with, so it gets a virtualenv of its own, built once into the test
cache (``$RKVSTORE_TEST_CACHE`` or ``~/.cache/rkvstore-tests``) from PyPI. Its
legacy core speaks HTTPS only: the server gets the TLS listener. The example
application (``examples/redis_secret_app/cache_client_app.py``) runs in that
virtualenv through rotations with no grace, so every reconnect after a rotation
must go through ``refresh_now``: it ends with no failed iteration.
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alibabacloud_kms20160120 import models as kms_models

from rkvstore.client import RpcClient
from rkvstore.secret import Secret
from tests.api.instances import STAND_ALONE, start_creating, wait_normal
from tests.api.test_tls_listener import Pki, _tls_env, pki  # noqa: F401  (the fixture)
from tests.conftest import ARTIFACT_DIRS, LiveServer, start_server
from tests.kms.kms_helpers import DUAL_PASSWORD, create_secret, kms_client, new_name, rotate
from tests.redis5 import _cache, cache_lock

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "redis_secret_app"
PACKAGES = ("aliyun-secret-manager-client==0.1.5", "redis>=5")
LOOP = ("--iterations", "150", "--pause", "0.05", "--reconnect-every", "5")


def _client_venv() -> Path:
    """The virtualenv with the secrets client (built once; kept in the test cache)."""
    venv = _cache() / "secret-manager-client-0.1.5"
    python = venv / "bin" / "python"
    with cache_lock(venv.name):
        if not (venv / "ready").exists():  # else made meanwhile by another worker
            _make_client_venv(venv, python)
    return python


def _make_client_venv(venv: Path, python: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *PACKAGES],
        check=True,
        timeout=600,
        capture_output=True,
    )
    (venv / "ready").write_text("")


@pytest.fixture(scope="module")
def tls_kms_server(
    pki: Pki,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("kms-tls")
    ARTIFACT_DIRS.append(data_dir)
    env = {
        **_tls_env(pki),
        "RKVSTORE_RATE_LIMIT_PER_SECOND": "0",
        "RKVSTORE_KMS_MIN_ROTATION_INTERVAL": "1s",
    }
    server = start_server(data_dir, extra_env=env, ca=pki.ca)
    try:
        yield server
    finally:
        server.stop()


def test_the_caching_secrets_client_follows_rotations_over_https(
    tls_kms_server: LiveServer,
    pki: Pki,  # noqa: F811
) -> None:
    python = _client_venv()
    server = tls_kms_server
    verify = ssl.create_default_context(cafile=str(pki.ca))
    http = httpx.Client(timeout=30, verify=verify)
    key = Secret(server.access_key_secret)
    with RpcClient(server.url, server.access_key_id, key, http=http) as rpc:
        instance_id, port = start_creating(rpc, STAND_ALONE)
        wait_normal(rpc, instance_id)
        try:
            client = kms_client(server)
            name = new_name()
            create_secret(
                client,
                name,
                instance_id,
                new_name("cc"),
                DUAL_PASSWORD,
                config={"GracePeriod": "0s"},
            )
            region = f'[{{"regionId":"cn-hangzhou","endpoint":"{server.endpoint}"}}]'
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
                "cache_client_region_id": region,
                "credentials_type": "ak",
                "credentials_access_key_id": server.access_key_id,
                "credentials_access_secret": server.access_key_secret,
                "SECRET_NAME": name,
                "REDIS_PORT": str(port),
            }
            app = subprocess.Popen(
                [str(python), "-W", "ignore", "cache_client_app.py", *LOOP],
                cwd=EXAMPLE,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                time.sleep(2)  # it has read the secret and runs
                for n in range(3):
                    rotate(client, name, f"r{n}")
                    time.sleep(1)
                out, _ = app.communicate(timeout=120)
            finally:
                app.kill()
            assert app.returncode == 0, out
            found = re.search(r"(\d+) iterations, (\d+) failed, (\d+) re-reads", out)
            assert found is not None, out
            iterations, failed, rereads = (int(g) for g in found.groups())
            assert (iterations, failed) == (150, 0), out
            assert rereads >= 3, out  # each rotation refused the held password: refresh_now
            assert (
                client.describe_secret(
                    kms_models.DescribeSecretRequest(secret_name=name)
                ).body.secret_name
                == name
            )
        finally:
            rpc.call("DeleteInstance", {"InstanceId": instance_id})
