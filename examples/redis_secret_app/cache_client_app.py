"""The same application, reading its secret with aliyun-secret-manager-client.

That client caches the value (an hour by default) and refreshes it in the
background; on a refusal, ``refresh_now`` goes past the cache. It needs its own
virtualenv and HTTPS (see README.md). Configuration (environment), as the client
reads it:
  cache_client_region_id     '[{"regionId":"cn-hangzhou","endpoint":"127.0.0.1:8443"}]'
  credentials_type           ak
  credentials_access_key_id, credentials_access_secret
and SECRET_NAME, REDIS_HOST, REDIS_PORT and the options as for app.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from alibaba_cloud_secretsmanager_client.secret_manager_cache_client_builder import (
    SecretManagerCacheClientBuilder,
)
from app import RedisCredentials, SecretReadError, run_from_env


def cached_reader(client: Any, secret_name: str) -> Callable[[], RedisCredentials]:
    """The first read may come from the cache; every later one follows a refusal, so it
    refreshes first."""
    reads = 0

    def read() -> RedisCredentials:
        nonlocal reads
        if reads and not client.refresh_now(secret_name):
            raise SecretReadError(f"refresh of {secret_name} failed")
        reads += 1
        info = client.get_secret_info(secret_name)
        data = json.loads(info.secret_value)
        return RedisCredentials(data["AccountName"], data["AccountPassword"], info.version_id)

    return read


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    client = SecretManagerCacheClientBuilder.new_client()
    try:
        run_from_env(cached_reader(client, os.environ["SECRET_NAME"]), __doc__.splitlines()[0])
    finally:
        client.close()


if __name__ == "__main__":
    main()
